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
3. ``sys_secret`` (document ``job_keys``), generated at first use.

The HMAC key of the hash is always generated into ``sys_secret`` and never
rotated (the hash is the identity of a queued job). :func:`rotate_key`
(``coco --rotate-key``) re-encrypts every secret in ``sys_queue`` and
``sys_journal``.
"""

import contextlib
import hashlib
import hmac
import logging
import os
import secrets as _random
import sys
import traceback

from core4.error import Core4ConfigurationError, Core4Error, CoreJobInvalid

#: how secret values are shown
MASK = "***"
#: the field of a job document that holds ``{argument: Fernet token}``
FIELD = "secret_args"
#: environment variable with the encryption keys (comma separated)
KEY_ENV = "CORE4_JOB_SECRET_KEY"
#: ``_id`` of the key document in ``sys_secret``
KEY_DOC = "job_keys"
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


def generate_key():
    """Return a new Fernet key (a string for ``CORE4_JOB_SECRET_KEY``)."""
    return _fernet_module().Fernet.generate_key().decode("ascii")


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


# keys -----------------------------------------------------------------------

def _fernet_module():
    try:
        import cryptography.fernet
    except ImportError:
        raise Core4ConfigurationError(
            "secret job arguments need the package cryptography (pip "
            "install cryptography)") from None
    return cryptography.fernet


def configured_keys(config):
    """Return ``(source, keys)``: the keys of ``CORE4_JOB_SECRET_KEY``, else
    of ``job.secret_key``, else ``(None, [])``. A malformed key raises
    :class:`Core4ConfigurationError` naming its source."""
    source, value = KEY_ENV, os.environ.get(KEY_ENV)
    if not (value or "").strip():
        source, value = "job.secret_key", config.job.get("secret_key")
    if not value:
        return None, []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise Core4ConfigurationError("%s must be a Fernet key or a list "
                                      "of keys" % source)
    keys = [str(key).strip() for key in value if str(key or "").strip()]
    fernet = _fernet_module()
    for position, key in enumerate(keys, 1):
        try:
            fernet.Fernet(key)
        except (ValueError, TypeError):
            raise Core4ConfigurationError(
                "%s: key %d is not a Fernet key (32 url-safe base64-encoded "
                "bytes; make one with python -c \"import core4.queue.secret "
                "as s; print(s.generate_key())\")" % (source, position)) \
                from None
    return source, keys


def _key_document(system, need_keys):
    """Return ``sys_secret``'s key document, generating what is missing:
    the HMAC key always, an encryption key if ``need_keys``."""
    import pymongo.errors
    doc = system.secret.find_one({"_id": KEY_DOC})
    if doc is None:
        new = {"_id": KEY_DOC, "hash_key": _random.token_hex(32)}
        if need_keys:
            new["keys"] = [generate_key()]
        try:
            system.secret.insert_one(new)
        except pymongo.errors.DuplicateKeyError:
            pass  # a concurrent first use won
        doc = system.secret.find_one({"_id": KEY_DOC})
    if need_keys and not doc.get("keys"):
        system.secret.update_one({"_id": KEY_DOC,
                                  "keys": {"$exists": False}},
                                 {"$set": {"keys": [generate_key()]}})
        doc = system.secret.find_one({"_id": KEY_DOC})
    return doc


class KeyRing:
    """The keys of one operation: ``keys[0]`` encrypts, all decrypt;
    ``hash_key`` keys the HMAC of the uniqueness hash."""

    def __init__(self, keys, hash_key=None, source="sys_secret"):
        fernet = _fernet_module()
        self.keys = list(keys)
        self.source = source
        self.hash_key = hash_key
        self.fernet = fernet.MultiFernet(
            [fernet.Fernet(key) for key in self.keys]) if self.keys else None
        self.primary = fernet.Fernet(self.keys[0]) if self.keys else None
        self.invalid = fernet.InvalidToken

    def encrypt(self, text):
        """Return the Fernet token of ``text`` under the first key."""
        return self.primary.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token):
        """Return the clear text of ``token``; raises ``InvalidToken``."""
        return self.fernet.decrypt(token.encode("ascii")).decode("utf-8")

    def is_current(self, token):
        """True if ``token`` is encrypted with the first key."""
        try:
            self.primary.decrypt(token.encode("ascii"))
            return True
        except (self.invalid, AttributeError, ValueError):
            return False

    def digest(self, text):
        """Return the keyed HMAC-SHA256 of ``text`` (for the hash)."""
        return hmac.new(bytes.fromhex(self.hash_key), text.encode("utf-8"),
                        hashlib.sha256).hexdigest()


def keyring(config=None, create=True):
    """Return the :class:`KeyRing` of ``config``: configured keys first,
    then those in ``sys_secret``. ``create`` generates what is missing in
    ``sys_secret`` (at enqueue); without it nothing is written (the job
    process only reads)."""
    from core4.config import get_config
    from core4.mongo import SystemCollections, retrying
    config = config or get_config()
    source, configured = configured_keys(config)
    system = SystemCollections(config)
    if create:
        doc = retrying(_key_document, system, not configured, timeout=60)
    else:
        doc = retrying(system.secret.find_one, {"_id": KEY_DOC},
                       timeout=60) or {}
    keys = configured + [key for key in doc.get("keys") or []
                         if key not in configured]
    return KeyRing(keys, doc.get("hash_key"), source or "sys_secret")


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
            "(neither %s nor job.secret_key is set and sys_secret has no "
            "key)" % (name, ", ".join(sorted(sealed)), KEY_ENV))
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

    With keys in ``sys_secret`` a new key is generated there and the old
    ones are deleted after two passes over both collections. With a
    configured key (``CORE4_JOB_SECRET_KEY``/``job.secret_key``) the first
    configured key encrypts (put the new key first, the old one after it,
    rotate, then drop the old one) and the keys in ``sys_secret`` are
    deleted. The HMAC key of the uniqueness hash is kept.
    """
    from core4.config import get_config
    from core4.mongo import SystemCollections
    from core4.queue import events
    config = config or get_config()
    system = SystemCollections(config)
    source, configured = configured_keys(config)
    doc = _key_document(system, not configured)
    stored = list(doc.get("keys") or [])
    if configured:
        keys = configured + [key for key in stored if key not in configured]
    else:
        keys = [generate_key()] + stored
        system.secret.update_one({"_id": KEY_DOC}, {"$set": {"keys": keys}})
    ring = KeyRing(keys, doc.get("hash_key"), source or "sys_secret")
    counts = {"source": ring.source, "unreadable": 0}
    for _ in range(2):  # the second pass takes what moved meanwhile
        counts["unreadable"] = 0
        for collection in (system.queue, system.journal):
            _rotate_collection(collection, ring, counts)
    if configured:
        system.secret.update_one({"_id": KEY_DOC}, {"$unset": {"keys": ""}})
    else:
        system.secret.update_one({"_id": KEY_DOC},
                                 {"$set": {"keys": keys[:1]}})
    result = {"source": ring.source, "unreadable": counts["unreadable"],
              "sys_queue": counts.get(system.queue.name, 0),
              "sys_journal": counts.get(system.journal.name, 0)}
    events.emit(system, events.event_document("rotate_key", dict(result)))
    return result
