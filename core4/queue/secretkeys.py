"""The keys of secret job arguments (see :mod:`core4.queue.secret`): where
they come from, first match encrypts, all of them decrypt:

1. ``CORE4_JOB_SECRET_KEY``: Fernet keys, comma separated, the first one
   encrypts;
2. the configuration key ``job.secret_key`` (a key or a list of keys);
3. the secrets file of the core4 home (:mod:`core4.private`, 0600, entry
   ``job_keys``), generated at first use.

The HMAC key of the uniqueness hash comes from ``CORE4_JOB_HASH_KEY`` (64
hex digits) or the secrets file (``job_hash_key``, generated). Nothing is
kept in the database: keys that an older core4 kept in ``sys_secret`` are
moved into the secrets file at first use (:func:`move_out_of_database`).
"""

import hashlib
import hmac
import os
import re
import secrets as _random

from core4.error import Core4ConfigurationError

#: environment variable with the encryption keys (comma separated)
KEY_ENV = "CORE4_JOB_SECRET_KEY"
#: environment variable with the HMAC key of the uniqueness hash
HASH_KEY_ENV = "CORE4_JOB_HASH_KEY"
#: ``_id`` of the key document in ``sys_secret`` (older core4)
KEY_DOC = "job_keys"
#: entries of the secrets file: encryption keys and the HMAC key
FILE_KEYS = "job_keys"
#: the source of keys from the secrets file, as messages name it
FILE_SOURCE = "the secrets file"
FILE_HASH_KEY = "job_hash_key"

def generate_key():
    """Return a new Fernet key (a string for ``CORE4_JOB_SECRET_KEY``)."""
    return _fernet_module().Fernet.generate_key().decode("ascii")


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


def configured_hash_key():
    """Return the HMAC key of ``CORE4_JOB_HASH_KEY`` (lower case), or None;
    a malformed one raises :class:`Core4ConfigurationError`."""
    value = (os.environ.get(HASH_KEY_ENV) or "").strip()
    if not value:
        return None
    if not re.fullmatch("[0-9a-fA-F]{64}", value):
        raise Core4ConfigurationError(
            "%s must be 64 hexadecimal digits (e.g. python -c \"import "
            "secrets; print(secrets.token_hex(32))\")" % HASH_KEY_ENV)
    return value.lower()


def move_out_of_database(config, system=None):
    """Move the keys that an older core4 kept in ``sys_secret`` into the
    secrets file (after the keys already there: they decrypt, they do not
    encrypt) and delete them from the database. Idempotent; returns the
    content of the secrets file."""
    from core4.mongo import SystemCollections, retrying
    from core4.private import read_secrets, secret_file, update_secrets
    system = system or SystemCollections(config)
    path = secret_file(config)
    doc = retrying(system.secret.find_one, {"_id": KEY_DOC}, timeout=60)
    if doc is None:
        return read_secrets(path)

    def merge(data):
        keys = list(data.get(FILE_KEYS) or [])
        moved = [key for key in doc.get("keys") or [] if key not in keys]
        if moved:
            data[FILE_KEYS] = keys + moved
        if doc.get("hash_key") and not data.get(FILE_HASH_KEY):
            data[FILE_HASH_KEY] = doc["hash_key"]
            return True
        return bool(moved)
    data = update_secrets(path, merge)
    retrying(system.secret.delete_one, {"_id": KEY_DOC}, timeout=60)
    return data


def stored_keys(config, need_keys, create):
    """Return the secrets file's content, moving keys out of ``sys_secret``
    first where the file has none yet; with ``create`` generate the HMAC
    key (unless configured) and, if ``need_keys``, an encryption key."""
    from core4.private import read_secrets, secret_file, update_secrets
    path = secret_file(config)
    data = read_secrets(path)
    if FILE_HASH_KEY not in data and FILE_KEYS not in data:
        data = move_out_of_database(config)
    need_hash = configured_hash_key() is None
    if not create or not (need_keys and not data.get(FILE_KEYS)
                          or need_hash and not data.get(FILE_HASH_KEY)):
        return data

    def fill(found):
        changed = False
        if need_keys and not found.get(FILE_KEYS):
            found[FILE_KEYS], changed = [generate_key()], True
        if need_hash and not found.get(FILE_HASH_KEY):
            found[FILE_HASH_KEY], changed = _random.token_hex(32), True
        return changed
    return update_secrets(path, fill)


def set_stored_keys(config, keys):
    """Replace the encryption keys of the secrets file (None: remove)."""
    from core4.private import secret_file, update_secrets

    def replace(data):
        if keys:
            data[FILE_KEYS] = list(keys)
        else:
            data.pop(FILE_KEYS, None)
        return True
    update_secrets(secret_file(config), replace)


class KeyRing:
    """The keys of one operation: ``keys[0]`` encrypts, all decrypt;
    ``hash_key`` keys the HMAC of the uniqueness hash."""

    def __init__(self, keys, hash_key=None, source=FILE_SOURCE):
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
    then those of the secrets file. ``create`` generates what is missing
    in the secrets file (at enqueue); without it nothing is generated (the
    job process only reads)."""
    from core4.config import get_config
    config = config or get_config()
    source, configured = configured_keys(config)
    data = stored_keys(config, not configured, create)
    keys = configured + [key for key in data.get(FILE_KEYS) or []
                         if key not in configured]
    return KeyRing(keys, configured_hash_key() or data.get(FILE_HASH_KEY),
                   source or FILE_SOURCE)
