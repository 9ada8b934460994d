"""Secret job arguments (issue 13, part 4): encrypted at rest, shown as
``***`` everywhere, clear only in the job process; keyed uniqueness hash;
key rotation; wrong and missing keys end the job in ``error``.

The raw collections are read with pymongo and searched byte by byte for
the clear secrets. The jobs of this module run in real workers (they
import it as ``tests.test_secrets``)."""

import hashlib
import secrets as random

import bson
import pytest

from core4.error import CoreJobExists, CoreJobInvalid
from core4.queue import secret
from core4.queue.job import CoreJob, args_hash
from core4.queue.launcher.runner import execute_claimed
from core4.queue import lifecycle
from core4.queue.queue import CoreQueue
from core4.queue.secret import Secret
from tests.support import wait_for, wait_state

QUAL = "tests.test_secrets."


def _report(key, **fields):
    from core4.config import get_config
    from core4.mongo import SystemCollections
    SystemCollections(get_config()).database()["s_report"].update_one(
        {"_id": key}, {"$set": fields}, upsert=True)


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


class SecretJob(CoreJob):
    """Uses its secret everywhere a leak could happen, then reports its
    digest (or fails with the secret in the exception)."""
    author = "test"
    secrets = ["api_key"]

    def execute(self, api_key, key="s", token=None, fail=False):
        self.logger.info("calling with api key %s", api_key)
        print("the key is", api_key, "and the token", token)
        self.progress(0.5, "using %s" % api_key, force=True)
        _report(key, digest=digest(api_key + (token or "")),
                types=[type(api_key).__name__, type(token).__name__])
        if fail:
            raise RuntimeError("the service rejected %s" % api_key)


class PlainJob(CoreJob):
    """A job without declared secrets (secrets given as Secret(...))."""
    author = "test"

    def execute(self, **kwargs):
        _report("plain", keys=sorted(kwargs))


def new_secret():
    return "sk-" + random.token_hex(12)


def stored():
    """The content of the secrets file of the test's core4 home."""
    from core4.config import get_config
    from core4.private import read_secrets, secret_file
    return read_secrets(secret_file(get_config()))


def secret_path():
    from core4.config import get_config
    from core4.private import secret_file
    return secret_file(get_config())


def assert_nowhere(db, *clear):
    """No sys_* collection holds any of ``clear`` (raw BSON bytes)."""
    for name in db.list_collection_names():
        if not name.startswith("sys_"):
            continue
        for doc in db[name].find({}):
            raw = bson.encode(doc)
            for text in clear:
                assert text.encode() not in raw, (name, doc)


@pytest.fixture
def queue(core4_env, monkeypatch):
    monkeypatch.delenv(secret.KEY_ENV, raising=False)
    return CoreQueue()


# enqueue, storage, display ----------------------------------------------------

def test_secret_value_and_bad_input():
    value = Secret("abc-123")
    assert str(value) == "***" and "abc" not in repr(value)
    assert value.get_secret_value() == "abc-123"
    with pytest.raises(CoreJobInvalid, match="Secret.. takes a string, got"):
        Secret(1234)
    with pytest.raises(CoreJobInvalid) as info:
        SecretJob(api_key=987654)
    assert str(info.value) == ("tests.test_secrets.SecretJob: secret "
                               "argument 'api_key' must be a string, got int")
    with pytest.raises(CoreJobInvalid, match="only top-level"):
        PlainJob(nested={"a": [Secret("hidden-value")]})
    with pytest.raises(CoreJobInvalid, match="takes no other keys"):
        PlainJob(token={"$secret": "x", "other": 1})

    class Bad(CoreJob):
        author = "test"
        secrets = "api_key"

        def execute(self, **kwargs):
            pass
    with pytest.raises(CoreJobInvalid, match="secrets must be a list"):
        Bad(api_key="x")
    job = SecretJob(api_key=None)  # an optional secret not given
    assert job.secret_names == frozenset()


def test_stored_encrypted_shown_masked_hash_unique(queue, db):
    api_key, token, other = new_secret(), new_secret(), new_secret()
    job = queue.enqueue(QUAL + "SecretJob", api_key=api_key,
                        token=Secret(token), key="a")
    plain = queue.enqueue(QUAL + "PlainJob", token={"$secret": other},
                          n=1)
    assert job.args["api_key"] == api_key  # the caller's object is clear
    doc = db.sys_queue.find_one({"_id": job._id})
    assert doc["args"] == {"api_key": "***", "token": "***", "key": "a"}
    assert sorted(doc["secret_args"]) == ["api_key", "token"]
    assert db.sys_queue.find_one({"_id": plain._id})["args"] == {
        "token": "***", "n": 1}
    assert_nowhere(db, api_key, token, other, digest(api_key),
                   hashlib.sha1(api_key.encode()).hexdigest())
    # generated at first use into the secrets file (never the database):
    # one encryption key and the HMAC key
    keys = stored()
    assert len(keys["job_keys"]) == 1 and len(keys["job_hash_key"]) == 64
    assert db.sys_secret.count_documents({}) == 0

    # uniqueness over the clear value
    with pytest.raises(CoreJobExists) as info:
        queue.enqueue(QUAL + "SecretJob", api_key=api_key,
                      token=Secret(token), key="a")
    assert api_key not in str(info.value) and "***" in str(info.value)
    fields = secret.seal_args(QUAL + "SecretJob", {
        "api_key": api_key, "token": {"$secret": token}, "key": "a"},
        SecretJob.secrets)  # without the class: the same document
    assert fields["_hash"] == doc["_hash"]
    assert fields["args"] == doc["args"]
    assert secret.seal_args("x.Y", {"n": 1}) == {
        "args": {"n": 1}, "_hash": args_hash({"n": 1})}
    again = queue.enqueue(QUAL + "SecretJob", api_key=new_secret(),
                          token=Secret(token), key="a")
    assert again._id != job._id

    # coco --detail, the API and events show ***
    detail = queue.detail(job._id)
    assert detail["args"]["api_key"] == "***"
    assert detail["secret_args"] == {"api_key": "***", "token": "***"}
    from core4.api.v1 import jobdoc
    shown = jobdoc.present(doc)
    assert shown["args"]["token"] == "***" and "_hash" not in shown
    assert api_key not in repr(shown) and doc["secret_args"]["api_key"] \
        not in repr(shown)
    assert db.sys_event.count_documents({"name": "enqueue_job"}) == 3


def test_decrypted_in_the_job_process_and_masked(queue, db):
    """execute_claimed is the job process' code: clear args for
    execute(), *** in its log records, output, progress and errors."""
    api_key = new_secret()
    job = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="ok",
                        fail=True)
    doc = lifecycle.claim_by_id(queue, job._id, "test@here")
    outcome = execute_claimed(doc, lambda: queue)
    report = db.s_report.find_one({"_id": "ok"})
    assert report["digest"] == digest(api_key)
    assert report["types"] == ["str", "NoneType"]
    assert outcome["state"] == "failed"
    assert "the service rejected ***" in outcome["error"]["exception"]
    assert api_key not in repr(outcome)
    lifecycle.apply_outcome(queue, doc, outcome)
    assert db.sys_queue.find_one({"_id": job._id})["prog"]["message"] == \
        "using ***"
    from core4.logger import flush_logging
    flush_logging()
    assert_nowhere(db, api_key)


def test_missing_key_ends_in_error(queue, db):
    api_key = new_secret()
    job = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="gone")
    from core4.config import get_config
    secret.set_stored_keys(get_config(), None)
    doc = lifecycle.claim_by_id(queue, job._id, "test@here")
    outcome = execute_claimed(doc, lambda: queue)
    assert outcome["state"] == "error"
    assert outcome["error"]["exception"] == (
        "job tests.test_secrets.SecretJob: cannot decrypt secret "
        "argument(s) api_key: no key here (neither CORE4_JOB_SECRET_KEY nor "
        "job.secret_key is set and the secrets file has no key)")
    assert outcome["error"]["traceback"] is None
    assert db.s_report.find_one({"_id": "gone"}) is None


def test_configured_key_wins_and_rotation_moves_to_it(queue, db,
                                                      monkeypatch):
    api_key = new_secret()
    first = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="1")
    before = stored()["job_keys"]
    configured = secret.generate_key()
    monkeypatch.setenv(secret.KEY_ENV, configured)
    second = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="2")
    tokens = {_id: db.sys_queue.find_one({"_id": _id})["secret_args"][
        "api_key"] for _id in (first._id, second._id)}
    assert secret.KeyRing([configured]).is_current(tokens[second._id])
    assert secret.KeyRing(before).is_current(tokens[first._id])
    # the stored key still decrypts; rotation re-encrypts with the
    # configured one and deletes the stored keys
    result = secret.rotate_key()
    assert result == {"source": "CORE4_JOB_SECRET_KEY", "unreadable": 0,
                      "sys_queue": 1, "sys_journal": 0}
    token = db.sys_queue.find_one({"_id": first._id})["secret_args"][
        "api_key"]
    assert secret.KeyRing([configured]).decrypt(token) == api_key
    assert "job_keys" not in stored() and "job_hash_key" in stored()
    monkeypatch.setenv(secret.KEY_ENV, "not-a-key")
    with pytest.raises(Exception, match="CORE4_JOB_SECRET_KEY: key 1 is not "
                       "a Fernet key"):
        queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="3")


# real workers -----------------------------------------------------------------

def test_worker_runs_rotated_secrets_and_nothing_leaks(queue, db,
                                                       start_worker):
    api_key, token, journaled = new_secret(), new_secret(), new_secret()
    ok = queue.enqueue(QUAL + "SecretJob", api_key=api_key,
                       token=Secret(token), key="w")
    bad = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="f",
                        fail=True, attempts=1)
    gone = queue.enqueue(QUAL + "SecretJob", api_key=journaled, key="j")
    queue.remove(gone._id)  # journaled with its token
    old = stored()["job_keys"]
    before = db.sys_journal.find_one({"_id": gone._id})["secret_args"]

    result = secret.rotate_key()
    assert result == {"source": "the secrets file", "unreadable": 0,
                      "sys_queue": 2, "sys_journal": 1}
    new = stored()["job_keys"]
    assert len(new) == 1 and new != old
    after = db.sys_journal.find_one({"_id": gone._id})["secret_args"]
    assert after != before
    assert secret.KeyRing(new).decrypt(after["api_key"]) == journaled
    assert db.sys_event.count_documents({"name": "rotate_key"}) == 1

    worker = start_worker()
    done = wait_state(db, ok._id, "complete", worker=worker)
    assert done["args"]["api_key"] == "***"
    assert db.s_report.find_one({"_id": "w"})["digest"] == digest(
        api_key + token)
    failed = wait_state(db, bad._id, "error", worker=worker)
    assert "the service rejected ***" in failed["last_error"]["exception"]
    assert any("***" in line for line in failed["last_error"]["traceback"])
    # the job's log records and output are stored
    wait_for(lambda: db.sys_stdout.find_one({"_id": bad._id}),
             message="output of the failed job")
    wait_for(lambda: db.sys_log.find_one(
        {"identifier": str(bad._id), "message": {"$regex": "^done"}}),
        message="log records of the failed job")
    out = db.sys_stdout.find_one({"_id": ok._id})["stdout"]
    assert "the key is *** and the token ***" in out, out
    assert db.sys_log.find_one({"identifier": str(ok._id),
                                "message": "calling with api key ***"})
    assert_nowhere(db, api_key, token, journaled)
    assert "Traceback" not in worker.output()


def test_wrong_key_ends_in_error_with_message(queue, db, start_worker,
                                              monkeypatch):
    monkeypatch.setenv(secret.KEY_ENV, secret.generate_key())
    api_key = new_secret()
    job = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="wrong")
    worker = start_worker(start_method="spawn",
                          CORE4_JOB_SECRET_KEY=secret.generate_key())
    doc = wait_state(db, job._id, "error", worker=worker)
    assert doc["last_error"]["exception"].startswith(
        "job tests.test_secrets.SecretJob: cannot decrypt secret argument "
        "'api_key': it was encrypted with a key not known here")
    assert doc["last_error"]["traceback"] is None
    assert db.s_report.find_one({"_id": "wrong"}) is None
    assert "Traceback" not in worker.output()
    assert_nowhere(db, api_key)


def test_coco_rotate_key(queue, db):
    import subprocess
    import sys
    from tests.support import worker_env
    api_key = new_secret()
    job = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="coco")
    token = db.sys_queue.find_one({"_id": job._id})["secret_args"]["api_key"]
    proc = subprocess.run(
        [sys.executable, "-m", "core4.script.coco", "--rotate-key"],
        capture_output=True, text=True, timeout=60, env=worker_env(),
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("rotated the key of the secrets file: 1 job(s) "
                           "in sys_queue and 0 in sys_journal re-encrypted\n")
    new = db.sys_queue.find_one({"_id": job._id})["secret_args"]["api_key"]
    assert new != token
    assert secret.keyring().decrypt(new) == api_key


def test_rest_api_stores_and_shows_masked(servers):
    """POST /job with {"$secret": ...}: the answer, the detail, the listing
    and the raw database show no clear secret."""
    from tests.appserver import (API, isolated_env, start_app_server,
                                 stop_app_server)
    api_key = new_secret()
    with isolated_env(servers, "secret") as env:
        server = start_app_server(env)
        try:
            response = server.request(
                "POST", API + "/job", token=server.admin, json={
                    "qual_name": "core4.queue.helper.job.DummyJob",
                    "args": {"sleep": 0, "token": {"$secret": api_key}}})
            assert response.status_code == 201, response.text
            job = response.json()["data"]
            assert job["args"] == {"sleep": 0, "token": "***"}
            detail = server.request("GET", API + "/job/%s" % job["_id"],
                                    token=server.admin)
            listing = server.request("GET", API + "/job",
                                     token=server.admin)
            for answer in (response, detail, listing):
                assert answer.status_code in (200, 201), answer.text
                assert api_key not in answer.text
                assert "***" in answer.text
            assert api_key not in server.output()
            assert_nowhere(server.db, api_key)
            stored = server.db.sys_queue.find_one({})
            assert stored["secret_args"]["token"].startswith("gAAAAA")
        finally:
            stop_app_server(server)


def test_secrets_handed_to_a_child_process(queue, db):
    """A job validated in a child process (the API's path for a name it
    does not know) gets its Secret values there as ``{"$secret": ...}``."""
    from core4.config import get_config
    from core4.queue.remote import validate_elsewhere
    token = new_secret()
    doc = validate_elsewhere(get_config(), QUAL + "PlainJob",
                             {"token": Secret(token), "n": 2})
    assert doc["args"]["token"] == "***" and doc["secret_args"]
    assert token.encode() not in bson.encode(doc)


def test_keys_of_an_older_core4_move_out_of_the_database(queue, db):
    """An older core4 kept the keys in sys_secret: the first use moves them
    into the secrets file (0600) and deletes them from the database; jobs
    encrypted before still run and their uniqueness hash still holds."""
    import os
    import stat
    api_key = new_secret()
    job = queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="old")
    keys = stored()
    # the state an older core4 left: the keys in the database, no file
    os.remove(secret_path())
    db.sys_secret.insert_one({"_id": secret.KEY_DOC,
                              "keys": keys["job_keys"],
                              "hash_key": keys["job_hash_key"]})
    doc = lifecycle.claim_by_id(queue, job._id, "test@here")
    outcome = execute_claimed(doc, lambda: queue)  # reads, moves the keys
    assert outcome["state"] == "complete", outcome
    assert db.s_report.find_one({"_id": "old"})["digest"] == digest(api_key)
    assert db.sys_secret.count_documents({}) == 0
    assert stored() == keys
    assert stat.S_IMODE(os.stat(secret_path()).st_mode) == 0o600
    with pytest.raises(CoreJobExists):  # the same HMAC key
        queue.enqueue(QUAL + "SecretJob", api_key=api_key, key="old")
    # idempotent: nothing left to move, nothing changes
    from core4.config import get_config
    assert secret.move_out_of_database(get_config()) == keys
    assert stored() == keys
