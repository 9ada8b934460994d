"""The signing secrets of the app servers: ``jwt`` (login tokens) and
``cookie`` (the session cookie).

They never live in the database (whoever can reach it could sign their own
admin token). Each comes from, first match:

1. an environment variable (``CORE4_JWT_SECRET``, ``CORE4_COOKIE_SECRET``,
   at least 32 characters): for several hosts, give each the same values;
2. the secrets file of the core4 home (:mod:`core4.private`, 0600),
   generated at the first start and shared by every app server of the home.

Secrets that an older core4 kept in ``sys_secret`` are moved into the
secrets file (so tokens already issued stay valid) and deleted from the
database, at every start (idempotent). Rotation: delete the entry from the
file (or set a new environment value) and restart every app server; tokens
and cookies signed before are then refused.
"""

import os
import secrets

from core4 import private
from core4.error import Core4ConfigurationError
from core4.queue.secretkeys import move_out_of_database

NAMES = ("jwt", "cookie")
#: environment variables that give a secret (they win over the file)
ENV = {"jwt": "CORE4_JWT_SECRET", "cookie": "CORE4_COOKIE_SECRET"}
#: shortest secret accepted from the environment
MIN_LENGTH = 32


def configured_secrets():
    """Return ``{name: value}`` of the secrets given by the environment;
    a value shorter than :data:`MIN_LENGTH` raises
    :class:`Core4ConfigurationError`."""
    found = {}
    for name in NAMES:
        value = (os.environ.get(ENV[name]) or "").strip()
        if not value:
            continue
        if len(value) < MIN_LENGTH:
            raise Core4ConfigurationError(
                "%s must be at least %d characters (e.g. python -c \"import "
                "secrets; print(secrets.token_hex(32))\")"
                % (ENV[name], MIN_LENGTH))
        found[name] = value
    return found


def _stored_in_database(system):
    """``{name: value}`` of the signing secrets still in ``sys_secret``."""
    return {doc["_id"]: doc["value"] for doc in system.secret.find(
        {"_id": {"$in": list(NAMES)}}) if isinstance(doc.get("value"), str)}


def get_secrets(system):
    """Return ``{name: secret}`` for the app server of ``system``
    (:class:`~core4.mongo.SystemCollections`): from the environment, else
    from the secrets file, moving those of ``sys_secret`` there first and
    generating the missing ones. Removes them, and the keys of secret job
    arguments, from the database."""
    configured = configured_secrets()
    path = private.secret_file(system.config)
    wanted = [name for name in NAMES if name not in configured]
    stored = private.read_secrets(path) if wanted else {}
    if any(not isinstance(stored.get(name), str) for name in wanted):
        legacy = _stored_in_database(system)

        def fill(data):
            missing = [name for name in wanted
                       if not isinstance(data.get(name), str)]
            for name in missing:
                data[name] = legacy.get(name) or secrets.token_hex(32)
            return bool(missing)
        stored = private.update_secrets(path, fill)
    system.secret.delete_many({"_id": {"$in": list(NAMES)}})
    move_out_of_database(system.config, system)  # the job arguments' keys
    return {name: configured.get(name) or stored[name] for name in NAMES}
