"""The ``!connect`` configuration value: where a MongoDB collection lives.

In YAML::

    queue: !connect mongodb://sys_queue                  # collection only
    data: !connect mongodb://mydb/mycoll                  # database/collection
    other: !connect mongodb://user:pwd@host:27017/db/coll # full address

A tag without host inherits ``mongo_url``, one without database inherits
``mongo_database`` from the dict containing it (see :meth:`Connect.resolve`).
"""

from core4.error import Core4ConfigurationError

#: scheme every ``!connect`` value must start with
SCHEME = "mongodb://"

#: port added to a host named without one
DEFAULT_PORT = 27017


def _host_url(netloc):
    """Return ``mongodb://<netloc>/``, adding the default port if none."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):  # IPv6 literal: [::1] or [::1]:27017
        has_port = "]:" in host
    else:
        has_port = ":" in host
    if not has_port:
        netloc = "%s:%d" % (netloc, DEFAULT_PORT)
    return "%s%s/" % (SCHEME, netloc)


class Connect:
    """An immutable reference to a MongoDB collection.

    ``url`` is a ``mongodb://host:port/`` url or None (None means "use the
    embedded server"), ``database`` and ``collection`` are names. A value
    parsed from YAML may lack ``url`` and ``database`` until it is resolved
    against the configuration with :meth:`resolve`.
    """

    __slots__ = ("url", "database", "collection")

    def __init__(self, url=None, database=None, collection=None):
        if not collection:
            raise Core4ConfigurationError("!connect needs a collection name")
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "database", database)
        object.__setattr__(self, "collection", collection)

    @classmethod
    def parse(cls, spec):
        """Return the (unresolved) Connect for a ``!connect`` tag's text.

        ``mongodb://coll``, ``mongodb://db/coll`` and
        ``mongodb://[user:pwd@]host[:port]/db/coll`` are accepted;
        anything else raises :class:`Core4ConfigurationError`.
        """
        text = str(spec).strip()
        if not text.startswith(SCHEME):
            raise Core4ConfigurationError(
                "!connect %r must start with %s" % (text, SCHEME))
        parts = text[len(SCHEME):].split("/")
        if len(parts) > 3 or not all(parts):
            raise Core4ConfigurationError(
                "!connect %r must be %s[host[:port]/][database/]collection"
                % (text, SCHEME))
        if len(parts) == 1:
            return cls(collection=parts[0])
        if len(parts) == 2:
            return cls(database=parts[0], collection=parts[1])
        return cls(url=_host_url(parts[0]), database=parts[1],
                   collection=parts[2])

    def resolve(self, mongo_url, mongo_database):
        """Return a Connect with the missing url/database filled in.

        Raises :class:`Core4ConfigurationError` if no database is known.
        """
        database = self.database or mongo_database
        if not database:
            raise Core4ConfigurationError(
                "%r has no database and mongo_database is not set" % self)
        url = self.url if self.url is not None else mongo_url
        if url == self.url and database == self.database:
            return self
        return Connect(url=url, database=database, collection=self.collection)

    def __setattr__(self, key, value):
        raise Core4ConfigurationError("configuration is read-only")

    def __delattr__(self, key):
        raise Core4ConfigurationError("configuration is read-only")

    def _key(self):
        return (self.url, self.database, self.collection)

    def __eq__(self, other):
        if not isinstance(other, Connect):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Connect(url=%r, database=%r, collection=%r)" % self._key()

    def __reduce__(self):
        return (Connect, self._key())

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
