"""The one JSON envelope of every core4 API response, success or error:
``{_id, timestamp, code, message, data}`` plus paging fields for pages."""

import datetime
import json

from bson import ObjectId

PAGING = ("page", "per_page", "page_count", "total_count", "count")


def _default(value):
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def dumps(value):
    """Serialise ``value`` to JSON (ids and datetimes as strings)."""
    return json.dumps(value, default=_default, allow_nan=False)


def envelope(request_id, code, message, data=None, **paging):
    """Return the envelope dict of one response."""
    body = {"_id": request_id,
            "timestamp": datetime.datetime.now(
                datetime.timezone.utc).isoformat(),
            "code": code, "message": message, "data": data}
    body.update({key: paging[key] for key in PAGING if key in paging})
    return body
