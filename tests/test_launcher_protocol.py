"""The protocol between a worker and its launcher: a launcher says which
version it speaks when it is ready; from version 2 on, a worker sends a
job's document as BSON (and both forms until the launcher said it is
ready), to a launcher that names no version extended JSON, and a launcher
takes either. A project's virtualenv may hold another core4 than its
worker. Real fork launchers, and a real process that speaks the
launcher's side of the protocol as an older or a newer core4 would."""

import datetime
import json
import os
import sys
import textwrap

import bson
import pytest
from bson import Int64, ObjectId
from bson.codec_options import CodecOptions

from core4.queue.job import CoreJob
from core4.queue.launcher.launcher import ForkLauncher
from core4.queue.launcher.process import (command_doc, encode_bson,
                                          encode_doc)
from core4.queue.launcher.server import PROTOCOL
from core4.queue.queue import CoreQueue
from tests.support import wait_for, worker_env
from tests.test_prime import run

AT = datetime.datetime(2026, 12, 7, 21, 30, 15, 123000,
                       tzinfo=datetime.timezone.utc)
ARGS = {"at": AT, "big": Int64(2 ** 40), "oid": ObjectId(),
        "nested": {"list": [1, "zwei", 3.5, None, True]}, "text": "Grüße",
        "query": {"$regex": "^a", "$date": "not a date"}}
#: the types a job sees, by argument
TYPES = {"at": "datetime", "big": "Int64", "oid": "ObjectId",
         "nested": "dict", "text": "str", "query": "dict"}


class ArgsJob(CoreJob):
    """Writes its arguments, their types and the time zones of its times
    to ``marker`` as BSON."""
    author = "test"

    def execute(self, marker, **kwargs):
        seen = {"args": kwargs,
                "types": {k: type(v).__name__ for k, v in kwargs.items()},
                "zones": [str(kwargs["at"].tzinfo),
                          str(self.enqueued["at"].tzinfo)]}
        with open(marker, "wb") as handle:
            handle.write(bson.encode(seen))


def test_a_document_reads_the_same_from_bson_and_extended_json():
    doc = dict(ARGS, _id=ObjectId())
    del doc["query"]  # (see the next test)
    from_bson = command_doc({"bson": encode_bson(doc)})
    from_json = command_doc({"doc": encode_doc(doc)})
    assert from_bson == from_json == doc
    assert from_bson["at"].tzinfo is not None and from_bson["at"] == AT
    assert type(from_bson["big"]) is type(from_json["big"]) is Int64


def test_bson_keeps_what_extended_json_reads_as_types():
    """A sub-document with keys like ``$regex`` stays one in BSON;
    extended JSON turns it into a value of that type."""
    doc = {"query": {"$regex": "^a"}}
    assert command_doc({"bson": encode_bson(doc)}) == doc
    assert command_doc({"doc": encode_doc(doc)}) != doc
    assert command_doc({"bson": encode_bson(doc), "doc": "{}"}) == doc


@pytest.fixture
def launcher():
    launcher = ForkLauncher(env=worker_env())
    yield launcher
    launcher.close()


def ran_with(launcher, db, tmp_path, tag):
    """Run an :class:`ArgsJob` with ``ARGS``; return what it saw."""
    marker = tmp_path / tag
    _id = CoreQueue().enqueue(__name__ + ".ArgsJob", marker=str(marker),
                              **ARGS)._id
    doc = db.sys_queue.find_one({"_id": _id})
    doc.update(state="running", locked={"token": "t-%s" % _id})
    run(launcher, doc, tmp_path)
    return bson.decode(marker.read_bytes(), codec_options=CodecOptions(
        tz_aware=True, tzinfo=datetime.timezone.utc))


def test_a_job_sees_its_document_alike_before_and_after_ready(
        launcher, core4_env, db, tmp_path):
    """The first job goes before the launcher said it is ready (both
    forms), the second as BSON: each sees the same arguments, of the same
    types, and aware UTC times."""
    assert launcher.protocol is None
    first = ran_with(launcher, db, tmp_path, "first")
    assert launcher.protocol == PROTOCOL == 2
    second = ran_with(launcher, db, tmp_path, "second")
    for seen in (first, second):
        assert seen["args"] == ARGS
        assert seen["types"] == TYPES
        assert seen["zones"] == ["UTC", "UTC"]


def test_a_worker_of_protocol_1_is_still_served(launcher, core4_env, db,
                                                tmp_path):
    ran_with(launcher, db, tmp_path, "first")
    launcher.protocol = 1  # (as a worker of an older core4 speaks)
    seen = ran_with(launcher, db, tmp_path, "second")
    assert seen["types"]["at"] == "datetime"
    assert seen["zones"] == ["UTC", "UTC"]


RECORDER = textwrap.dedent('''
    """Speaks a launcher's side of the protocol: says it is ready (naming
    the version given, if any) and writes each command it gets to a file;
    exits when stdin closes."""
    import json, os, sys
    ready = {"event": "ready", "pid": os.getpid()}
    if os.environ["RECORD_PROTOCOL"]:
        ready["protocol"] = int(os.environ["RECORD_PROTOCOL"])
    sys.stdout.write(json.dumps(ready) + "\\n")
    sys.stdout.flush()
    with open(os.environ["RECORD_TO"], "a") as out:
        for line in sys.stdin:
            out.write(line)
            out.flush()
''')


@pytest.mark.parametrize("says, sent", [("", {"doc"}), ("2", {"bson"}),
                                         ("3", {"bson"})])
def test_a_worker_sends_what_its_launcher_says_it_takes(tmp_path, says,
                                                        sent):
    """A launcher that names no version (an older core4) gets extended JSON
    only, one of version 2 or later BSON only."""
    (tmp_path / "core4" / "queue" / "launcher").mkdir(parents=True)
    for package in ("core4", "core4/queue"):
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "core4/queue/launcher/__init__.py").write_text("")
    (tmp_path / "core4/queue/launcher/__main__.py").write_text(RECORDER)
    record = tmp_path / "commands"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), RECORD_TO=str(record),
               RECORD_PROTOCOL=says)
    launcher = ForkLauncher(python=sys.executable, env=env, isolated=True)
    doc = {"_id": ObjectId(), "name": "core4.queue.helper.job.DummyJob",
           "at": AT}
    try:
        launcher.start(doc, "out", "result")
        wait_for(lambda: launcher.poll() is not None and
                 launcher.protocol is not None, 30,
                 message="the launcher's ready event")
        launcher.start(dict(doc, _id=ObjectId()), "out", "result")
        commands = wait_for(
            lambda: record.exists() and len(
                record.read_text().splitlines()) == 2 and
            [json.loads(line) for line in record.read_text().splitlines()],
            30, message="both commands")
    finally:
        launcher.close()
    assert {"doc", "bson"} <= set(commands[0])  # (before it said)
    assert {"doc", "bson"} & set(commands[1]) == sent
    assert command_doc(commands[1]) == {**doc, "_id": command_doc(
        commands[1])["_id"]}
