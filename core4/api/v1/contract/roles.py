"""The contract of users and roles (``/roles``), the login and the own
profile."""

from core4.api import password, role
from core4.api.schema import Body
from core4.api.v1.contract.common import (BOOLEAN, ID, NULLABLE_STRING,
                                          STRING, TIME)
from core4.api.v1.contract.ref import ref

#: the longest real name taken
MAX_REALNAME = 256
#: the most roles and permissions one user or role may have
MAX_ITEMS = 256
#: a permission string: ``cop``, ``job://<regex>/r|x``, ``api://<regex>``
#: (with an optional ``/crud`` part) or ``app://<regex>``; the regular
#: expression must compile (see :mod:`core4.api.permission`)
PERMISSION = r"^(cop|job://.+/[rx]|(api|app)://.+)$"

NAME = {"type": "string", "pattern": role.NAME.pattern}
PASSWORD = {"type": "string", "minLength": password.MIN_LENGTH,
            "maxLength": password.MAX_LENGTH}
FIELDS = {
    "name": NAME,
    "realname": {"type": "string", "nullable": True,
                 "maxLength": MAX_REALNAME},
    "email": {"type": "string", "nullable": True,
              "pattern": role.EMAIL.pattern},
    "password": dict(PASSWORD, nullable=True),
    "is_active": BOOLEAN,
    "roles": {"type": "array", "items": NAME, "maxItems": MAX_ITEMS},
    "permissions": {"type": "array", "maxItems": MAX_ITEMS, "items": {
        "type": "string", "pattern": PERMISSION, "maxLength": 1024}}}
CREATE = Body(FIELDS, ("name",), "a user (with email and password) or a "
              "role (without); roles it includes must exist and each "
              "permission's regular expression must compile (else 400)",
              example={"name": "reader", "permissions": ["job://core4\\./r"]})
UPDATE = Body(FIELDS, (), "the fields to change")
IF_MATCH = {"name": "If-Match", "in": "header", "required": True,
            "schema": STRING, "description": "the etag read (quoted or "
            "not); a stale one is refused with 409. Clients that cannot "
            "send it may send the argument etag instead"}
LOGIN = Body({"username": STRING, "password": STRING},
             ("username", "password"), "the credentials")
PROFILE = Body({"password": STRING, "new_password": PASSWORD},
               ("password", "new_password"),
               "the current and the new password")

ROLE = {
    "type": "object", "additionalProperties": True,
    "description": "a user (with email) or a role, without secrets; "
    "etag changes with every change",
    "required": ["_id", "name", "etag"],
    "properties": {
        "_id": ID, "name": STRING, "realname": NULLABLE_STRING,
        "email": NULLABLE_STRING, "is_active": BOOLEAN,
        "roles": {"type": "array", "items": STRING},
        "permissions": {"type": "array", "items": STRING},
        "etag": STRING, "created": TIME, "last_login": TIME}}
PROFILE_DATA = {"allOf": [ref("Role"), {"type": "object", "properties": {
    "effective_permissions": {"type": "array", "items": STRING}}}]}
TOKEN = {"type": "object", "required": ["token", "expires", "username"],
         "properties": {"token": STRING, "expires": {"type": "number"},
                        "username": STRING}}


def _role_links(etag):
    params = {"_id": "$response.body#/data/_id"}
    with_etag = dict(params, **{"header.If-Match": etag})
    return {"GetRole": {"operationId": "getRole", "parameters": params},
            "UpdateRole": {"operationId": "updateRole",
                           "parameters": with_etag},
            "DeleteRole": {"operationId": "deleteRole",
                           "parameters": with_etag}}


SCHEMAS = {"Role": ROLE}

OPERATIONS = {
    ("LoginHandler", "post"): {
        "operationId": "login", "body": LOGIN,
        "media_types": ("application/json",
                        "application/x-www-form-urlencoded"),
        "data": TOKEN},
    ("LoginHandler", "get"): {"operationId": "loginBasic", "data": TOKEN},
    ("LogoutHandler", "post"): {
        "operationId": "logout", "data": {
            "type": "object", "properties": {"logout": BOOLEAN}}},
    ("ProfileHandler", "get"): {"operationId": "getProfile",
                                "data": PROFILE_DATA},
    ("ProfileHandler", "put"): {
        "operationId": "changePassword", "body": PROFILE, "data": TOKEN,
        "description": "400 if the current password is wrong"},
    ("RoleHandler", "get"): {
        "operationId": "listRoles",
        "data": {"type": "array", "items": ref("Role")}},
    ("RoleHandler", "post"): {
        "operationId": "createRole", "body": CREATE, "status": "201",
        "data": ref("Role"),
        "links": _role_links("$response.body#/data/etag")},
    ("RoleItemHandler", "get"): {
        "operationId": "getRole", "data": ref("Role"),
        "response_headers": {"ETag": {"description": "the etag, quoted",
                                      "schema": STRING}},
        "links": _role_links("$response.header.ETag")},
    ("RoleItemHandler", "put"): {
        "operationId": "updateRole", "body": UPDATE, "headers": [IF_MATCH],
        "data": ref("Role"),
        "links": _role_links("$response.body#/data/etag")},
    ("RoleItemHandler", "delete"): {
        "operationId": "deleteRole", "headers": [IF_MATCH],
        "data": {"type": "object", "required": ["_id", "deleted"],
                 "properties": {"_id": ID, "deleted": BOOLEAN}}},
}
