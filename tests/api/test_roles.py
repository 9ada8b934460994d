"""Users and roles over real HTTP (``/core4/api/v1/roles``, admins only):
create, read with ETag, update and delete with optimistic concurrency,
roles including roles, and every refusal with a clear 400/409."""

import datetime
import json

import pytest
from bson import ObjectId

from tests.api.conftest import API, unique

ROLES = API + "/roles"


def create(api, expect=201, **fields):
    """POST /roles with ``fields``; return the response data (after
    asserting the status)."""
    response = api.request("POST", ROLES, token=api.admin, json=fields)
    assert response.status_code == expect, response.text
    return response.json()


def user_fields(name=None, **fields):
    """The fields of a new user (unique name and email)."""
    name = name or unique("user")
    result = {"name": name, "email": name + "@example.org",
              "password": "password-1"}
    result.update(fields)
    return result


def read(api, _id):
    """GET /roles/<id>: return ``(data, ETag header)``."""
    response = api.request("GET", "%s/%s" % (ROLES, _id), token=api.admin)
    assert response.status_code == 200, response.text
    return response.json()["data"], response.headers.get("ETag")


def put(api, _id, **fields):
    """PUT /roles/<id> with ``fields``; return the response."""
    return api.request("PUT", "%s/%s" % (ROLES, _id), token=api.admin,
                       json=fields)


def effective(api, name, password="password-1"):
    """The effective permissions of user ``name`` (from GET /profile)."""
    token = api.login(name, password)
    response = api.request("GET", API + "/profile", token=token)
    assert response.status_code == 200
    assert_no_secrets(response.json()["data"])
    return response.json()["data"]["effective_permissions"]


def assert_no_secrets(value):
    """No password, hash or token version anywhere in ``value``."""
    text = json.dumps(value)
    for word in ("password", "$argon2", "token_version", "email_key"):
        assert word not in text, word


def test_create_user_and_log_in(api):
    fields = user_fields(realname="Ann Example",
                         permissions=["job://mypro\\./r"])
    body = create(api, **fields)
    assert body["code"] == 201
    data = body["data"]
    assert_no_secrets(data)
    assert data["name"] == fields["name"]
    assert data["email"] == fields["email"]
    assert data["realname"] == "Ann Example"
    assert data["is_active"] is True
    assert data["roles"] == [] and data["permissions"] == ["job://mypro\\./r"]
    assert ObjectId.is_valid(data["_id"]) and data["etag"]
    assert effective(api, fields["name"]) == ["job://mypro\\./r"]
    stored = api.db.sys_role.find_one({"name": fields["name"]})
    assert stored["password"].startswith("$argon2id$")


def test_create_role(api):
    data = create(api, name=unique("role"), permissions=["app://x"])["data"]
    assert data["email"] is None and data["permissions"] == ["app://x"]
    # a role cannot log in
    response = api.request("POST", API + "/login", json={
        "username": data["name"], "password": "password-1"})
    assert response.status_code == 401


def test_names_are_unique(api):
    name = unique("dup")
    create(api, name=name)
    body = create(api, expect=409, name=name)
    assert name in body["message"]
    create(api, expect=409, **user_fields(name=name))


def test_emails_are_unique_ignoring_case(api):
    fields = user_fields()
    create(api, **fields)
    other = user_fields(email=fields["email"].upper())
    body = create(api, expect=409, **other)
    assert "taken" in body["message"]
    # also when changed later
    data = create(api, **user_fields())["data"]
    response = put(api, data["_id"], etag=data["etag"],
                   email=fields["email"].title())
    assert response.status_code == 409, response.text


def test_get_one_has_etag_and_no_secrets(api):
    created = create(api, **user_fields())["data"]
    data, etag = read(api, created["_id"])
    assert etag == '"%s"' % created["etag"] == '"%s"' % data["etag"]
    assert_no_secrets(data)
    # times are ISO 8601 in UTC (datetimes in sys_role)
    at = datetime.datetime.fromisoformat(data["created"])
    assert at.utcoffset() == datetime.timedelta(0)
    assert data["updated"] == data["created"] and data["last_login"] is None
    response = api.request("GET", ROLES, token=api.admin)
    assert response.status_code == 200
    listing = response.json()["data"]
    assert created["_id"] in [doc["_id"] for doc in listing]
    assert "admin" in [doc["name"] for doc in listing]
    assert_no_secrets(listing)
    response = api.request("GET", "%s/%s" % (ROLES, ObjectId()),
                           token=api.admin)
    assert response.status_code == 404


def test_update_needs_the_current_etag(api):
    created = create(api, **user_fields())["data"]
    _id, first = created["_id"], created["etag"]
    response = put(api, _id, realname="no etag")
    assert response.status_code == 400
    assert "etag" in response.json()["message"]
    response = put(api, _id, realname="first", etag=first)
    assert response.status_code == 200, response.text
    second = response.json()["data"]["etag"]
    assert second != first
    assert response.headers["ETag"] == '"%s"' % second
    assert_no_secrets(response.json()["data"])
    response = put(api, _id, realname="stale", etag=first)
    assert response.status_code == 409
    assert "changed meanwhile" in response.json()["message"]
    # If-Match works as well, and a stale one is refused the same way
    response = api.request("PUT", "%s/%s" % (ROLES, _id), token=api.admin,
                           json={"realname": "by header"},
                           headers={"If-Match": '"%s"' % second})
    assert response.status_code == 200, response.text
    response = api.request("PUT", "%s/%s" % (ROLES, _id), token=api.admin,
                           json={"realname": "stale header"},
                           headers={"If-Match": '"%s"' % second})
    assert response.status_code == 409
    assert read(api, _id)[0]["realname"] == "by header"


def test_admin_changes_a_password(api):
    created = create(api, **user_fields())["data"]
    token = api.login(created["name"], "password-1")
    response = put(api, created["_id"], etag=created["etag"],
                   password="password-2")
    assert response.status_code == 200, response.text
    assert_no_secrets(response.json()["data"])
    assert api.request("GET", API + "/profile",
                       token=token).status_code == 401
    assert api.login(created["name"], "password-2")


def test_delete_with_etag(api):
    created = create(api, name=unique("gone"))["data"]
    url = "%s/%s" % (ROLES, created["_id"])
    response = api.request("DELETE", url, token=api.admin)
    assert response.status_code == 400
    response = api.request("DELETE", url, token=api.admin,
                           params={"etag": str(ObjectId())})
    assert response.status_code == 409
    response = api.request("DELETE", url, token=api.admin,
                           params={"etag": created["etag"]})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["deleted"] is True
    assert api.request("GET", url, token=api.admin).status_code == 404
    response = api.request("DELETE", url, token=api.admin,
                           params={"etag": created["etag"]})
    assert response.status_code == 404


def test_roles_include_roles(api):
    inner = create(api, name=unique("inner"),
                   permissions=["job://x/x"])["data"]
    outer = create(api, name=unique("outer"), roles=[inner["name"]],
                   permissions=["app://dash"])["data"]
    user = create(api, **user_fields(roles=[outer["name"]]))["data"]
    assert effective(api, user["name"]) == ["app://dash", "job://x/x"]
    # a change of the inner role reaches the user
    response = put(api, inner["_id"], etag=inner["etag"],
                   permissions=["job://y/r"])
    assert response.status_code == 200, response.text
    inner = response.json()["data"]
    assert effective(api, user["name"]) == ["app://dash", "job://y/r"]
    # an inactive role grants nothing (nor the roles it includes)
    response = put(api, outer["_id"], etag=outer["etag"], is_active=False)
    assert response.status_code == 200, response.text
    assert effective(api, user["name"]) == []


def test_cycles_are_refused(api):
    a = create(api, name=unique("ca"))["data"]
    b = create(api, name=unique("cb"), roles=[a["name"]])["data"]
    c = create(api, name=unique("cc"), roles=[b["name"]])["data"]
    response = put(api, a["_id"], etag=a["etag"], roles=[c["name"]])
    assert response.status_code == 400
    assert "cycle" in response.json()["message"]
    response = put(api, a["_id"], etag=a["etag"], roles=[a["name"]])
    assert response.status_code == 400
    assert "itself" in response.json()["message"]
    assert read(api, a["_id"])[0]["roles"] == []


def test_unknown_roles_are_refused(api):
    missing = unique("missing")
    body = create(api, expect=400, name=unique("r"), roles=[missing])
    assert missing in body["message"]
    # a user is not a role
    user = create(api, **user_fields())["data"]
    body = create(api, expect=400, name=unique("r"), roles=[user["name"]])
    assert user["name"] in body["message"]


@pytest.mark.parametrize("bad", ["job://[/x", "foo://bar", "job://x/q",
                                 "job://x", "api://", "cop ", "COP",
                                 "api://(/crud"])
def test_bad_permission_strings_are_refused(api, bad):
    body = create(api, expect=400, name=unique("p"), permissions=[bad])
    assert repr(bad) in body["message"]
    assert "\n" not in body["message"]


@pytest.mark.parametrize("fields, word", [
    ({"password": "short"}, "password"),
    ({"password": "x" * 1025}, "password"),
    ({"shoe_size": 44}, "shoe_size"),
    ({"email": "not-an-email"}, "email"),
    ({"name": "bad name"}, "name"),
    ({"name": "a.*"}, "name"),
    ({"name": "newline\n"}, "name"),
    ({"email": "a@example.org\n"}, "email"),
    ({"name": ""}, "name"),
    ({"is_active": "yes"}, "is_active"),
    ({"roles": "r"}, "roles"),
    ({"permissions": "cop"}, "permissions"),
    ({"realname": 7}, "realname"),
    ({"password": None}, "password"),
    ({"email": None}, "email"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_bad_fields_are_refused(api, fields, word):
    payload = user_fields()
    payload.update(fields)
    body = create(api, expect=400, **payload)
    assert word in body["message"]
    assert "\n" not in body["message"]
    assert api.db.sys_role.find_one({"name": payload["name"]}) is None


def test_bad_bodies_are_refused(api):
    deep = b'{"name": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    for data in (b"{not json", b"[1, 2]", b'"text"', b'{"name": 1e400}',
                 b'{"name": NaN}', b'{"name": -Infinity}', deep,
                 b'{"name": "\xff"}'):
        response = api.request("POST", ROLES, token=api.admin, data=data,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 400, data
        body = response.json()
        assert body["code"] == 400 and "\n" not in body["message"]


def test_json_sent_as_form_is_json(api):
    """``curl -d '{...}'`` sends JSON as a form: it is read as JSON."""
    name = unique("form")
    response = api.request("POST", ROLES, token=api.admin,
                           data=json.dumps({"name": name}), headers={
                               "Content-Type":
                               "application/x-www-form-urlencoded"})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["name"] == name


def test_a_role_still_included_cannot_be_deleted_or_renamed(api):
    inner = create(api, name=unique("kept"))["data"]
    outer = create(api, name=unique("holder"), roles=[inner["name"]])["data"]
    response = api.request("DELETE", "%s/%s" % (ROLES, inner["_id"]),
                           token=api.admin, params={"etag": inner["etag"]})
    assert response.status_code == 400
    assert "included" in response.json()["message"]
    response = put(api, inner["_id"], etag=inner["etag"], name=unique("new"))
    assert response.status_code == 400
    assert "included" in response.json()["message"]
    # once no longer included, it can go
    response = put(api, outer["_id"], etag=outer["etag"], roles=[])
    assert response.status_code == 200
    response = api.request("DELETE", "%s/%s" % (ROLES, inner["_id"]),
                           token=api.admin, params={"etag": inner["etag"]})
    assert response.status_code == 200, response.text


def test_nobody_deletes_himself(api):
    me = api.db.sys_role.find_one({"name": "admin"})
    response = api.request("DELETE", "%s/%s" % (ROLES, me["_id"]),
                           token=api.admin, params={"etag": me["etag"]})
    assert response.status_code == 400
    assert "yourself" in response.json()["message"]
    assert api.db.sys_role.find_one({"name": "admin"}) is not None


def test_roles_are_for_admins_only(api):
    name, token = api.create_user(["job://.*/x", "api://.*"])
    created = create(api, name=unique("r"))["data"]
    for method, path, body in [
            ("GET", ROLES, None), ("POST", ROLES, {"name": unique("r")}),
            ("GET", "%s/%s" % (ROLES, created["_id"]), None),
            ("PUT", "%s/%s" % (ROLES, created["_id"]),
             {"etag": created["etag"], "permissions": ["cop"]}),
            ("DELETE", "%s/%s" % (ROLES, created["_id"]),
             {"etag": created["etag"]})]:
        response = api.request(method, path, token=token, json=body)
        assert response.status_code == 403, (method, path)
    assert read(api, created["_id"])[0]["permissions"] == []
    assert "cop" not in effective(api, name)


def test_post_on_one_role_is_not_allowed(api):
    created = create(api, name=unique("r"))["data"]
    response = api.request("POST", "%s/%s" % (ROLES, created["_id"]),
                           token=api.admin, json={"name": unique("r")})
    assert response.status_code == 405
    assert response.json()["code"] == 405
