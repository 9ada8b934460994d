"""Portable MongoDB idioms: what works the same on NX-27017, SecantusDB and
a real MongoDB replica set.

The embedded NX-27017 server has gaps (see ``shared/README.md``); each is
handled here, and ``tests/test_mongo_compat.py`` shows the raw gap so we
notice when it is fixed:

* ``$set`` of a datetime stored a string, and datetime comparisons dropped
  the fraction of a second: fixed inside the server process core4 starts
  (:mod:`core4.mongo.nxpatch`). core4 stores every time as a BSON datetime
  (UTC, milliseconds, read back tz-aware), see :func:`now`.
* equality on an ObjectId field other than ``_id`` matches nothing: use
  :func:`id_in`.
* null and missing are mixed up: core4 never filters on ``None``; it removes
  fields with ``$unset`` and tests them with ``$exists``.
* ``$set`` of ``True`` may come back as ``1``: read booleans with ``bool()``.
* indexes lose their names and directions: find them by key, see
  :func:`find_index` and :func:`ensure_index`; an index whose keys include
  ``_id`` makes every later insert fail, so core4 never creates one.
* ``$or`` is evaluated slowly and ``$not`` is not implemented: claims use
  ``{"field": {"$in": [None, value]}}`` (matches missing or value) instead.
* ``$addToSet`` on a missing array of an existing document does nothing:
  create the array first.
* replacing an existing document that holds binary (``bytes``) values
  fails ("not JSON serializable"): delete and insert it instead.
* ``count_documents`` and a ``$group`` on a compound ``_id`` read every
  document slowly (0.6 s for 10,000): :func:`count` uses ``$match`` +
  ``$count`` and :func:`count_by` groups on one ``$concat`` key.
* an aggregation's ``$match`` compares datetimes wrongly (``$lt`` matches
  nothing, ``$gt`` everything): :func:`count` and :func:`count_by` filter
  with ``find`` when the query holds a datetime.
"""

import datetime

from bson import ObjectId

UTC = datetime.timezone.utc


def now():
    """Return the current time as stored: an aware UTC datetime, truncated
    to milliseconds (BSON's precision, so a stored time reads back equal)."""
    at = datetime.datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def seconds(value):
    """Return ``value`` seconds (int or float) as a :class:`timedelta`."""
    return datetime.timedelta(seconds=float(value))


def elapsed(since, until=None):
    """Return the seconds (float) from the datetime ``since`` to ``until``
    (default: now)."""
    return ((until or now()) - to_datetime(since)).total_seconds()


def to_datetime(value):
    """Return ``value`` as an aware UTC datetime: a datetime (naive = UTC),
    or epoch seconds as stored before core4 0.3 (int or float); None stays
    None."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.datetime.fromtimestamp(float(value), tz=UTC)


def from_datetime(value):
    """Return a datetime (naive = UTC) as stored: aware UTC, milliseconds;
    epoch seconds (int or float) are converted too."""
    if value is None:
        return None
    value = to_datetime(value).astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def id_in(*values):
    """Filter value matching any of the ObjectIds on a field other than _id."""
    return {"$in": [ObjectId(v) if isinstance(v, str) else v
                    for v in values]}


def _key_fields(keys):
    if isinstance(keys, str):
        return (keys,)
    return tuple(k if isinstance(k, str) else k[0] for k in keys)


def find_index(collection, keys):
    """Return the name of the index on exactly these fields, or None.

    Indexes are matched by their fields in order; names and directions are
    not compared because NX-27017 changes both.
    """
    wanted = _key_fields(keys)
    for name, info in collection.index_information().items():
        if tuple(k for k, _ in info["key"]) == wanted:
            return name
    return None


def ensure_index(collection, keys, **options):
    """Create the index on ``keys`` unless an index on these fields exists."""
    if find_index(collection, keys) is None:
        collection.create_index(keys, **options)


def contains_datetime(value):
    """True if ``value`` is or holds (in dicts and lists) a datetime."""
    if isinstance(value, datetime.datetime):
        return True
    if isinstance(value, dict):
        return any(contains_datetime(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_datetime(item) for item in value)
    return False


def contains_objectid(value):
    """True if ``value`` is or holds (in dicts and lists) an ObjectId."""
    if isinstance(value, ObjectId):
        return True
    if isinstance(value, dict):
        return any(contains_objectid(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_objectid(item) for item in value)
    return False


def count(collection, query=None):
    """Return the number of documents matching ``query`` (``$match`` +
    ``$count``: as exact as ``count_documents``, fast on NX-27017; a query
    with a datetime is counted with ``count_documents``, one with an
    ObjectId by reading the matching ids: NX-27017 aggregations cannot
    bind either)."""
    if contains_objectid(query):
        return sum(1 for _ in collection.find(query, {"_id": 1}))
    if contains_datetime(query):
        return collection.count_documents(query)
    result = list(collection.aggregate([{"$match": query or {}},
                                        {"$count": "n"}]))
    return result[0]["n"] if result else 0


def count_by(collection, fields, query=None, separator="|"):
    """Return ``{(value, ...): n}`` of the documents matching ``query``
    grouped by the string ``fields`` (which must not contain
    ``separator``); documents missing a field count under ``""``."""
    if contains_datetime(query):
        found = {}
        for doc in collection.find(query, dict.fromkeys(fields, 1)):
            value = tuple(str(doc.get(f, "") if doc.get(f) is not None
                              else "") for f in fields)
            found[value] = found.get(value, 0) + 1
        return found
    key = []
    for field in fields:
        if key:
            key.append(separator)
        key.append({"$ifNull": ["$" + field, ""]})
    pipeline = [{"$match": query or {}},
                {"$project": {"k": {"$concat": key}}},
                {"$group": {"_id": "$k", "n": {"$sum": 1}}}]
    return {tuple(doc["_id"].split(separator, len(fields) - 1)): doc["n"]
            for doc in collection.aggregate(pipeline)}
