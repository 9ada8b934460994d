"""How an idle worker learns of work, how it claims it, and what happens to
the job of a worker that died: real ``coco --worker NAME`` processes (see
tests/support.py) on the session's NX-27017 server (fixture ``core4_env``).

* a change stream on sys_queue wakes an idle worker, and the timer of the
  earliest ``query_at`` runs a failed job again, with the fallback poll
  effectively off (``work_jobs`` and ``poll_max`` 60 s);
* without the change stream (``worker.change_stream: false``) the fallback
  poll finds the job;
* a worker with several free slots claims several jobs at once, never more
  than ``max_jobs``;
* a job whose worker was killed (``kill -9``) runs again at once on another
  worker, without using up an attempt; after ``max_lost`` losses it ends in
  ``error``.
"""


import pytest

from core4.base import hostname
from core4.mongo import now
from core4.queue.queue import CoreQueue
from tests.support import find_job, let_worker_cycle, wait_for, wait_state

JOBS = "tests.wjobs.jobs."
SLOW = "tests.cjobs.x.SlowJob"   # records each start and end in chaos_runs
RUNS = "chaos_runs"

#: the fallback poll effectively off: the first pause and the longest are
#: a minute, far longer than any wait below
NO_POLL = {
    "CORE4_OPTION_worker__execution_plan__work_jobs": "!!float 60",
    "CORE4_OPTION_worker__poll_max": "!!float 60",
}


# helpers ---------------------------------------------------------------------



def enqueue(name, **kwargs):
    """Enqueue a job of tests/wjobs (or a qualified name); return its id."""
    if "." not in name:
        name = JOBS + name
    return CoreQueue().enqueue(name, **kwargs)._id


def ident(name):
    return "%s@%s" % (name, hostname())


def secs(delta):
    return delta.total_seconds()


def logs(workers):
    """The output of ``workers``, for assertion messages."""
    return "\n".join("----- worker %s -----\n%s" % (w.name, w.output()[-4000:])
                     for w in workers)


def wait_journal(db, _id, timeout=20, workers=()):
    """Wait until job ``_id`` is in sys_journal; return its document."""
    try:
        return wait_for(lambda: db.sys_journal.find_one({"_id": _id}),
                        timeout, message="job %s in the journal" % _id)
    except AssertionError as exc:
        doc = find_job(db, _id) or {}
        raise AssertionError("%s; now %s, last_error %s\n%s" % (
            exc, doc.get("state"), doc.get("last_error"),
            logs(workers))) from None


def assert_stream_stayed_open(worker):
    """The change stream never failed: the fallback poll stayed at its
    60 s (without an open stream the worker polls every 5 s at most)."""
    out = worker.output()
    for sign in ("change stream off", "no change streams",
                 "change stream on "):   # ... lost / ... open again
        assert sign not in out, "%r in the log:\n%s" % (sign, out[-3000:])


def wait_start(db, job_id, count, timeout=20, workers=()):
    """Wait for the ``count``-th start of job ``job_id`` (in chaos_runs);
    return all its starts in order."""
    def started():
        starts = list(db[RUNS].find({"job": str(job_id), "kind": "start"})
                      .sort("at", 1))
        return starts if len(starts) >= count else None
    try:
        return wait_for(started, timeout, message="start %d of job %s" % (
            count, job_id))
    except AssertionError as exc:
        doc = find_job(db, job_id) or {}
        raise AssertionError("%s; now %s, last_error %s\n%s" % (
            exc, doc.get("state"), doc.get("last_error"),
            logs(workers))) from None


def by_ident(workers, identifier):
    """The worker of ``workers`` named by ``identifier`` (NAME@host)."""
    return next(w for w in workers if ident(w.name) == identifier)


# change stream and fallback poll ---------------------------------------------

def test_change_stream_wakes_an_idle_worker(db, start_worker):
    worker = start_worker("stream", **NO_POLL)
    # warm-up: the worker ran one job, then went idle (its next poll is a
    # minute away)
    warm_id = enqueue("PidJob", key="warm")
    wait_journal(db, warm_id, workers=[worker])
    let_worker_cycle(db, worker, beats=2)

    enqueued_at = now()
    _id = enqueue("PidJob", key="woken")
    doc = wait_journal(db, _id, timeout=15, workers=[worker])
    assert doc["state"] == "complete", doc.get("last_error")
    woken = secs(doc["started_at"] - enqueued_at)
    assert woken < 15, woken

    # a failed job runs again when its error_time has passed: the worker
    # waits for the earliest query_at, not for a poll
    retry_id = enqueue("FailJob", key="retry", attempts=2, error_time=3)
    failed = wait_state(db, retry_id, "failed", timeout=15, worker=worker)
    assert failed["trial"] == 1 and failed["attempts_left"] == 1
    assert secs(failed["query_at"] - failed["finished_at"]) == \
        pytest.approx(3, abs=0.01)
    done = wait_journal(db, retry_id, timeout=25, workers=[worker])
    assert done["state"] == "complete", done.get("last_error")
    assert done["trial"] == 2
    assert done["started_at"] >= failed["query_at"]
    retried = secs(done["started_at"] - failed["finished_at"])
    assert retried < 20, retried
    assert db.w_report.find_one({"_id": "retry"})["runs"] == 2

    assert_stream_stayed_open(worker)
    assert worker.proc.poll() is None, worker.output()[-2000:]
    print("\nchange stream: job started %.2f s after its enqueue; failed "
          "job retried %.2f s after the failure (error_time 3 s)" % (
              woken, retried))


def test_fallback_poll_without_change_stream(db, start_worker):
    worker = start_worker(
        "poller", CORE4_OPTION_worker__change_stream="!!bool false",
        CORE4_OPTION_worker__execution_plan__work_jobs="!!float 0.5",
        CORE4_OPTION_worker__poll_max="!!float 2")
    let_worker_cycle(db, worker, beats=2)   # idle: the poll backed off
    assert "change stream off (worker.change_stream): the worker polls " \
        "for jobs" in worker.output(), worker.output()[-2000:]

    enqueued_at = now()
    _id = enqueue("PidJob", key="polled")
    doc = wait_journal(db, _id, timeout=20, workers=[worker])
    assert doc["state"] == "complete", doc.get("last_error")
    polled = secs(doc["started_at"] - enqueued_at)
    assert polled < 20, polled
    assert worker.proc.poll() is None, worker.output()[-2000:]
    print("\nfallback poll: job started %.2f s after its enqueue" % polled)


# batched claims --------------------------------------------------------------

def test_batched_claims_fill_the_free_slots(db, start_worker):
    ids = [enqueue("SleepJob", key="batch%d" % n, secs=3) for n in range(8)]
    worker = start_worker("batch", wait=False,
                          CORE4_OPTION_worker__max_jobs="!!int 4")
    most = [0]

    def running():
        count = db.sys_queue.count_documents(
            {"state": "running", "locked.worker": ident("batch")})
        most[0] = max(most[0], count)
        assert most[0] <= 4, "%d jobs run at once" % most[0]
        return count >= 4
    wait_for(running, 30, message="4 jobs running\n" + worker.output())

    first = list(db.sys_queue.find({"state": "running"}))
    assert len(first) == 4
    assert {d["locked"]["worker"] for d in first} == {ident("batch")}
    # claimed in one go (one bulk write): one claim time for all four
    assert len({d["started_at"] for d in first}) == 1, [
        d["started_at"] for d in first]

    def all_done():
        running()
        # (not count_documents: on NX it counts no ObjectId filter)
        return len(list(db.sys_journal.find({"_id": {"$in": ids}},
                                            {"_id": 1}))) == 8
    try:
        wait_for(all_done, 60, message="the 8 jobs to end")
    except AssertionError as exc:
        raise AssertionError("%s: %s\n%s" % (exc, [
            (d["state"], d.get("trial"), d.get("last_error"))
            for d in db.sys_queue.find({"_id": {"$in": ids}})],
            worker.output()[-4000:])) from None
    docs = list(db.sys_journal.find({"_id": {"$in": ids}}))
    assert {d["state"] for d in docs} == {"complete"}
    assert most[0] == 4

    # never more than 4 at once, by the recorded run times
    edges = sorted([(d["started_at"], 1) for d in docs]
                   + [(d["finished_at"], -1) for d in docs],
                   key=lambda edge: (edge[0], edge[1]))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak == 4, edges


# lost jobs -------------------------------------------------------------------

def test_lost_job_runs_again_at_once_without_using_an_attempt(
        db, start_worker):
    pair = [start_worker("losta"), start_worker("lostb")]
    _id = enqueue(SLOW, attempts=1, error_time=600, sleep=6.0)
    start = wait_start(db, _id, 1, workers=pair)[0]
    start_worker.orphans.append(start["pid"])
    a = by_ident(pair, start["worker"])
    b = next(w for w in pair if w is not a)
    running = db.sys_queue.find_one({"_id": _id})
    assert running["state"] == "running"
    assert running["locked"]["worker"] == ident(a.name)

    a.kill9()
    killed_at = now()

    starts = wait_start(db, _id, 2, timeout=30, workers=pair)
    again = starts[1]
    start_worker.orphans.append(again["pid"])
    assert again["worker"] == ident(b.name), starts
    assert again["trial"] == 2
    done = wait_journal(db, _id, timeout=30, workers=pair)
    assert done["state"] == "complete", (done.get("last_error"), logs([b]))
    assert done["attempts_left"] == 0, "the loss used up an attempt"
    assert done["trial"] == 2
    assert done["lost"] == 1
    assert done["lost_by"] == [ident(a.name)]
    error = done["last_error"]["exception"]
    assert "worker %s lost (no heartbeat since" % ident(a.name) in error, \
        error
    # recovered once the lease ran out (lease + margin: 5 s), not after
    # error_time (600 s)
    recovered = secs(done["last_error"]["timestamp"] - killed_at)
    restarted = secs(done["started_at"] - killed_at)
    assert 0 < recovered < 15, recovered
    assert restarted < 20, restarted
    ends = list(db[RUNS].find({"job": str(_id), "kind": "end"}))
    assert [e["start"] for e in ends] == [again["_id"]], ends
    assert "recovered job [%s]" % _id in b.output()
    assert b.proc.poll() is None, logs([b])
    print("\nlost job: recovered %.2f s and running again %.2f s after the "
          "kill" % (recovered, restarted))


def test_max_lost_ends_in_error(db, start_worker):
    crew = [start_worker("maxl%d" % n) for n in range(3)]
    _id = enqueue(SLOW, attempts=1, max_lost=1, sleep=60.0)
    killed = []
    for loss in (1, 2):
        start = wait_start(db, _id, loss, timeout=30, workers=crew)[-1]
        start_worker.orphans.append(start["pid"])
        victim = by_ident(crew, start["worker"])
        assert victim not in killed
        victim.kill9()
        killed.append(victim)

    doc = wait_state(db, _id, "error", timeout=30)
    survivor = next(w for w in crew if w not in killed)
    assert doc["lost"] == 2
    assert doc["lost_by"] == [ident(w.name) for w in killed]
    assert doc["trial"] == 2
    assert doc["attempts_left"] == 1
    assert "max_lost" in doc["last_error"]["exception"], doc["last_error"]
    assert "worker %s lost" % ident(killed[1].name) in \
        doc["last_error"]["exception"]
    assert "locked" not in doc
    # not started a third time
    assert db[RUNS].count_documents({"job": str(_id), "kind": "start"}) == 2
    assert survivor.proc.poll() is None, logs([survivor])
