"""The protocol between a worker and its launcher: a launcher says which
version it speaks when it is ready; from version 2 on, a worker sends a
job's document as BSON, and a launcher still takes the extended JSON of a
worker of version 1 (a project's virtualenv may hold another core4).
Real fork launchers."""

import datetime

import pytest
from bson import Int64, ObjectId, json_util

from core4.queue.job import CoreJob
from core4.queue.launcher.launcher import ForkLauncher
from core4.queue.launcher.process import (command_doc, encode_bson,
                                          encode_doc)
from core4.queue.launcher.server import PROTOCOL
from core4.queue.queue import CoreQueue
from tests.support import worker_env
from tests.test_prime import run

AT = datetime.datetime(2026, 12, 7, 21, 30, 15, 123000,
                       tzinfo=datetime.timezone.utc)
ARGS = {"at": AT, "big": Int64(2 ** 40), "oid": ObjectId(),
        "nested": {"list": [1, "zwei", 3.5, None, True]}, "text": "Grüße"}


class ArgsJob(CoreJob):
    """Writes its arguments and the type of its enqueue time to
    ``marker`` as extended JSON."""
    author = "test"

    def execute(self, marker, **kwargs):
        seen = dict(kwargs, enqueued_at=type(self.enqueued["at"]).__name__)
        with open(marker, "w") as handle:
            handle.write(json_util.dumps(
                seen, json_options=json_util.CANONICAL_JSON_OPTIONS))


def test_a_document_reads_the_same_from_bson_and_extended_json():
    doc = dict(ARGS, _id=ObjectId())
    from_bson = command_doc({"bson": encode_bson(doc)})
    from_json = command_doc({"doc": encode_doc(doc)})
    assert from_bson == from_json == doc
    assert from_bson["at"].tzinfo is not None
    assert from_bson["at"] == AT


@pytest.fixture
def launcher():
    launcher = ForkLauncher(env=worker_env())
    yield launcher
    launcher.close()


def ran_with(launcher, db, tmp_path, tag, protocol=None):
    """Run an :class:`ArgsJob` with ``ARGS`` (after forcing the worker's
    side of the protocol to ``protocol``); return what it saw."""
    if protocol is not None:
        launcher.protocol = protocol
    marker = tmp_path / tag
    _id = CoreQueue().enqueue(__name__ + ".ArgsJob", marker=str(marker),
                              **ARGS)._id
    doc = db.sys_queue.find_one({"_id": _id})
    doc.update(state="running", locked={"token": "t-%s" % _id})
    run(launcher, doc, tmp_path)
    return json_util.loads(marker.read_text(), json_options=json_util.
                           CANONICAL_JSON_OPTIONS.with_options(
                               tz_aware=True,
                               tzinfo=datetime.timezone.utc))


def test_a_launcher_says_its_protocol_and_takes_bson(launcher, core4_env,
                                                      db, tmp_path):
    ran_with(launcher, db, tmp_path, "first")  # (the launcher says ready)
    assert launcher.protocol == PROTOCOL == 2
    seen = ran_with(launcher, db, tmp_path, "second")
    assert seen.pop("enqueued_at") == "datetime"
    assert seen == ARGS


def test_a_worker_of_protocol_1_is_still_served(launcher, core4_env, db,
                                                tmp_path):
    ran_with(launcher, db, tmp_path, "first")
    seen = ran_with(launcher, db, tmp_path, "second", protocol=1)
    assert seen.pop("enqueued_at") == "datetime"
    assert seen == ARGS
