"""The ``!connect`` configuration value: where a MongoDB collection lives.

In YAML::

    queue: !connect mongodb://sys_queue                  # collection only
    data: !connect mongodb://mydb/mycoll                  # database/collection
    other: !connect mongodb://user:pwd@host:27017/db/coll # full address

A tag without host inherits ``mongo_url``, one without database inherits
``mongo_database`` from the dict containing it (see :meth:`Connect.resolve`).

A resolved value is also the collection itself: every method and attribute
of :class:`pymongo.collection.Collection` works on it and connects on first
use (``config.mypro.sales.insert_one({...})``,
``config.sys.log.find()``). Only ``url``, ``database`` and ``collection``
are the names from the configuration, as in the original core4;
:meth:`Connect.connect` returns the pymongo collection itself. Inside a
running job, writes to collections outside ``sys`` are stamped with the
job's ``_id`` and source (see :mod:`core4.queue.stamp`).
"""

import os

from core4.error import Core4ConfigurationError

#: scheme every ``!connect`` value must start with
SCHEME = "mongodb://"

#: port added to a host named without one
DEFAULT_PORT = 27017

#: the top-level configuration section of core4's own collections
SYSTEM_SECTION = "sys"

#: pymongo collections opened in this process, by address and process id
_OPENED = {}

#: ``hook(connect, collection)`` returning the collection attribute access
#: goes to (installed by :func:`core4.queue.stamp.running`), or None
_collection_hook = None


def set_collection_hook(hook):
    """Install ``hook(connect, collection)`` (None removes it): it returns
    the collection that attribute access on a :class:`Connect` uses, e.g.
    one that stamps the documents a running job writes."""
    global _collection_hook
    _collection_hook = hook


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
    embedded server"), ``database`` and ``collection`` are names, ``path``
    the dotted configuration key it was read from (e.g. ``sys.queue``; not
    part of equality). A value parsed from YAML may lack ``url`` and
    ``database`` until it is resolved against the configuration with
    :meth:`resolve`.

    Any other attribute is looked up on the pymongo collection, which is
    opened on first use (see :meth:`connect`): a Connect read from the
    configuration is used like a :class:`pymongo.collection.Collection`.
    """

    __slots__ = ("url", "database", "collection", "path")

    def __init__(self, url=None, database=None, collection=None, path=None):
        if not collection:
            raise Core4ConfigurationError("!connect needs a collection name")
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "database", database)
        object.__setattr__(self, "collection", collection)
        object.__setattr__(self, "path", path)

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

    def resolve(self, mongo_url, mongo_database, path=None):
        """Return a Connect with the missing url/database filled in (and
        ``path``, the configuration key, if given).

        Raises :class:`Core4ConfigurationError` if no database is known.
        """
        database = self.database or mongo_database
        if not database:
            raise Core4ConfigurationError(
                "%r has no database and mongo_database is not set" % self)
        url = self.url if self.url is not None else mongo_url
        path = path or self.path
        if (url, database, path) == (self.url, self.database, self.path):
            return self
        return Connect(url=url, database=database, collection=self.collection,
                       path=path)

    def is_system(self):
        """True if read from core4's own ``sys`` section."""
        return (self.path or "").split(".", 1)[0] == SYSTEM_SECTION

    def connect(self):
        """Return the :class:`pymongo.collection.Collection` (this process'
        client, connected on first use; never stamped)."""
        key = (self._key(), os.getpid())
        opened = _OPENED.get(key)
        if opened is None:
            if not self.database:
                raise Core4ConfigurationError(
                    "%r is not resolved: read it from the configuration"
                    % self)
            from core4.config import get_config
            from core4.mongo import collection
            opened = _OPENED[key] = collection(self, get_config())
        return opened

    def _target(self):
        opened = self.connect()
        hook = _collection_hook
        return opened if hook is None else hook(self, opened)

    def __getattr__(self, name):
        # only called for names that are not slots or methods of Connect;
        # private names never connect (copy, pickle and IPython probe them)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __getitem__(self, name):
        """The sub-collection ``<collection>.<name>``, as in pymongo."""
        return self.connect()[name]

    def __iter__(self):
        raise TypeError("a collection is not iterable: use find()")

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
        return (Connect, self._key() + (self.path,))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
