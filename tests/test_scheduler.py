"""Tests of the scheduler (core4/queue/scheduler/).

Most tests drive :meth:`CoreScheduler.step` with a controlled clock (no
real waiting) and a registry function returning the entries of the jobs in
tests/sjobs; no worker runs, so a test "drains" the queue where a worker
would have run the job. tests/test_scheduler_records.py has the stored
records and two real ``coco --scheduler`` processes.
"""

import datetime
import logging
import time
import zoneinfo

import croniter
import pytest

from core4.config import get_config, reset_config
from core4.error import Core4UserError
from core4.mongo import now as wall_now, seconds, to_datetime
from core4.queue.registry import collect, describe
from core4.queue.scheduler.schedule import due, fire_times
from core4.queue.scheduler.scheduler import CoreScheduler, LEADER_ID
from tests.sjobs import jobs

J = "tests.sjobs.jobs."
HOURLY, TWO_HOURLY, MINUTELY, DAILY = (
    J + "HourlyJob", J + "TwoHourlyJob", J + "MinutelyJob", J + "DailyJob")
UTC = datetime.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(*args, tz=UTC):
    """Epoch seconds of a wall time in ``tz``."""
    return datetime.datetime(*args, tzinfo=tz).timestamp()


def dt(*args, tz=UTC):
    """A wall time in ``tz`` as stored: an aware UTC datetime."""
    return datetime.datetime(*args, tzinfo=tz).astimezone(UTC)


def croniter_times(expression, start, end, tz=UTC):
    """Fire times in (start, end] by plain forward croniter iteration."""
    it = croniter.croniter(expression, datetime.datetime.fromtimestamp(
        start, tz))
    result = []
    while True:
        fire = it.get_next(datetime.datetime).timestamp()
        if fire > end:
            return result
        result.append(int(fire))


# fixtures ------------------------------------------------------------------

@pytest.fixture
def db(core4_env):
    client = core4_env.client()
    yield client[core4_env.database]
    client.close()


class Records(logging.Handler):
    """The scheduler's log records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level=logging.DEBUG):
        return "\n".join(r.getMessage() for r in self.records
                         if r.levelno >= level)

    def count(self, fragment, level=logging.DEBUG):
        return sum(1 for r in self.records
                   if r.levelno >= level and fragment in r.getMessage())


@pytest.fixture
def logs():
    logger = logging.getLogger("core4.queue.scheduler.CoreScheduler")
    handler = Records()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


ENTRIES = {e["_id"]: e for e in collect("tests.sjobs")}


def entries(*names, **schedules):
    """Registry entries of the tests/sjobs jobs ``names``; ``schedules``
    maps class names to another schedule."""
    result = [dict(ENTRIES[name]) for name in names]
    for entry in result:
        short = entry["_id"].rsplit(".", 1)[1]
        if short in schedules:
            entry["schedule"] = schedules[short]
    return result


@pytest.fixture
def make(core4_env, monkeypatch):
    """``make(name, registry, **options)``: a scheduler with
    ``scheduler.<option>`` set; ``registry`` is a list (read at each
    refresh, so a test may change it) or a function."""

    def make(name="s", registry=(), **options):
        for key, value in options.items():
            monkeypatch.setenv("CORE4_OPTION_" + key.replace(".", "__"),
                               value)
        reset_config()
        source = registry if callable(registry) else (lambda: list(registry))
        return CoreScheduler(name, get_config(), registry=source)

    return make


def markers(db, name=None):
    """{fire epoch: marker} of the fire-time markers (of job ``name``)."""
    query = {"fire": {"$exists": True}}
    if name:
        query["name"] = name
    return {int(to_datetime(doc["fire"]).timestamp()): doc
            for doc in db.sys_schedule.find(query)}


def drain(db):
    """What a worker would do: the queued jobs ran and left the queue."""
    db.sys_queue.delete_many({})


def run(sched, db, start, end, every, empty=True):
    """Step ``sched`` from ``start`` to ``end`` every ``every`` seconds."""
    t = start
    while t <= end:
        sched.step(t)
        if empty:
            drain(db)
        t += every


# pure fire-time logic ------------------------------------------------------

@pytest.mark.parametrize("expression,span", [
    ("0 * * * *", 6 * 3600), ("0 */2 * * *", 9 * 3600),
    ("* * * * *", 900), ("0 0 * * *", 5 * 86400), ("*/7 13 * * 1-5",
                                                   14 * 86400)])
@pytest.mark.parametrize("tz", [UTC, BERLIN])
def test_fire_times_are_croniters(expression, span, tz):
    start = at(2024, 3, 29, 22, 59, 30)  # spans a DST change in Berlin
    end = start + span
    expected = croniter_times(expression, start, end, tz)
    got = [int(f.timestamp()) for f in fire_times(expression, start, end,
                                                  tz)]
    assert got == expected and got
    for limit in (1, 2, 5):
        got = [int(f.timestamp()) for f in fire_times(
            expression, start, end, tz, limit=limit)]
        assert got == expected[-limit:]
    assert fire_times(expression, end, end, tz) == []


def test_fire_times_limit_is_cheap_on_long_gaps():
    start = at(2024, 1, 1)
    began = time.monotonic()
    fires = fire_times("* * * * * *", start, start + 365 * 86400, limit=100)
    assert len(fires) == 100 and time.monotonic() - began < 1.0
    assert fires[-1].timestamp() == start + 365 * 86400


def test_due_policies():
    last, now = at(2024, 1, 1, 0, 0, 30), at(2024, 1, 1, 5, 0, 30)
    coalesce = due("0 * * * *", last, now, "coalesce")
    assert [f.hour for f in coalesce.fires] == [5] and coalesce.dropped
    every = due("0 * * * *", last, now, "all")
    assert [f.hour for f in every.fires] == [1, 2, 3, 4, 5]
    assert not every.dropped
    skip = due("0 * * * *", last, now, "skip", tolerance=11)
    assert skip.fires == [] and skip.newest.hour == 5 and skip.dropped
    on_time = due("0 * * * *", at(2024, 1, 1, 4, 59, 59), now, "skip",
                  tolerance=31)
    assert [f.hour for f in on_time.fires] == [5]
    bounded = due("* * * * *", last, now, "all", limit=100)
    assert len(bounded.fires) == 100 and bounded.dropped
    assert due("0 * * * *", last, last + 60, "coalesce").fires == []


def test_invalid_time_zone_and_policy(make):
    with pytest.raises(Core4UserError, match="time zone"):
        make(scheduler__timezone="Mars/Olympus")
    with pytest.raises(Core4UserError, match="catchup"):
        make(scheduler__timezone="UTC", scheduler__catchup="sometimes")


# firing with a controlled clock --------------------------------------------

@pytest.mark.parametrize("name,start,span,every", [
    (HOURLY, at(2024, 1, 1, 0, 0, 30), 5 * 3600, 90),
    (TWO_HOURLY, at(2024, 1, 1, 0, 30), 7 * 3600, 110),
    (MINUTELY, at(2024, 1, 1, 23, 55, 10), 10 * 60, 7),
])
def test_fires_exactly_when_croniter_says(db, make, name, start, span,
                                          every):
    sched = make(registry=entries(name))
    run(sched, db, start, start + span, every)
    found = markers(db, name)
    expected = croniter_times(ENTRIES[name]["schedule"], start,
                              start + span - (span % every))
    assert sorted(found) == expected
    assert {m["state"] for m in found.values()} == {"done"}
    assert len({m["job_id"] for m in found.values()}) == len(expected)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_day_boundary(db, make, logs, tz):
    sched = make(registry=entries(DAILY), scheduler__timezone=tz)
    zone = zoneinfo.ZoneInfo(tz)
    assert sched.step(at(2024, 6, 30, 23, 59, 30, tz=zone))
    assert markers(db) == {}
    sched.step(at(2024, 7, 1, 0, 0, 30, tz=zone))
    assert list(markers(db)) == [int(at(2024, 7, 1, tz=zone))]
    sched.step(at(2024, 7, 1, 0, 1, 30, tz=zone))
    sched.step(at(2024, 7, 1, 23, 59, 59, tz=zone))
    assert len(markers(db)) == 1
    assert db.sys_queue.count_documents({"name": DAILY}) == 1


def test_new_job_starts_from_now(db, make):
    sched = make(registry=entries(HOURLY))
    sched.step(at(2024, 1, 1, 0, 59, 59))
    last = db.sys_schedule.find_one({"_id": "last:" + HOURLY})
    assert last["at"] == dt(2024, 1, 1, 0, 59, 59)
    assert last["schedule"] == "0 * * * *" and last["timezone"] == "UTC"
    sched.step(dt(2024, 1, 1, 1, 0, 0))  # a datetime is taken as well
    assert list(markers(db)) == [int(at(2024, 1, 1, 1))]
    assert db.sys_schedule.find_one(
        {"_id": "last:" + HOURLY})["at"] == dt(2024, 1, 1, 1)


# catch-up ------------------------------------------------------------------

def _gap(db, sched, logs):
    """Seen at 00:00:30, down until 05:00:30 (01:00 ... 05:00 missed)."""
    sched.step(at(2024, 1, 1, 0, 0, 30))
    sched.step(at(2024, 1, 1, 5, 0, 30))


def test_catchup_coalesce(db, make, logs):
    sched = make(registry=entries(HOURLY))
    _gap(db, sched, logs)
    assert list(markers(db)) == [int(at(2024, 1, 1, 5))]
    assert logs.count("coalesce into one run") == 1


def test_catchup_skip(db, make, logs):
    sched = make(registry=entries(HOURLY), scheduler__catchup="skip")
    _gap(db, sched, logs)
    assert markers(db) == {}
    assert logs.count("skipped (catch-up skip)") == 1
    sched.step(at(2024, 1, 1, 6, 0, 1))  # on time again
    assert list(markers(db)) == [int(at(2024, 1, 1, 6))]


def test_catchup_all_runs_each_missed_fire_time_in_turn(db, make, logs):
    sched = make(registry=entries(HOURLY), scheduler__catchup="all")
    _gap(db, sched, logs)
    # one run at a time: the next waits until the previous left the queue
    assert list(markers(db)) == [int(at(2024, 1, 1, 1))]
    sched.step(at(2024, 1, 1, 5, 0, 31))
    assert len(markers(db)) == 1 and logs.count("waits until") == 1
    for second in range(32, 40):
        drain(db)
        sched.step(at(2024, 1, 1, 5, 0, second))
    found = markers(db)
    assert sorted(found) == [int(at(2024, 1, 1, h)) for h in range(1, 6)]
    assert {m["state"] for m in found.values()} == {"done"}


def test_catchup_per_job_from_config(db, make, logs):
    sched = make(registry=entries(HOURLY, TWO_HOURLY),
                 scheduler__catchup="skip",
                 tests__sjobs__jobs__HourlyJob__catchup="coalesce",
                 tests__sjobs__jobs__TwoHourlyJob__catchup="often")
    sched.step(at(2024, 1, 1, 0, 0, 30))
    assert "unknown catchup 'often'" in logs.text(logging.ERROR)
    sched.step(at(2024, 1, 1, 5, 0, 30))
    assert list(markers(db, HOURLY)) == [int(at(2024, 1, 1, 5))]
    # an unknown policy falls back to coalesce
    assert list(markers(db, TWO_HOURLY)) == [int(at(2024, 1, 1, 4))]


# registry ------------------------------------------------------------------

def test_changed_removed_and_new_schedules(db, make, logs):
    registry = entries(HOURLY)
    sched = make(registry=registry)
    sched.step(at(2024, 1, 1, 0, 0, 30))
    # changed: applies at the next refresh (30 s), from then on
    registry[0] = dict(registry[0], schedule="15 * * * *")
    sched.step(at(2024, 1, 1, 0, 0, 45))
    assert sched.entries[HOURLY]["schedule"] == "0 * * * *"
    sched.step(at(2024, 1, 1, 0, 10))
    assert sched.entries[HOURLY]["schedule"] == "15 * * * *"
    assert logs.count("0 * * * * -> 15 * * * *") == 1
    sched.step(at(2024, 1, 1, 0, 15, 5))
    sched.step(at(2024, 1, 1, 1, 0, 5))
    assert list(markers(db)) == [int(at(2024, 1, 1, 0, 15))]
    # a new job starts from now; a removed one no longer fires
    registry[:] = entries(MINUTELY)
    sched.step(at(2024, 1, 1, 1, 0, 40))
    drain(db)
    sched.step(at(2024, 1, 1, 1, 1, 10))
    sched.step(at(2024, 1, 1, 1, 15, 10))
    assert sorted(markers(db)) == [int(at(2024, 1, 1, 0, 15)),
                                   int(at(2024, 1, 1, 1, 1)),
                                   int(at(2024, 1, 1, 1, 15))]
    assert logs.count("-> None") == 1


def test_broken_module_keeps_previous_schedules(db, make, logs):
    registry = entries(HOURLY)
    sched = make(registry=registry)
    sched.step(at(2024, 1, 1, 0, 0, 30))
    registry[:] = [{"_id": "tests.sjobs.jobs", "name": "tests.sjobs.jobs",
                    "project": "tests", "valid": False, "schedule": None,
                    "exception": "cannot import: SyntaxError"}]
    sched.step(at(2024, 1, 1, 1, 0, 10))
    assert list(markers(db)) == [int(at(2024, 1, 1, 1))]
    assert logs.count("keeping the schedule", logging.ERROR) == 1


def test_invalid_cron_is_logged_once_and_others_fire(db, make, logs):
    bad = describe(jobs.BadCronJob)  # what coco --jobs shows
    assert not bad["valid"] and "cron" in bad["exception"]
    unchecked = dict(ENTRIES[TWO_HOURLY], _id=J + "Unchecked",
                     name=J + "Unchecked", schedule="every hour")
    sched = make(registry=lambda: list(ENTRIES.values()) + [unchecked])
    run(sched, db, at(2024, 1, 1, 0, 0, 30), at(2024, 1, 1, 2, 0, 30), 60)
    errors = logs.text(logging.ERROR)
    assert logs.count("BadCronJob (schedule '61 * * * *') is invalid") == 1
    assert logs.count("invalid cron expression 'every hour'") == 1
    assert "PlainJob" not in errors
    assert int(at(2024, 1, 1, 1)) in markers(db, HOURLY)
    assert len(markers(db, MINUTELY)) == 120
    assert markers(db, J + "BadCronJob") == {}
    assert db.sys_job.find_one({"_id": J + "BadCronJob"})["valid"] in (
        False, 0)


def test_previous_run_still_queued_is_not_enqueued_twice(db, make, logs):
    sched = make(registry=entries(HOURLY))
    sched.step(at(2024, 1, 1, 0, 0, 30))
    sched.step(at(2024, 1, 1, 1, 0, 30))
    sched.step(at(2024, 1, 1, 2, 0, 30))  # no worker ran the 01:00 job
    found = markers(db)
    assert found[int(at(2024, 1, 1, 1))]["state"] == "done"
    skipped = found[int(at(2024, 1, 1, 2))]
    assert skipped["state"] == "skipped"
    assert skipped["job_id"] == found[int(at(2024, 1, 1, 1))]["job_id"]
    assert db.sys_queue.count_documents({}) == 1
    assert logs.count("is still queued", logging.WARNING) == 1


# several schedulers ----------------------------------------------------------

def test_two_schedulers_enqueue_each_fire_time_once(db, make):
    registry = entries(HOURLY, MINUTELY)
    first, second = make("a", registry), make("b", registry)
    t, end = at(2024, 1, 1, 0, 0, 30), at(2024, 1, 1, 1, 0, 30)
    leaders = []
    while t <= end:
        leaders.append((first.step(t), second.step(t + 0.5)))
        drain(db)
        t += 13
    assert all(a != b for a, b in leaders)  # exactly one leads
    assert leaders[0] == (True, False)
    minutely = markers(db, MINUTELY)
    assert sorted(minutely) == croniter_times(
        "* * * * *", at(2024, 1, 1, 0, 0, 30), t - 13)
    assert len({m["job_id"] for m in minutely.values()}) == len(minutely)
    assert sorted(markers(db, HOURLY)) == [int(at(2024, 1, 1, 1))]


def test_standby_takes_over_within_one_lease(db, make, logs):
    registry = entries(MINUTELY)
    first, second = make("a", registry), make("b", registry)
    t = at(2024, 1, 1, 0, 0, 30)
    assert first.step(t) and not second.step(t)
    first.step(t + 1)  # the leader's last renewal, then it dies
    died = t + 1
    while not second.step(t):
        t += 1
        assert t <= died + first.lease + first.interval
    assert t > died + first.lease - 1
    doc = db.sys_schedule.find_one({"_id": LEADER_ID})
    assert doc["holder"] == second.identifier
    # the old leader, back from a stall, must not enqueue
    assert second.step(at(2024, 1, 1, 0, 1, 5))
    drain(db)
    assert second.step(at(2024, 1, 1, 0, 2, 0))
    drain(db)
    assert not first.step(at(2024, 1, 1, 0, 2, 5))
    assert not first.leader and logs.count("lost the lease") == 1
    assert second.step(at(2024, 1, 1, 0, 2, 6))
    assert sorted(markers(db)) == [int(at(2024, 1, 1, 0, 1)),
                                   int(at(2024, 1, 1, 0, 2))]
    assert {m["holder"] for m in markers(db).values()} == {
        second.identifier}


def test_interrupted_enqueue_is_completed_once(db, make, logs):
    sched = make(registry=entries(HOURLY))
    sched.step(at(2024, 1, 1, 0, 0, 30))
    fire = int(at(2024, 1, 1, 1))
    # as written before core4 0.3: times in epoch seconds
    marker = {"_id": "%s@%d" % (HOURLY, fire), "name": HOURLY, "fire": fire,
              "state": "enqueuing", "holder": "dead@host", "token": "x",
              "at": at(2024, 1, 1, 1, 0, 1), "wall": time.time()}
    db.sys_schedule.insert_one(marker)
    # a fresh marker: another scheduler may be enqueuing right now
    sched.step(at(2024, 1, 1, 1, 0, 2))
    assert db.sys_queue.count_documents({}) == 0
    # older than a lease: the dead leader's attempt is completed
    sched.step(at(2024, 1, 1, 1, 0, 20))
    done = markers(db)[fire]
    assert done["state"] == "done" and done["holder"] == sched.identifier
    assert db.sys_queue.count_documents({}) == 1
    assert logs.count("completing an interrupted enqueue") == 1
    # the dead leader did enqueue before it died: no second job
    fire = int(at(2024, 1, 1, 2))
    db.sys_schedule.insert_one(dict(
        marker, _id="%s@%d" % (HOURLY, fire), fire=dt(2024, 1, 1, 2),
        at=dt(2024, 1, 1, 2, 0, 1), wall=wall_now() - seconds(5)))
    drain(db)
    job = sched.queue.enqueue(HOURLY)
    sched.step(at(2024, 1, 1, 2, 0, 30))
    done = markers(db)[fire]
    assert done["state"] == "done" and done["job_id"] == job._id
    assert db.sys_queue.count_documents({}) == 1


def test_failed_enqueue_is_recorded(db, make, logs):
    missing = dict(ENTRIES[HOURLY], _id=J + "Gone", name=J + "Gone")
    sched = make(registry=[missing])
    sched.step(at(2024, 1, 1, 0, 0, 30))
    sched.step(at(2024, 1, 1, 1, 0, 30))
    failed = markers(db)[int(at(2024, 1, 1, 1))]
    assert failed["state"] == "failed" and "Gone" in failed["reason"]
    assert logs.count("cannot enqueue", logging.ERROR) == 1
    sched.step(at(2024, 1, 1, 1, 0, 31))
    assert len(markers(db)) == 1


def test_at_most_once_even_without_the_lease(db, make):
    """Markers, not the lease, make a fire time enqueued at most once."""
    registry = entries(HOURLY)
    first, second = make("a", registry), make("b", registry)
    first.step(at(2024, 1, 1, 0, 0, 30))
    first.step(at(2024, 1, 1, 1, 0, 30))
    drain(db)
    # both believe they lead and start from the same last fire time
    db.sys_schedule.delete_one({"_id": LEADER_ID})
    db.sys_schedule.update_one({"_id": "last:" + HOURLY},
                               {"$set": {"at": dt(2024, 1, 1, 0, 0, 30)}})
    assert second.step(at(2024, 1, 1, 1, 0, 31))
    assert db.sys_queue.count_documents({}) == 0
    assert list(markers(db)) == [int(at(2024, 1, 1, 1))]
    assert db.sys_schedule.find_one({"_id": "last:" + HOURLY})["at"] == \
        dt(2024, 1, 1, 1)


# stored times ----------------------------------------------------------------
