"""Users and roles in ``sys_role``.

A *role* has a name, permissions and roles it includes. A *user* is a role
with an email and a password (an argon2 hash; never stored in clear). Names
are unique and always matched exactly, never as a pattern. Every change
replaces the document's ``etag``: an update or delete must name the etag it
read (optimistic concurrency), or it is refused.

A user's ``token_version`` is a random value (its *stamp*) that every
login token of the user carries (:mod:`core4.api.token`). It is made
anew when the user is created, renamed or deactivated and when its
password changes: a token names one user, and dies with it. A new user
never gets the stamp of a former one, even under the same name.

Every create, update and delete is audited: an event of channel ``audit``
names who did it (``by``, default the OS user), the action and the user or
role (and for an update the names of the fields changed, never values).
"""

import re
import secrets
import sys

import pymongo
import pymongo.errors
from bson import ObjectId

from core4.error import Core4UserError, CoreJobNotFound
from core4.mongo import ensure_index, now
from core4.api import password as passwords
from core4.api import permission
from core4.base import username
from core4.queue import events

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
FIELDS = ("name", "realname", "email", "password", "is_active", "roles",
          "permissions")
#: fields never sent to a client
HIDDEN = ("password", "email_key", "token_version")


class RoleNotFound(CoreJobNotFound):
    """No user or role with this id or name."""


class RoleConflict(Core4UserError):
    """The name or email is taken, or the etag is stale."""

    status = 409


def new_stamp():
    """A fresh random ``token_version`` (see the module)."""
    return secrets.token_urlsafe(16)


def setup(system):
    """Create the unique indexes of ``sys_role`` and give users of an
    older core4 a random stamp (idempotent)."""
    _indexes(system)
    upgrade_stamps(system)


def upgrade_stamps(system):
    """Replace each counter ``token_version`` (of core4 before random
    stamps: the same for a deleted user and a new one of the same name)
    by a random stamp. Tokens issued before are no longer valid: their
    users log in again. Return how many were replaced."""
    replaced = 0
    for doc in system.role.find({}, {"token_version": 1}):
        old = doc.get("token_version")
        if isinstance(old, str):
            continue
        match = {"_id": doc["_id"]}
        match["token_version"] = (old if old is not None
                                  else {"$exists": False})
        replaced += system.role.update_one(match, {"$set": {
            "token_version": new_stamp()}}).modified_count
    return replaced


def _indexes(system):
    """Create the unique indexes of ``sys_role`` (idempotent)."""
    ensure_index(system.role, [("name", 1)], unique=True)
    # users have an email, roles none: email_key is the email for users
    # and a per-name placeholder for roles (no partial index on NX-27017)
    ensure_index(system.role, [("email_key", 1)], unique=True)


def public(doc):
    """Return a user/role document without its secrets."""
    return {key: value for key, value in doc.items() if key not in HIDDEN}


def _check(fields, creating):
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise Core4UserError("unknown field(s): %s" % ", ".join(
            sorted(unknown)))
    if creating or "name" in fields:
        name = fields.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise Core4UserError(
                "name must be 1-64 letters, digits or _.@- (starting with a "
                "letter or digit)")
    if fields.get("realname") is not None and not isinstance(
            fields["realname"], str):
        raise Core4UserError("realname must be a string")
    if "email" in fields and fields["email"] is not None:
        if not isinstance(fields["email"], str) or not EMAIL.fullmatch(
                fields["email"]):
            raise Core4UserError("email %r is not an email address" % (
                fields["email"],))
    if "is_active" in fields and not isinstance(fields["is_active"], bool):
        raise Core4UserError("is_active must be true or false")
    if "roles" in fields:
        roles = fields["roles"]
        if not isinstance(roles, list) or not all(
                isinstance(r, str) for r in roles):
            raise Core4UserError("roles must be a list of role names")
    if "permissions" in fields:
        permission.validate(fields["permissions"])
    if "password" in fields and fields["password"] is not None:
        passwords.check_strength(fields["password"])


def _prepare(system, fields, current=None):
    """Return the stored form of ``fields`` (merged into ``current``)."""
    doc = dict(current or {})
    doc.update(fields)
    if doc.get("email") and not doc.get("password") and not (
            current and current.get("password")):
        raise Core4UserError("a user (with email) needs a password")
    if doc.get("password") and not doc.get("email"):
        raise Core4UserError("a user (with password) needs an email")
    if "password" in fields and fields["password"] is not None:
        doc["password"] = passwords.hash_password(fields["password"])
        doc["token_version"] = new_stamp()
    elif current is not None and "password" in fields:
        doc["password"] = current.get("password")
    for name in doc.get("roles", []):
        if name == doc["name"]:
            raise Core4UserError("role %s cannot include itself" % name)
        role = system.role.find_one({"name": name}, {"email": 1})
        if role is None or role.get("email"):
            raise Core4UserError("unknown role %r" % name)
    doc["email_key"] = (doc["email"].lower() if doc.get("email")
                        else "!role:" + doc["name"])
    return doc


def _audit(system, action, by, doc, **extra):
    """Emit the audit event of ``action`` on the user or role ``doc``."""
    events.emit(system, events.audit(
        action, by or username(), role_id=doc["_id"], role=doc["name"],
        kind="user" if doc.get("email") else "role", **extra))


def create(system, fields, by=None):
    """Create a user or role from ``fields``; return it (without secrets;
    audited as done ``by`` the user)."""
    _indexes(system)
    fields = dict(fields)
    _check(fields, creating=True)
    fields.setdefault("realname", None)
    fields.setdefault("email", None)
    fields.setdefault("is_active", True)
    fields.setdefault("roles", [])
    fields.setdefault("permissions", [])
    fields.setdefault("password", None)
    doc = _prepare(system, fields)
    at = now()
    doc.update(_id=ObjectId(), etag=str(ObjectId()), created=at, updated=at,
               last_login=None)
    doc["token_version"] = new_stamp()
    try:
        system.role.insert_one(doc)
    except pymongo.errors.DuplicateKeyError:
        raise RoleConflict("name %r or its email is already taken" % (
            doc["name"],)) from None
    _audit(system, "create_role", by, doc)
    return public(doc)


def _cycle(system, doc):
    """Raise if ``doc``'s roles lead back to it."""
    seen, todo = set(), list(doc.get("roles", []))
    while todo:
        name = todo.pop()
        if name == doc["name"]:
            raise Core4UserError("roles of %s include %s again (a cycle)"
                                 % (doc["name"], doc["name"]))
        if name in seen:
            continue
        seen.add(name)
        role = system.role.find_one({"name": name}, {"roles": 1}) or {}
        todo.extend(role.get("roles", []))


def update(system, _id, etag, fields, by=None):
    """Apply ``fields`` to the user or role ``_id`` if its etag is still
    ``etag``; return the new document (without secrets; audited as done
    ``by`` the user)."""
    current = get(system, _id)
    _check(fields, creating=False)
    if not isinstance(etag, str) or not etag:
        raise Core4UserError("etag is required: send the etag you read")
    if current["etag"] != etag:
        raise RoleConflict("%s was changed meanwhile (etag %s, you sent %s)"
                           % (current["name"], current["etag"], etag))
    doc = _prepare(system, fields, current)
    _cycle(system, doc)
    doc.update(etag=str(ObjectId()), updated=now())
    if doc["name"] != current["name"] or (
            current.get("is_active", True) and not doc.get("is_active")):
        # a renamed or deactivated user's tokens end (and stay ended when
        # the old name is taken again or the user re-activated)
        doc["token_version"] = new_stamp()
    if "name" in fields and fields["name"] != current["name"]:
        if system.role.find_one({"roles": current["name"]}, {"_id": 1}):
            raise Core4UserError("role %s is included by others: cannot "
                                 "rename it" % current["name"])
    try:
        result = system.role.replace_one({"_id": current["_id"],
                                          "etag": etag}, doc)
    except pymongo.errors.DuplicateKeyError:
        raise RoleConflict("name %r or its email is already taken" % (
            doc["name"],)) from None
    if result.matched_count != 1:
        raise RoleConflict("%s was changed meanwhile" % current["name"])
    _audit(system, "update_role", by, doc, fields=sorted(fields),
           previous=current["name"])
    return public(doc)


def delete(system, _id, etag, by=None):
    """Delete the user or role ``_id`` if its etag is still ``etag``
    (audited as done ``by`` the user)."""
    current = get(system, _id)
    if current["etag"] != etag:
        raise RoleConflict("%s was changed meanwhile (etag %s, you sent %s)"
                           % (current["name"], current["etag"], etag))
    if system.role.find_one({"roles": current["name"]}, {"_id": 1}):
        raise Core4UserError("role %s is still included by others" %
                             current["name"])
    if system.role.delete_one({"_id": current["_id"],
                               "etag": etag}).deleted_count != 1:
        raise RoleConflict("%s was changed meanwhile" % current["name"])
    _audit(system, "delete_role", by, current)


def get(system, _id):
    """Return the stored user or role ``_id`` (an ObjectId or its hex)."""
    try:
        oid = ObjectId(str(_id))
    except Exception:
        raise RoleNotFound("%r is not a user or role id" % (_id,)) from None
    doc = system.role.find_one({"_id": oid})
    if doc is None:
        raise RoleNotFound("no user or role %s" % _id)
    return doc


def find_user(system, name):
    """Return the active user named exactly ``name``, or None (its
    password is checked by :func:`authenticate` or a
    :class:`~core4.api.password.Checker`)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return None
    doc = system.role.find_one({"name": name})
    if doc is None or not doc.get("email") or not doc.get("is_active"):
        return None
    return doc


def listing(system):
    """Return all users and roles (without secrets), by name."""
    return [public(doc) for doc in system.role.find({}).sort("name", 1)]


def effective_permissions(system, user):
    """Return the permissions of ``user`` and of all its roles."""
    result, seen = set(user.get("permissions", [])), {user["name"]}
    todo = list(user.get("roles", []))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        role = system.role.find_one({"name": name}) or {}
        if role.get("is_active", True):
            result.update(role.get("permissions", []))
            todo.extend(role.get("roles", []))
    return permission.Permissions(result)


def authenticate(system, name, password,
                 verify=passwords.verify_or_pretend):
    """Return the user if ``name`` and ``password`` match, else None.

    An unknown name costs a hash check as well, so that the time of the
    answer does not tell which names exist. ``verify(hashed, password)``
    checks the password (an app server passes its password pool's).
    """
    user = find_user(system, name)
    if not verify(user.get("password") if user else None, password):
        return None
    return user


def touch_login(system, user):
    """Record the user's last login."""
    system.role.update_one({"_id": user["_id"]},
                           {"$set": {"last_login": now()}})


def change_password(system, user, old, new):
    """Change the own password after checking the old one."""
    if not passwords.verify_password(user.get("password"), old):
        raise Core4UserError("the current password is wrong")
    return replace_password(system, user, new)


def replace_password(system, user, new):
    """Set the password of ``user`` to ``new`` (clear, or
    :class:`~core4.api.password.Hashed`) without checking the old one;
    return the user (without secrets)."""
    fresh = get(system, user["_id"])
    return update(system, user["_id"], fresh["etag"], {"password": new},
                  by=user["name"])


def ensure_admin(system, config, out=None):
    """Create the admin user at first start; return its name.

    The password is ``api.admin_password`` or, if not configured, a
    generated one printed once to ``out``.
    """
    setup(system)
    name = config.api.admin_username
    if system.role.find_one({"name": name}, {"_id": 1}) is not None:
        return name
    password = config.api.admin_password
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    try:
        create(system, {"name": name, "realname": "administrator",
                        "email": config.api.admin_email,
                        "password": password, "permissions": ["cop"]})
    except RoleConflict:
        return name  # created by a concurrent start
    if generated:
        print("core4: created user %s with password %s (shown once; "
              "change it with PUT /core4/api/v1/profile)" % (name, password),
              file=out or sys.stderr, flush=True)
    return name
