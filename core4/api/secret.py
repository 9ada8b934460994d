"""The secrets of the app servers, generated at first start and stored in
``sys_secret`` so that every app server of a deployment shares them.

There is no shipped default: whoever starts first generates them, and a
concurrent start takes the one that won the insert.
"""

import secrets

import pymongo.errors

NAMES = ("jwt", "cookie")


def get_secret(system, name):
    """Return the secret ``name``, generating and storing it if missing."""
    doc = system.secret.find_one({"_id": name})
    if doc is None:
        try:
            system.secret.insert_one({"_id": name,
                                      "value": secrets.token_hex(32)})
        except pymongo.errors.DuplicateKeyError:
            pass
        doc = system.secret.find_one({"_id": name})
    return doc["value"]


def get_secrets(system):
    """Return ``{name: secret}`` for all secrets of the app server."""
    return {name: get_secret(system, name) for name in NAMES}
