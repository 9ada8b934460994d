"""CoreJob: the base class of every core4 job.

A job is a class with an ``author`` and an ``execute(self, **kwargs)``
method::

    import core4.queue.job

    class MyJob(core4.queue.job.CoreJob):
        author = "mra"

        def execute(self, **kwargs):
            self.logger.info("hello world")
            self.progress(0.5, "half way")

Each property (see :data:`core4.queue.validate.PROPERTIES`) is resolved with
the precedence *enqueue keyword > configuration at the class's dotted path >
class attribute > ``job`` defaults of the configuration*. Keywords that are
not properties become ``args``, passed to :meth:`CoreJob.execute`. After
construction the properties are frozen.
"""

import hashlib
import json
import os
import time

from core4.base import project_of, qual_name
from core4.config import class_config, get_config
from core4.error import (CoreJobDeferred, CoreJobInvalid, Core4UsageError)
from core4.logger import get_logger
from core4.queue import secret, validate
from core4.queue.cookie import Cookie
from core4.queue.validate import EMPTY, PROPERTIES

#: fields of a job document that only the queue and the worker write
RUNTIME_FIELDS = (
    "_id", "state", "attempts_left", "trial", "enqueued", "started_at",
    "finished_at", "query_at", "runtime", "locked", "prog", "last_error",
    "zombie_at", "wall_at", "killed_at", "removed_at", "inactive_at",
    "first_started_at", "lost", "sources")


class CoreAbstractMixin:
    """Put this mixin directly in a job's bases to declare it abstract.

    An abstract job is a base for other jobs; it cannot be enqueued.
    """


def args_hash(args):
    """Return the hash identifying a job's arguments (order independent)."""
    text = json.dumps(args, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class CoreJob:
    """Base class of all jobs: subclass it, set ``author``, implement
    :meth:`execute`.

    Properties (class attribute, config and enqueue keyword unless noted):

    ``attempts`` (1) how often the job runs before it ends in ``error``;
    ``priority`` (0) higher runs first; ``force`` (False) runs first and
    ignores the worker's resource limits; ``defer_time`` (300 s) until a
    deferred job runs again; ``defer_max`` (3600 s) after the first start a
    deferring job becomes ``inactive``; ``error_time`` (600 s) until a failed
    job runs again; ``zombie_time`` (1800 s) without progress flags a running
    job as zombie; ``max_lost`` (3) how often the job may lose its worker
    (killed, stopped, cut off) before it ends in ``error``: a lost job runs
    again at once and does not use up one of its ``attempts``;
    ``wall_time`` (None) flags a job running longer as
    non-stop; ``max_parallel`` (15) running jobs of this name across all
    workers; ``worker`` (None) runs the job only on this worker;
    ``progress_interval`` (5 s) between progress updates; ``schedule``
    (None, class and config only, not inherited) cron expression;
    ``dependency`` and ``chain`` ([], not inherited) jobs to wait for and to
    enqueue afterwards; ``tag`` ([]) free labels.

    ``secrets`` (class attribute, not a property) names the arguments that
    are secret: stored encrypted, shown as ``***``, clear only in
    ``execute()`` (see :mod:`core4.queue.secret`); a value wrapped in
    :class:`~core4.queue.secret.Secret` at enqueue is secret, too.
    """

    author = None
    attempts = None
    chain = None
    defer_max = None
    defer_time = None
    dependency = None
    error_time = None
    force = None
    max_lost = None
    max_parallel = None
    priority = None
    progress_interval = None
    schedule = None
    secrets = None
    tag = None
    wall_time = None
    worker = None
    zombie_time = None

    def __init__(self, **kwargs):
        cls = type(self)
        name = cls.qual_name()
        config = get_config(project_of(name))
        own = class_config(config, name) or {}
        args = kwargs.pop("args", None) or {}
        if not isinstance(args, dict):
            raise CoreJobInvalid("%s: args must be a dict, got %r" % (
                name, args))
        args = dict(args)
        values = {}
        for prop_name, prop in PROPERTIES.items():
            value = config.job.get(prop_name, EMPTY.get(prop_name))
            declared = (_class_value(cls, prop_name) if prop.inherited
                        else cls.__dict__.get(prop_name))
            if cls is not CoreJob and validate.explicit_none(cls, prop_name):
                value = None  # as upstream: refused by validate()
            elif declared is not None:
                value = declared
            if prop.config and own.get(prop_name) is not None:
                value = own[prop_name]
            values[prop_name] = value
        for key, value in kwargs.items():
            prop = PROPERTIES.get(key)
            if prop is None:
                args[key] = value
            elif not prop.enqueue:
                raise CoreJobInvalid("%s: attribute %s cannot be set at "
                                     "enqueue" % (name, key))
            else:
                values[key] = value
        args, secret_names = secret.unwrap(name, args, cls.secrets)
        for prop_name, prop in PROPERTIES.items():
            if prop.sequence and isinstance(values[prop_name], (list, tuple)):
                values[prop_name] = list(values[prop_name])  # never shared
        self.__dict__.update(values)
        self.__dict__.update({field: None for field in RUNTIME_FIELDS})
        self.__dict__.update(args=args, trial=0, name=name,
                             prog={"value": None, "message": None},
                             secret_names=secret_names, sources=[])
        self.__dict__["_source"] = None
        self.__dict__["_progress_sink"] = None
        self.__dict__["_next_progress"] = 0.0
        self.__dict__["_frozen"] = True

    def __setattr__(self, key, value):
        if self.__dict__.get("_frozen") and (
                key in PROPERTIES or key in RUNTIME_FIELDS
                or key in ("args", "name", "secret_names")):
            raise Core4UsageError("job attribute %s is read-only after "
                                  "construction" % key)
        super().__setattr__(key, value)

    # identity ---------------------------------------------------------------

    @classmethod
    def qual_name(cls):
        """Return ``<module>.<Class>``, the name of this job in the queue."""
        return qual_name(cls)

    @classmethod
    def is_abstract(cls):
        """True if the class declares itself abstract (not enqueueable)."""
        return CoreAbstractMixin in cls.__bases__ or cls is CoreJob

    @property
    def project(self):
        """The project this job belongs to (first part of its name)."""
        return project_of(self.name)

    @property
    def identifier(self):
        """The job's ``_id`` once enqueued (logged with every record)."""
        return self._id

    @property
    def config(self):
        """The read-only configuration as this job sees it."""
        return get_config(self.project)

    @property
    def class_config(self):
        """The configuration at the job's dotted path (or None)."""
        return class_config(self.config, self.name)

    @property
    def logger(self):
        """A logger whose records carry the job's name and id."""
        logger = self.__dict__.get("_logger")
        if logger is None or logger.extra["identifier"] != str(
                self._id or ""):
            logger = get_logger(self.name, self._id)
            self.__dict__["_logger"] = logger
        return logger

    # the user's part --------------------------------------------------------

    def execute(self, **kwargs):
        """Do the job's work; ``kwargs`` are the job's ``args``."""
        raise NotImplementedError("%s must implement execute()" % self.name)

    def validate(self):
        """Raise :class:`CoreJobInvalid` naming the first bad attribute."""
        cls = type(self)
        author = cls.__dict__.get("author")
        if not (isinstance(author, str) and author.strip()):
            raise CoreJobInvalid(
                "%s: attribute author must be set to a non-empty string on "
                "the class itself" % self.name)
        if cls.execute is CoreJob.execute:
            raise CoreJobInvalid("%s: method execute() is not implemented"
                                 % self.name)
        for prop_name in PROPERTIES:
            validate.check_property(self.name, prop_name,
                                    getattr(self, prop_name))
        validate.check_args(self.name, self.args)

    def progress(self, p, message=None, *args, force=False):
        """Report progress ``p`` (0.0 to 1.0) with an optional message.

        Updates are throttled to one per ``progress_interval`` seconds unless
        ``force`` is true; each update also renews the job's heartbeat.
        """
        value = min(max(float(p), 0.0), 1.0)
        message = _format(message, args)
        now = time.monotonic()
        if not force and now < self._next_progress:
            return False
        self.__dict__["_next_progress"] = now + self.progress_interval
        self.__dict__["prog"] = {"value": value, "message": message}
        self.logger.debug("progress [%d%%]%s", round(value * 100),
                          " - %s" % message if message else "")
        if self._progress_sink is not None:
            self._progress_sink(value, message)
        return True

    def defer(self, message=None, *args):
        """Stop now and run again after ``defer_time`` seconds.

        ``message`` is formatted with ``args`` like a log call
        (``self.defer("waiting for file [%s]", name)``); it becomes the
        job's ``last_error`` and is logged.
        """
        raise CoreJobDeferred(_format(message, args) or "deferred")

    # sources and cookie -----------------------------------------------------

    def set_source(self, source):
        """Name the file (or other source) the job works on now.

        The base name of ``source`` becomes :meth:`get_source`; the
        documents the job writes to its project's collections carry it as
        ``_src`` (see :mod:`core4.queue.stamp`), and it is added to the
        ``sources`` of the job's document (once). A change is logged.
        """
        name = os.path.basename(os.fspath(source).rstrip("/\\"))
        if not name:
            raise Core4UsageError("set_source needs a file name, got %r"
                                  % (source,))
        if name != self._source:
            self.logger.info("set source [%s]", name)
            self.__dict__["_source"] = name
        if name in self.sources:
            return
        self.__dict__["sources"] = list(self.sources) + [name]
        if self._id is not None:
            queue = self.config.sys.queue
            queue.update_one({"_id": self._id},
                             {"$set": {"sources": self.sources}})

    def get_source(self):
        """The base name last given to :meth:`set_source`, or None."""
        return self._source

    @property
    def cookie(self):
        """The job class's :class:`~core4.queue.cookie.Cookie`: values in
        ``sys_cookie`` shared by all runs of this job on all workers."""
        cookie = self.__dict__.get("_cookie")
        if cookie is None:
            cookie = self.__dict__["_cookie"] = Cookie(self.name, self.config)
        return cookie

    # storage ----------------------------------------------------------------

    @property
    def args_hash(self):
        """Hash of the job's args: name + hash are unique in the queue
        (a secret enters as its keyed HMAC)."""
        if not self.secret_names:
            return args_hash(self.args)
        return args_hash(secret.hash_args(self.args, self.secret_names,
                                          self.config))

    def serialise(self):
        """Return the job's document for ``sys_queue`` (no ``_id`` if None):
        secret arguments as ``***`` in ``args``, encrypted in
        ``secret_args``."""
        args, hashed = self.args, self.args
        doc = {"name": self.name, "project": self.project}
        if self.secret_names:
            args, doc[secret.FIELD], hashed = secret.seal(
                self.args, self.secret_names, self.config)
        doc.update(args=args, _hash=args_hash(hashed))
        for prop_name, prop in PROPERTIES.items():
            # None is not stored: filters test presence with $exists
            if prop.stored and getattr(self, prop_name) is not None:
                doc[prop_name] = getattr(self, prop_name)
        for field in RUNTIME_FIELDS:
            value = getattr(self, field)
            if value is not None:
                doc[field] = value
        return doc

    @classmethod
    def deserialise(cls, doc):
        """Rebuild a job object from its stored document; secret
        arguments are decrypted (:class:`~core4.queue.secret.CoreSecretError`
        if that fails)."""
        kwargs = {key: doc[key] for key, prop in PROPERTIES.items()
                  if prop.stored and key in doc}
        if "force" in kwargs:
            kwargs["force"] = bool(kwargs["force"])
        args = doc.get("args") or {}
        if doc.get(secret.FIELD):
            args = secret.reveal(doc, get_config(project_of(cls.qual_name())))
        job = cls(args=args, **kwargs)
        job.__dict__.update({field: doc.get(field) for field in RUNTIME_FIELDS
                             if field in doc})
        return job

    def bind_progress(self, sink):
        """Route progress updates to ``sink(value, message)`` (the runner)."""
        self.__dict__["_progress_sink"] = sink

    def __repr__(self):
        return "<%s %s>" % (self.name, self._id or "(not enqueued)")


def _format(message, args):
    """``message % args`` like a log call (joined with blanks if that
    fails); ``message`` unchanged without ``args``."""
    if message is None or not args:
        return message
    try:
        return message % args
    except (TypeError, ValueError):
        return " ".join(str(part) for part in (message,) + tuple(args))


def _class_value(cls, name):
    """Return the first non-None class attribute ``name`` below CoreJob."""
    for klass in cls.__mro__:
        if klass is CoreJob:
            break
        value = klass.__dict__.get(name)
        if value is not None:
            return value
    return None
