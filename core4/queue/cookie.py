"""The job cookie: key/values per job class, kept in ``sys_cookie``.

Every run of a job, on any worker, sees the same cookie (one document
whose ``_id`` is the job's qualified name)::

    def execute(self, **kwargs):
        since = self.cookie.get("offset", 0)
        ...
        self.cookie.set("offset", since + loaded)
        self.cookie.inc("runs")

Each operation is one atomic update on the server, so concurrent runs do
not lose each other's ``inc``, ``dec``, ``max`` or ``min``. After every
successful run the worker records ``last_runtime`` (when the run ended) in
the job's cookie (:func:`record_runtime`).
"""

import pymongo

from core4.error import Core4UsageError
from core4.mongo import collection, to_datetime

#: the key the worker sets after each successful run
LAST_RUNTIME = "last_runtime"


def _check_key(key):
    if not isinstance(key, str) or not key or key == "_id" \
            or key.startswith("$") or "." in key or "\0" in key:
        raise Core4UsageError(
            "cookie key %r must be a non-empty string without '.', not "
            "starting with '$' and not '_id'" % (key,))
    return key


class Cookie:
    """The cookie of the job class ``name``: see the module documentation.

    ``config`` is the configuration whose ``sys.cookie`` holds it.
    """

    def __init__(self, name, config):
        self.name = name
        self.config = config
        self._collection = None

    @property
    def collection(self):
        """The pymongo collection ``sys.cookie``."""
        if self._collection is None:
            self._collection = collection(self.config.sys.cookie, self.config)
        return self._collection

    def _update(self, update):
        self.collection.update_one({"_id": self.name}, update, upsert=True)

    def set(self, *args, **values):
        """``set(key, value)`` or ``set(key1=value1, key2=value2, ...)``."""
        if args:
            if len(args) != 2 or values:
                raise Core4UsageError(
                    "use cookie.set(key, value) or cookie.set(key=value, ...)")
            values = {args[0]: args[1]}
        if not values:
            return
        self._update({"$set": {_check_key(key): value
                               for key, value in values.items()}})

    def get(self, key, default=None):
        """The value of ``key``, or ``default`` if it is not set."""
        doc = self.collection.find_one({"_id": self.name},
                                       {_check_key(key): 1})
        if doc is None or key not in doc:
            return default
        return doc[key]

    def inc(self, key, value=1):
        """Add ``value`` to ``key`` (a missing key counts as 0)."""
        self._update({"$inc": {_check_key(key): value}})

    def dec(self, key, value=1):
        """Subtract ``value`` from ``key`` (a missing key counts as 0)."""
        self.inc(key, -value)

    def max(self, key, value):
        """Set ``key`` to ``value`` if that is greater (or ``key`` is not
        set)."""
        self._update({"$max": {_check_key(key): value}})

    def min(self, key, value):
        """Set ``key`` to ``value`` if that is less (or ``key`` is not
        set)."""
        self._update({"$min": {_check_key(key): value}})

    def delete(self, key):
        """Remove ``key``; True if it was set."""
        result = self.collection.update_one(
            {"_id": self.name, _check_key(key): {"$exists": True}},
            {"$unset": {key: ""}})
        return result.modified_count > 0

    def has_key(self, key):
        """True if ``key`` is set."""
        return self.collection.find_one(
            {"_id": self.name, _check_key(key): {"$exists": True}},
            {"_id": 1}) is not None

    def __repr__(self):
        return "<Cookie %s>" % self.name


def record_runtime(cookies, docs):
    """Record ``last_runtime`` (the ``finished_at`` of each document) in
    the cookies of the complete jobs ``docs``, one bulk write on the
    pymongo collection ``cookies`` (``sys_cookie``). A later run never
    moves it back (``$max``). Returns the number of cookies written."""
    requests = []
    for doc in docs:
        if doc is None or doc.get("state") != "complete":
            continue
        at = to_datetime(doc.get("finished_at"))
        if at is None:
            continue
        requests.append(pymongo.UpdateOne(
            {"_id": doc["name"]}, {"$max": {LAST_RUNTIME: at}},
            upsert=True))
    if requests:
        cookies.bulk_write(requests, ordered=False)
    return len(requests)
