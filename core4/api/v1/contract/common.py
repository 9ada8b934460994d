"""What every resource of the API shares: ids, times, paging parameters,
the envelope of every answer and the error envelope."""

from core4.api.schema import Param

ID = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
#: a date and time sent by a client (ISO 8601)
DATETIME = {"type": "string", "format": "date-time"}
#: a date and time answered (ISO 8601), or null
TIME = {"type": "string", "nullable": True}
STRING = {"type": "string"}
NULLABLE_STRING = {"type": "string", "nullable": True}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
#: any JSON object
OBJECT = {"type": "object", "additionalProperties": True}
#: counts per name
COUNTS = {"type": "object", "additionalProperties": INTEGER}

PAGE = Param("page", {"type": "integer", "minimum": 0},
             "page number, from 0", default=0,
             messages={"minimum": "page must be 0 or more"})
PER_PAGE = Param(
    "per_page", {"type": "integer", "minimum": 1,
                 "maximum": lambda config: int(config.api.max_per_page)},
    "entries per page (at most api.max_per_page)",
    default=lambda config: int(config.api.per_page),
    messages=dict.fromkeys(("minimum", "maximum"),
                           "per_page must be 1 to %(maximum)d"))

#: the paging fields of a page of a listing
PAGING = {"page": INTEGER, "per_page": INTEGER, "page_count": INTEGER,
          "total_count": INTEGER, "count": INTEGER}


def envelope(data, paging=False):
    """The schema of an answer: the envelope ``{_id, timestamp, code,
    message, data}`` with ``data`` as given (and, for a page, its
    paging fields)."""
    properties = {"_id": ID, "timestamp": STRING, "code": INTEGER,
                  "message": NULLABLE_STRING, "data": data}
    required = ["_id", "timestamp", "code", "message", "data"]
    if paging:
        properties.update(PAGING)
        required += list(PAGING)
    return {"type": "object", "properties": properties,
            "required": required}


SCHEMAS = {
    "Error": {
        "type": "object", "description": "the envelope of every error: "
        "``message`` says what is wrong in one line; for bad input "
        "``data.field`` names the argument or body field",
        "required": ["_id", "timestamp", "code", "message", "data"],
        "properties": {
            "_id": ID, "timestamp": STRING, "code": INTEGER,
            "message": NULLABLE_STRING,
            "data": {"type": "object", "nullable": True,
                     "additionalProperties": True,
                     "properties": {"field": STRING}}}},
}

OPERATIONS = {}
