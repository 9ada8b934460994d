"""Secret job arguments: encrypted at rest, shown as ``"***"``, clear only
in the job process.

An argument is secret if the job class names it in ``secrets`` or the
caller wraps its value at enqueue::

    class Train(CoreJob):
        author = "mra"
        secrets = ["wandb_api_key"]

    queue.enqueue(Train, wandb_api_key=key)             # secret by class
    queue.enqueue(Other, token=Secret(key))             # secret by value
    POST /job {"args": {"token": {"$secret": "..."}}}   # the same in JSON

A secret value must be a string. The stored job document carries ``"***"``
in ``args`` and the Fernet token (authenticated encryption,
``cryptography``) in ``secret_args``; the queue's uniqueness hash covers a
keyed HMAC-SHA256 of the clear value. :meth:`CoreJob.deserialise` in the job
process decrypts, ``execute()`` gets the clear string, and
:func:`masking` replaces it by ``"***"`` in the job's log records, output,
progress messages and error documents.

Encryption keys, first match encrypts, all of them decrypt:

1. ``CORE4_JOB_SECRET_KEY``: Fernet keys, comma separated, the first one
   encrypts;
2. the configuration key ``job.secret_key`` (a key or a list of keys);
3. the secrets file of the core4 home (:mod:`core4.private`, 0600, entry
   ``job_keys``), generated at first use.

The HMAC key of the hash comes from ``CORE4_JOB_HASH_KEY`` (64 hex digits)
or the secrets file (``job_hash_key``, generated) and is never rotated (the
hash is the identity of a queued job): hosts that enqueue into one queue
need the same one. Keys that an older core4 kept in ``sys_secret``
(document ``job_keys``) are moved into the secrets file and deleted from
the database at first use (:func:`move_out_of_database`).
:func:`rotate_key` (``coco --rotate-key``) re-encrypts every secret in
``sys_queue`` and ``sys_journal``.
"""

import contextlib
import hmac
import logging
import sys
import traceback

from core4.error import Core4Error, CoreJobInvalid
from core4.queue.secretkeys import (  # noqa: F401 - the keys' API, here too
    FILE_HASH_KEY, FILE_KEYS, FILE_SOURCE, HASH_KEY_ENV, KEY_DOC, KEY_ENV,
    KeyRing, configured_hash_key, configured_keys, generate_key, keyring,
    move_out_of_database, set_stored_keys, stored_keys)

#: how secret values are shown
MASK = "***"
#: the field of a job document that holds ``{argument: Fernet token}``
FIELD = "secret_args"
#: the JSON form of :class:`Secret`: ``{"$secret": "value"}``
WRAPPER = "$secret"
#: shorter values are not searched for in logs and output (a secret of one
#: character would garble every record)
MIN_MASK = 4
#: nesting searched for misplaced :class:`Secret` values
_MAX_DEPTH = 100


class CoreSecretError(Core4Error):
    """A secret argument cannot be decrypted (wrong, missing or rotated
    key); the job ends in ``error`` with this message."""


class Secret:
    """A secret argument value, like pydantic's ``SecretStr``:
    ``str()`` and ``repr()`` show ``***``, :meth:`get_secret_value` returns
    the string. Only top-level job arguments can be secret."""

    __slots__ = ("_value",)

    def __init__(self, value):
        if isinstance(value, Secret):
            value = value.get_secret_value()
        if not isinstance(value, str):
            raise CoreJobInvalid("Secret() takes a string, got %s" %
                                 type(value).__name__)
        self._value = value

    def get_secret_value(self):
        """Return the clear string."""
        return self._value

    def __str__(self):
        return MASK

    def __repr__(self):
        return "Secret('%s')" % MASK

    def __eq__(self, other):
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self):
        return hash((Secret, self._value))


def portable(kwargs):
    """``kwargs`` with each top-level :class:`Secret` as its JSON form
    ``{"$secret": value}`` (to hand them to another process)."""
    return {key: {WRAPPER: value.get_secret_value()}
            if isinstance(value, Secret) else value
            for key, value in kwargs.items()}


# arguments ------------------------------------------------------------------

def _wrapped(value):
    """The clear value of a :class:`Secret` or ``{"$secret": v}``, else
    None."""
    if isinstance(value, Secret):
        return value
    if isinstance(value, dict) and WRAPPER in value:
        return value
    return None


def _nested_secret(value, depth=0):
    """True if a Secret or ``{"$secret": ...}`` hides below the top level."""
    if depth > _MAX_DEPTH:
        return False
    if _wrapped(value) is not None:
        return True
    if isinstance(value, dict):
        return any(_nested_secret(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_nested_secret(v, depth + 1) for v in value)
    return False


def check_declared(qual_name, declared):
    """Return the class attribute ``secrets`` as a frozenset, or raise
    :class:`CoreJobInvalid` unless it is a list of argument names."""
    if declared is None:
        return frozenset()
    if isinstance(declared, str) or not isinstance(
            declared, (list, tuple, set, frozenset)) or not all(
                isinstance(name, str) and name for name in declared):
        raise CoreJobInvalid("%s: secrets must be a list of argument "
                             "names, got %r" % (qual_name, declared))
    return frozenset(declared)


def unwrap(qual_name, args, declared=None):
    """Return ``(clear args, secret names)``: wrapped values unwrapped,
    names declared by the class (``declared``) or wrapped by the caller.

    A declared argument given as None is not secret (nothing to hide).
    Raises :class:`CoreJobInvalid` for a secret that is not a string or a
    wrapper below the top level; the message never shows the value.
    """
    declared = check_declared(qual_name, declared)
    clear, names = {}, set()
    for key, value in args.items():
        wrapper = _wrapped(value)
        if isinstance(wrapper, Secret):
            value = wrapper.get_secret_value()
        elif wrapper is not None:
            if len(wrapper) != 1:
                raise CoreJobInvalid(
                    "%s: argument %r: {\"$secret\": value} takes no other "
                    "keys" % (qual_name, key))
            value = wrapper[WRAPPER]
        if wrapper is not None or (key in declared and value is not None):
            names.add(key)
            if not isinstance(value, str):
                raise CoreJobInvalid(
                    "%s: secret argument %r must be a string, got %s" % (
                        qual_name, key, type(value).__name__))
        elif _nested_secret(value):
            raise CoreJobInvalid(
                "%s: argument %r: only top-level arguments can be secret"
                % (qual_name, key))
        clear[key] = value
    return clear, frozenset(names)


def masked(args, names):
    """Return ``args`` with the values of ``names`` shown as ``***``."""
    return {key: MASK if key in names else value
            for key, value in args.items()}


def mask_document(doc):
    """Return the job document ``doc`` as it may be shown: secret arguments
    and their tokens as ``***`` (``doc`` itself if it has none)."""
    sealed = doc.get(FIELD) if isinstance(doc, dict) else None
    if not sealed:
        return doc
    doc = dict(doc)
    args = dict(doc.get("args") or {})
    for key in sealed:
        args[key] = MASK
    doc["args"] = args
    doc[FIELD] = {key: MASK for key in sealed}
    return doc


# sealing and revealing ------------------------------------------------------

def _hash_value(ring, value):
    return "hmac-sha256:" + ring.digest(value)


def hash_args(args, names, config=None, ring=None):
    """Return ``args`` as the uniqueness hash covers them: each secret
    replaced by its keyed HMAC."""
    ring = ring or keyring(config)
    return {key: _hash_value(ring, value) if key in names else value
            for key, value in args.items()}


def seal(args, names, config=None):
    """Return ``(stored args, {name: token}, hashed args)`` of the clear
    ``args``: what the job document stores in ``args`` and :data:`FIELD`,
    and what its ``_hash`` is computed from."""
    ring = keyring(config)
    stored, sealed = masked(args, names), {}
    for key in sorted(names):
        if key in args:
            sealed[key] = ring.encrypt(args[key])
    return stored, sealed, hash_args(args, names, ring=ring)


def seal_args(qual_name, args, declared=None, config=None):
    """Return the fields ``{"args", "secret_args", "_hash"}`` that a job
    document stores for the ``args`` (clear or wrapped) of the job
    ``qual_name`` whose class declares the secrets ``declared``: for code
    that builds a job document without the job's class (e.g. from the
    ``sys_job`` registry). The same as :meth:`CoreJob.serialise` stores."""
    from core4.queue.job import args_hash
    clear, names = unwrap(qual_name, args, declared)
    if not names:
        return {"args": clear, "_hash": args_hash(clear)}
    stored, sealed, hashed = seal(clear, names, config)
    return {"args": stored, FIELD: sealed, "_hash": args_hash(hashed)}


def reveal(doc, config=None):
    """Return the ``args`` of the stored job document ``doc`` with each
    secret decrypted (as :class:`Secret`). Raises :class:`CoreSecretError`
    with a clear message if a key is missing or wrong."""
    args = dict(doc.get("args") or {})
    sealed = doc.get(FIELD)
    if not sealed:
        return args
    name = doc.get("name", "?")
    if not isinstance(sealed, dict):
        raise CoreSecretError("job %s: secret_args is not a document" % name)
    ring = keyring(config, create=False)
    if not ring.keys:
        raise CoreSecretError(
            "job %s: cannot decrypt secret argument(s) %s: no key here "
            "(neither %s nor job.secret_key is set and the secrets file "
            "has no key)" % (name, ", ".join(sorted(sealed)), KEY_ENV))
    for key, token in sealed.items():
        try:
            args[key] = Secret(ring.decrypt(token))
        except (ring.invalid, AttributeError, TypeError, ValueError):
            raise CoreSecretError(
                "job %s: cannot decrypt secret argument %r: it was "
                "encrypted with a key not known here (wrong or missing %s "
                "or job.secret_key, or a key rotated away; keys from %s)"
                % (name, key, KEY_ENV, ring.source)) from None
    return args


# masking in the job process ---------------------------------------------------

def redact(value, secrets):
    """Return ``value`` (str, dict, list) with each of ``secrets`` replaced
    by ``***``."""
    if isinstance(value, str):
        for text in secrets:
            if text in value:
                value = value.replace(text, MASK)
        return value
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets) for item in value]
    return value


class _RedactFilter(logging.Filter):
    """Rewrites log records that contain a secret."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = secrets

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - the handler reports it
            return True
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        info = record.exc_info
        if isinstance(info, tuple) and info[0] is not None:
            text = "".join(traceback.format_exception(*info))
            clean = redact(text, self.secrets)
            if clean != text:
                record.exc_info, record.exc_text = None, clean.rstrip("\n")
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


class _RedactStream:
    """A text stream that writes every secret as ``***``."""

    def __init__(self, stream, secrets):
        self._stream = stream
        self._secrets = secrets

    def write(self, text):
        """Write ``text`` redacted."""
        return self._stream.write(redact(text, self._secrets)
                                  if isinstance(text, str) else text)

    def writelines(self, lines):
        """Write each line redacted."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def masking(values):
    """While active, the clear ``values`` show as ``***`` in log records
    (every handler of the ``core4`` and the root logger), ``sys.stdout``
    and ``sys.stderr``; yields ``clean(obj)`` which redacts a str, dict or
    list (progress messages, error documents). Values shorter than
    :data:`MIN_MASK` are not searched for."""
    from core4.logger import ROOT
    secrets = sorted({value for value in values if isinstance(value, str)
                      and len(value) >= MIN_MASK}, key=len, reverse=True)
    if not secrets:
        yield lambda obj: obj
        return
    flt = _RedactFilter(secrets)
    handlers = logging.getLogger(ROOT).handlers + logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(flt)
    streams = sys.stdout, sys.stderr
    sys.stdout = _RedactStream(sys.stdout, secrets)
    sys.stderr = _RedactStream(sys.stderr, secrets)
    try:
        yield lambda obj: redact(obj, secrets)
    finally:
        sys.stdout, sys.stderr = streams
        for handler in handlers:
            handler.removeFilter(flt)


# rotation -------------------------------------------------------------------

def _rotate_collection(collection, ring, counts):
    """Re-encrypt every token in ``collection`` not under the first key."""
    for doc in collection.find({FIELD: {"$exists": True}}, {FIELD: 1}):
        sealed = doc.get(FIELD)
        if not isinstance(sealed, dict):
            continue
        update, query = {}, {"_id": doc["_id"]}
        for key, token in sealed.items():
            if ring.is_current(token):
                continue
            try:
                update["%s.%s" % (FIELD, key)] = ring.encrypt(
                    ring.decrypt(token))
            except (ring.invalid, AttributeError, TypeError, ValueError):
                counts["unreadable"] += 1
                continue
            query["%s.%s" % (FIELD, key)] = token
        if update and collection.update_one(
                query, {"$set": update}).modified_count:
            counts[collection.name] = counts.get(collection.name, 0) + 1


def rotate_key(config=None):
    """Re-encrypt every secret argument in ``sys_queue`` and
    ``sys_journal`` with a new key; return ``{"source", "sys_queue",
    "sys_journal", "unreadable"}`` (counts of documents re-encrypted and of
    tokens no key can read, which are left as they are).

    With keys in the secrets file a new key is generated there and the
    old ones are deleted after two passes over both collections. With a
    configured key (``CORE4_JOB_SECRET_KEY``/``job.secret_key``) the first
    configured key encrypts (put the new key first, the old one after it,
    rotate, then drop the old one) and the keys of the secrets file are
    deleted. The HMAC key of the uniqueness hash is kept. Keys still in
    ``sys_secret`` (older core4) are moved out of the database first.
    """
    from core4.config import get_config
    from core4.mongo import SystemCollections
    from core4.queue import events
    config = config or get_config()
    system = SystemCollections(config)
    source, configured = configured_keys(config)
    move_out_of_database(config, system)
    data = stored_keys(config, not configured, True)
    stored = list(data.get(FILE_KEYS) or [])
    if configured:
        keys = configured + [key for key in stored if key not in configured]
    else:
        keys = [generate_key()] + stored
        set_stored_keys(config, keys)
    ring = KeyRing(keys, configured_hash_key() or data.get(FILE_HASH_KEY),
                   source or FILE_SOURCE)
    counts = {"source": ring.source, "unreadable": 0}
    for _ in range(2):  # the second pass takes what moved meanwhile
        counts["unreadable"] = 0
        for collection in (system.queue, system.journal):
            _rotate_collection(collection, ring, counts)
    set_stored_keys(config, None if configured else keys[:1])
    result = {"source": ring.source, "unreadable": counts["unreadable"],
              "sys_queue": counts.get(system.queue.name, 0),
              "sys_journal": counts.get(system.journal.name, 0)}
    events.emit(system, events.event_document("rotate_key", dict(result)))
    return result
