"""Private by default (issue 20, part 5): the embedded database and the
secrets are the owner's alone.

* The embedded server's directory is 0700 and its files 0600, also for a
  directory written by an older core4 (with a server it started, which
  knew no authentication): fixed at the next start.
* The server refuses a client without credentials (NX-27017 has no
  authentication of its own; core4 adds SCRAM-SHA-256 in the server
  process, see core4.mongo.nxauth).
* The app server's signing secrets and the keys of secret job arguments
  are in a 0600 file of the core4 home, never in the database; those an
  older core4 kept in ``sys_secret`` move into the file, and tokens and
  cookies issued before stay valid.
"""

import json
import os
import stat
import subprocess
import sys
import time

import psutil
import pymongo
import pytest
import requests

from core4.mongo import embedded, nxauth
from core4.private import SECRET_FILE
from tests.appserver import (ADMIN_PASSWORD, API, isolated_env,
                             start_app_server, stop_app_server)
from tests.conftest import free_port
from tests.support import ROOT, wait_for

#: NX as an older core4 started it: the same fixes, no authentication
OLD_NX_CODE = embedded._NX_CODE.replace(
    "os.umask(0o077); ", "").replace(
    "import core4.mongo.nxauth; core4.mongo.nxauth.apply(); ", "")


def modes(directory):
    """``{name: mode}`` of ``directory`` ("." itself) and its files."""
    found = {".": stat.S_IMODE(os.stat(directory).st_mode)}
    for name in os.listdir(directory):
        found[name] = stat.S_IMODE(os.stat(os.path.join(directory,
                                                        name)).st_mode)
    return found


def assert_private(directory):
    found = modes(directory)
    assert found.pop(".") == 0o700
    assert found and all(mode == 0o600 for mode in found.values()), found


def without_credentials(url):
    """``url`` with its user and password removed."""
    return "mongodb://" + url.split("@", 1)[1]


def assert_refused(url):
    """A client of ``url`` gets at most a ping (without credentials; with
    wrong ones not even that), nothing else."""
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=10000)
    try:
        if "@" not in url:
            assert client.admin.command("ping")["ok"] == 1
        for attempt in (lambda: client.core4.sys_secret.find_one(),
                        lambda: client.core4.sys_role.insert_one({"x": 1}),
                        lambda: client.core4.sys_role.update_many(
                            {}, {"$set": {"perm": ["cop"]}}),
                        lambda: client.list_database_names()):
            with pytest.raises(pymongo.errors.OperationFailure) as info:
                attempt()
            assert info.value.code in (13, 18), info.value
    finally:
        client.close()


@pytest.fixture
def data_dir(tmp_path):
    path = str(tmp_path / "mongo")
    yield path
    embedded.stop_server(path)


def test_embedded_server_is_private_and_refuses_strangers(data_dir):
    url = embedded.ensure_server(data_dir)
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=10000)
    try:
        client.core4.sys_role.insert_one({"_id": "mine"})
        assert client.core4.sys_role.find_one({"_id": "mine"})
    finally:
        client.close()
    assert_private(data_dir)
    assert {"server.json", "credentials.json", "core4.db"} <= set(
        os.listdir(data_dir))
    # a local account that knows the port but not the password
    assert_refused(without_credentials(url))
    credentials = nxauth.read_credentials(data_dir)
    assert_refused(url.replace(credentials["password"], "guessed"))
    # the password is nowhere another account could read it
    state = embedded.server_status(data_dir)
    assert credentials["password"] not in state["url"]
    cmdline = " ".join(psutil.Process(state["pid"]).cmdline())
    assert credentials["password"] not in cmdline


def test_older_data_dir_and_open_server_are_fixed_at_start(data_dir):
    url = embedded.ensure_server(data_dir)
    client = pymongo.MongoClient(url)
    client.core4.kept.insert_one({"_id": "kept"})
    client.close()
    embedded.stop_server(data_dir)
    # what an older core4 left: a 0755 directory of 0644 files, no
    # credentials, and a server it started without authentication
    os.remove(os.path.join(data_dir, nxauth.CREDENTIALS_FILE))
    os.chmod(data_dir, 0o755)
    for name in os.listdir(data_dir):
        os.chmod(os.path.join(data_dir, name), 0o644)
    port = free_port()
    with open(os.path.join(data_dir, "nx.out"), "wb") as out:
        old = subprocess.Popen(
            [sys.executable, "-c", OLD_NX_CODE, "--data-dir", data_dir,
             "--host", "127.0.0.1", "-p", str(port), "--pid-file",
             os.path.join(data_dir, "nx.pid"), "--log-file",
             os.path.join(data_dir, "nx.log")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=ROOT, start_new_session=True)
    try:
        wait_for(lambda: embedded.ping(port, 0.5), 60, 0.05,
                 "the old server to answer")
        with open(os.path.join(data_dir, "server.json"), "w") as handle:
            json.dump({"pid": old.pid, "port": port,
                       "url": "mongodb://127.0.0.1:%d/" % port,
                       "started_at": time.time(),
                       "python": sys.executable}, handle)
        open_url = "mongodb://127.0.0.1:%d/" % port
        assert pymongo.MongoClient(open_url).core4.kept.find_one()  # open

        url = embedded.ensure_server(data_dir)
        assert old.wait(30) is not None  # the open server was replaced
        assert_private(data_dir)
        assert_refused(without_credentials(url))
        client = pymongo.MongoClient(url)
        assert client.core4.kept.find_one({"_id": "kept"})  # data kept
        client.close()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(10)


# signing secrets ------------------------------------------------------------------

def secrets_of(env):
    path = os.path.join(env["home"], SECRET_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        return json.load(handle)


def test_signing_secrets_leave_the_database_and_tokens_survive(servers):
    with isolated_env(servers, "private") as env:
        server = start_app_server(env)
        try:
            session = requests.Session()
            response = session.post(server.url + API + "/login", json={
                "username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
            assert response.status_code == 200, response.text
            token = response.json()["data"]["token"]
            assert session.cookies.get("core4_token")
        finally:
            stop_app_server(server)
        db = pymongo.MongoClient(env["url"])[env["database"]]
        assert db.sys_secret.count_documents({}) == 0
        stored = secrets_of(env)
        assert {"jwt", "cookie"} <= set(stored)

        # the state an older core4 left: the secrets in sys_secret only,
        # tokens and cookies signed with them in the users' hands
        os.remove(os.path.join(env["home"], SECRET_FILE))
        db.sys_secret.insert_many([{"_id": name, "value": stored[name]}
                                   for name in ("jwt", "cookie")])
        server = start_app_server(env)
        try:
            profile = server.request("GET", API + "/profile", token=token)
            assert profile.status_code == 200, profile.text
            by_cookie = session.get(server.url + API + "/profile",
                                    timeout=30)
            assert by_cookie.status_code == 200, by_cookie.text
            assert db.sys_secret.count_documents({}) == 0
            moved = secrets_of(env)
            assert {name: moved[name] for name in ("jwt", "cookie")} == {
                name: stored[name] for name in ("jwt", "cookie")}
        finally:
            stop_app_server(server)
        db.client.close()


def test_app_servers_of_one_home_agree_on_generated_secrets(core4_env):
    code = ("from core4.config import get_config; from core4.mongo import "
            "SystemCollections; from core4.api.secret import get_secrets; "
            "print(get_secrets(SystemCollections(get_config()))['jwt'])")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    answers = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        answers.add(out.strip())
    assert len(answers) == 1
    assert answers == {secrets_of({"home": core4_env.home})["jwt"]}


def test_signing_secrets_from_the_environment(core4_env, monkeypatch):
    from core4.api.secret import get_secrets
    from core4.config import get_config
    from core4.error import Core4ConfigurationError
    from core4.mongo import SystemCollections
    monkeypatch.setenv("CORE4_JWT_SECRET", "short")
    with pytest.raises(Core4ConfigurationError,
                       match="CORE4_JWT_SECRET must be at least 32"):
        get_secrets(SystemCollections(get_config()))
    given = {"jwt": "j" * 40, "cookie": "c" * 40}
    monkeypatch.setenv("CORE4_JWT_SECRET", given["jwt"])
    monkeypatch.setenv("CORE4_COOKIE_SECRET", given["cookie"])
    assert get_secrets(SystemCollections(get_config())) == given
    assert not os.path.exists(os.path.join(core4_env.home, SECRET_FILE))


def test_configured_url_with_a_password_file(data_dir, tmp_path, monkeypatch):
    """deploy/ gives the core4 user's password as a file (a Docker secret):
    CORE4_MONGO_USER and CORE4_MONGO_PASSWORD_FILE add it to a configured
    mongo_url without credentials; without them the server refuses."""
    from core4.config import get_config, reset_config
    from core4.error import Core4ConfigurationError
    from core4.mongo import connection
    url = embedded.ensure_server(data_dir)
    password = tmp_path / "mongo_core4_password"
    password.write_text(nxauth.read_credentials(data_dir)["password"] + "\n")
    local = tmp_path / "local.yaml"
    local.write_text("{}\n")
    monkeypatch.setenv("CORE4_CONFIG", str(local))
    monkeypatch.setenv("CORE4_OPTION_folder__home", str(tmp_path / "home"))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url",
                       without_credentials(url))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", "deployed")
    monkeypatch.delenv(connection.USER_ENV, raising=False)
    reset_config()
    try:
        with pytest.raises(pymongo.errors.OperationFailure):
            connection.SystemCollections(get_config()).queue.find_one()
        connection.close_clients()
        monkeypatch.setenv(connection.USER_ENV, nxauth.USER)
        monkeypatch.setenv(connection.PASSWORD_FILE_ENV, str(password))
        system = connection.SystemCollections(get_config())
        system.queue.insert_one({"_id": "deployed"})
        assert system.queue.find_one({"_id": "deployed"})
        connection.close_clients()
        monkeypatch.setenv(connection.PASSWORD_FILE_ENV,
                           str(tmp_path / "missing"))
        with pytest.raises(Core4ConfigurationError,
                           match="CORE4_MONGO_PASSWORD_FILE: cannot read"):
            connection.SystemCollections(get_config()).queue.find_one()
    finally:
        connection.close_clients()
        reset_config()
