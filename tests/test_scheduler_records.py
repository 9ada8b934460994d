"""Tests of the scheduler's stored records (datetimes, readable from an
older database) and of two real ``coco --scheduler`` processes whose leader
is killed. The helpers and fixtures are those of tests/test_scheduler.py.
"""

import datetime
import os
import signal
import subprocess
import sys
import time

import pymongo

from core4.base import hostname
from core4.queue.scheduler.lease import RELEASED
from core4.queue.scheduler.scheduler import LEADER_ID
from tests.support import ROOT, wait_for, worker_env
from tests.test_scheduler import (  # noqa: F401 (db, make, logs: fixtures)
    HOURLY, at, db, dt, entries, logs, make, markers)


def test_stored_times_are_datetimes(db, make, core4_env):
    """Every time the scheduler and the registry store is a BSON datetime
    (what a plain pymongo client, Compass or a TTL index sees)."""
    from core4.queue.daemon import register
    sched = make(registry=entries(HOURLY))
    sched.step(at(2024, 1, 1, 0, 0, 30))
    sched.step(at(2024, 1, 1, 1, 0, 30))
    register(sched.sys, sched.identifier, sched.kind, sched.config)
    sched.heartbeat()
    plain = pymongo.MongoClient(core4_env.url)  # naive UTC datetimes
    try:
        raw = plain[core4_env.database]
        naive = datetime.datetime
        lease = raw.sys_schedule.find_one({"_id": LEADER_ID})
        assert isinstance(lease["until"], naive)
        assert isinstance(lease["since"], naive)
        since = naive(2024, 1, 1, 0, 0, 30)
        assert lease["since"] == since
        renewed = naive(2024, 1, 1, 1, 0, 30) + datetime.timedelta(
            seconds=sched.lease)
        assert datetime.timedelta(0) <= lease["until"] - renewed < \
            datetime.timedelta(seconds=sched.lease)
        marker = raw.sys_schedule.find_one({"_id": "%s@%d" % (
            HOURLY, at(2024, 1, 1, 1))})
        assert marker["state"] == "done"
        assert marker["fire"] == naive(2024, 1, 1, 1)
        assert marker["at"] == naive(2024, 1, 1, 1, 0, 30)
        for field in ("wall", "created", "finished"):
            assert isinstance(marker[field], naive), field
        assert marker["finished"] >= marker["at"]
        last = raw.sys_schedule.find_one({"_id": "last:" + HOURLY})
        assert last["at"] == naive(2024, 1, 1, 1)
        job = raw.sys_job.find_one({"_id": HOURLY})
        assert isinstance(job["updated_at"], naive)
        assert isinstance(job["created_at"], naive)
        assert isinstance(raw.sys_worker.find_one(
            {"_id": sched.identifier})["heartbeat"], naive)
        # queries by datetime, as a user writes them
        assert raw.sys_schedule.count_documents(
            {"fire": {"$gte": naive(2024, 1, 1, 0, 30)}}) == 1
        assert raw.sys_schedule.find_one(
            {"_id": LEADER_ID, "until": {"$gt": renewed - datetime.timedelta(
                seconds=1)}}) is not None
        sched._lease.release()
        assert raw.sys_schedule.find_one({"_id": LEADER_ID})["until"] == \
            naive(1970, 1, 1)
    finally:
        plain.close()


def test_epoch_times_of_an_old_database_are_read(db, make, logs):
    """A database not yet migrated (epoch seconds, as written before core4
    0.3) does not stop the scheduler."""
    t = at(2024, 1, 1, 5, 0, 30)
    db.sys_schedule.insert_one({"_id": LEADER_ID, "holder": "old@host",
                                "until": t + 5, "since": t - 100})
    db.sys_schedule.insert_one({"_id": "last:" + HOURLY,
                                "at": at(2024, 1, 1, 0, 0, 30),
                                "schedule": "0 * * * *", "timezone": "UTC"})
    sched = make(registry=entries(HOURLY))
    # the old leader's lease still lasts: it is kept
    assert not sched.step(t + 4.9)
    assert db.sys_schedule.find_one({"_id": LEADER_ID}) == {
        "_id": LEADER_ID, "holder": "old@host", "until": t + 5,
        "since": t - 100}
    # expired: taken over, and the job catches up from its last fire time
    assert sched.step(t + 5.5)
    lease = db.sys_schedule.find_one({"_id": LEADER_ID})
    assert lease["holder"] == sched.identifier
    assert lease["since"] == dt(2024, 1, 1, 5, 0, 35, 500000)
    assert list(markers(db)) == [int(at(2024, 1, 1, 5))]
    assert logs.count("coalesce into one run") == 1
    assert db.sys_schedule.find_one({"_id": "last:" + HOURLY})["at"] == \
        dt(2024, 1, 1, 5)


# real processes ------------------------------------------------------------

class SchedulerProcess:
    """A real ``coco --scheduler NAME`` process."""

    def __init__(self, name, env, log_dir):
        self.name = name
        self.identifier = "%s@%s" % (name, hostname())
        self.log_path = os.path.join(log_dir, "scheduler-%s.log" % name)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core4.script.coco", "--scheduler", name],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True)

    def output(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def _holder(db):
    return (db.sys_schedule.find_one({"_id": LEADER_ID}) or {}).get("holder")


def test_processes_standby_takes_over_after_kill(db, core4_env, tmp_path):
    env = worker_env(CORE4_OPTION_scheduler__lease="!!float 2",
                     CORE4_OPTION_scheduler__interval="!!float 0.2")
    started = [SchedulerProcess(name, env, str(tmp_path))
               for name in ("sa", "sb", "sc")]
    try:
        for proc in started:
            wait_for(lambda: db.sys_worker.find_one(
                {"_id": proc.identifier, "kind": "scheduler",
                 "phase": "loop"}), 30,
                message="%s to start:\n%s" % (proc.name, proc.output()))
        holder = wait_for(lambda: _holder(db), 10, message="a leader")
        time.sleep(0.5)
        assert _holder(db) == holder  # stable while the leader lives
        leader = next(p for p in started if p.identifier == holder)
        # kill -9: a standby takes over within lease + interval
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        killed = time.monotonic()
        holder = wait_for(lambda: _holder(db) != leader.identifier and
                          _holder(db), 10, interval=0.02,
                          message="a standby to take over")
        took = time.monotonic() - killed
        assert took < 2 + 0.2 + 1.0, took
        second = next(p for p in started if p.identifier == holder)
        assert "leading" in second.output()
        # SIGTERM: the leader gives the lease up, the last one leads at once
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(10) == 0
        killed = time.monotonic()
        third = next(p for p in started if p not in (leader, second))
        wait_for(lambda: _holder(db) == third.identifier, 5, interval=0.02,
                 message="the last standby to take over")
        assert time.monotonic() - killed < 1.0
        assert db.sys_worker.find_one({"_id": second.identifier})[
            "phase"] == "exit"
        # coco --halt stops it, and it gives the lease up
        subprocess.run([sys.executable, "-m", "core4.script.coco", "--halt"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
        assert third.proc.wait(15) == 0
        assert db.sys_worker.find_one({"_id": third.identifier})[
            "phase"] == "exit"
        assert db.sys_schedule.find_one({"_id": LEADER_ID})["until"] == \
            RELEASED
    finally:
        for proc in started:
            proc.stop()
