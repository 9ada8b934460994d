"""``GET /metrics`` (:mod:`core4.api.metrics`) of real app servers, with
real workers, parsed by ``prometheus_client``'s own parser.

The package's app server runs with the default configuration (no
metrics); this module's run on a database of their own with
``api.metrics.enabled``, so the values are exact.
"""

import datetime
import os
import time
import types

import pymongo
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core4.api.metrics import EventCounter, STATE_ID
from core4.mongo import now

from tests.api.conftest import ADMIN_PASSWORD
from tests.apijobs.client import enqueue, error, wait_job
from tests.appserver import isolated_env, start_app_server, stop_app_server
from tests.support import WorkerProcess, wait_for

ADMIN = ("admin", ADMIN_PASSWORD)
GATE = "tests.apijobs.GateJob"
QUICK = "tests.apijobs.QuickJob"
FAIL_ONCE = "tests.apijobs.FailOnceJob"
PARKED = "tests.apijobs.ParkedJob"
ENABLED = {"CORE4_OPTION_api__metrics__enabled": "true",
           "CORE4_OPTION_api__metrics__lag": "!!float 0.5"}


@pytest.fixture(scope="module")
def metrics_env(servers, api):
    """A database and core4 home of this module (entered after the
    package's, whose app server ``api`` is started first)."""
    with isolated_env(servers, "metrics") as env:
        yield env


@pytest.fixture(scope="module")
def metrics_api(metrics_env):
    """An app server with ``api.metrics.enabled`` (not public)."""
    server = start_app_server(metrics_env, name="metricsapp", **ENABLED)
    yield server
    stop_app_server(server)


def parse(text):
    """Return ``{(sample name, ((label, value), ...)): value}``."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = \
                sample.value
    return samples


def scrape(server, **kwargs):
    """GET /metrics as the admin (HTTP Basic, as Prometheus would);
    return the parsed samples."""
    response = server.request("GET", "/metrics", auth=ADMIN, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(
        "text/plain; version=0.0.4")
    return parse(response.text)


def value(samples, metric, **labels):
    """The value of one sample (0 if it is not there)."""
    return samples.get((metric, tuple(sorted(labels.items()))), 0)


def test_metrics_are_off_by_default(api):
    response = api.request("GET", "/metrics", auth=ADMIN)
    error(response, 404, "/metrics")


def test_metrics_need_a_login_with_permission(metrics_api):
    response = metrics_api.request("GET", "/metrics")
    error(response, 401, "login required")
    _, nobody = metrics_api.create_user(["job://tests/r"])
    error(metrics_api.request("GET", "/metrics", token=nobody), 403)
    _, scraper = metrics_api.create_user(
        ["api://core4.api.metrics.MetricsHandler/r"])
    response = metrics_api.request("GET", "/metrics", token=scraper)
    assert response.status_code == 200, response.text
    assert "core4_queue_jobs" in response.text
    # OpenMetrics for scrapers asking for it
    response = metrics_api.request("GET", "/metrics", token=scraper, headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_metrics_count_jobs_workers_and_recoveries(metrics_api, metrics_env):
    server, base = metrics_api, metrics_env["base"]
    first = scrape(server)  # the first scrape starts the counters at zero
    assert value(first, "core4_daemons_alive", kind="app") == 1
    assert value(first, "core4_daemons_alive", kind="worker") == 0
    assert value(first, "core4_metrics_scrape_error", part="events") == 0
    gate = os.path.join(base, "gate")

    # a job whose worker dies: recovered by the next worker
    victim = WorkerProcess("victim", env=server.env, log_dir=base)
    worker = None
    try:
        victim.wait_registered(server.db)
        lost = enqueue(server, GATE, gate=gate, timeout=60)
        # (an ObjectId field other than _id is compared here: NX-27017)
        wait_for(lambda: any(
            str(event["data"]["_id"]) == lost["_id"]
            for event in server.db.sys_event.find({"name": "start_job"})),
            30, message="the victim to start the job")
        victim.kill9()
        worker = WorkerProcess("metricsworker", env=server.env, log_dir=base)
        worker.wait_registered(server.db)
        quick = [enqueue(server, QUICK, i=i) for i in range(3)]
        failing = enqueue(server, FAIL_ONCE)
        broken = enqueue(server, GATE, gate=gate + ".open", fail=True)
        parked = enqueue(server, PARKED)
        open(gate + ".open", "w").close()
        for job in quick:
            wait_job(server, job["_id"], "complete", journaled=True)
        wait_job(server, failing["_id"], "failed")
        wait_job(server, broken["_id"], "error")
        doc = wait_for(lambda: server.db.sys_queue.find_one(
            {"name": GATE, "lost": 1, "state": "running"}), 60,
            message="the lost job to run again")
        assert doc["lost_by"][0].startswith("victim@"), doc["lost_by"]
        open(gate, "w").close()
        wait_job(server, lost["_id"], "complete", journaled=True)

        expected = {
            ("core4_jobs_started_total", QUICK): 3,
            ("core4_jobs_completed_total", QUICK): 3,
            ("core4_jobs_failed_total", QUICK): 0,
            ("core4_jobs_started_total", FAIL_ONCE): 1,
            ("core4_jobs_failed_total", FAIL_ONCE): 1,
            ("core4_jobs_completed_total", FAIL_ONCE): 0,
            # the lost trial, its recovered trial and the broken job
            ("core4_jobs_started_total", GATE): 3,
            ("core4_jobs_completed_total", GATE): 1,
            ("core4_jobs_failed_total", GATE): 1,
            ("core4_leases_recovered_total", GATE): 1,
            ("core4_leases_recovered_total", QUICK): 0,
            ("core4_jobs_started_total", PARKED): 0,
        }
        seen = {}
        ident = server.db.sys_worker.find_one(
            {"_id": {"$regex": "^metricsworker@"}})["_id"]

        def counted():
            samples = scrape(server)
            seen["samples"] = samples
            got = {key: value(samples, key[0], name=key[1])
                   for key in expected}
            # its claims, as of its last heartbeat: the six trials it ran
            got["claims won"] = value(samples, "core4_worker_claims_total",
                                      worker=ident, outcome="won") >= 6
            seen["got"] = got
            return samples if got == dict(expected, **{
                "claims won": True}) and value(
                samples, "core4_daemons_alive", kind="worker") == 1 else None
        try:
            samples = wait_for(counted, 30, interval=0.3,
                               message="the counters")
        except AssertionError:
            raise AssertionError("counted %s, expected %s; workers %s" % (
                seen.get("got"), expected, value(
                    seen.get("samples", {}), "core4_daemons_alive",
                    kind="worker"))) from None
    finally:
        if worker is not None:
            worker.stop()
        victim.stop()

    # the queue: the parked job pending, FailOnce failed, the broken one in
    # error; the complete ones are in the journal
    for state, n in {"pending": 1, "failed": 1, "error": 1, "running": 0,
                     "complete": 0, "killed": 0, "deferred": 0,
                     "inactive": 0}.items():
        assert value(samples, "core4_queue_jobs", state=state) == n, state
    # every trial but the lost one (claimed again since) was observed
    for metric in ("core4_job_claim_latency_seconds",
                   "core4_job_dispatch_latency_seconds"):
        count = value(samples, metric + "_count")
        assert count == 6, (metric, count)
        assert value(samples, metric + "_bucket", le="+Inf") == count
        assert 0 <= value(samples, metric + "_sum") < 60 * count
    assert value(samples, "core4_job_dispatch_latency_seconds_bucket",
                 le="10.0") == 6
    until = value(samples, "core4_metrics_counted_until_timestamp_seconds")
    assert time.time() - 30 < until <= time.time()
    for part in ("queue", "daemons", "events"):
        assert value(samples, "core4_metrics_scrape_error", part=part) == 0
    # the totals are kept in the database: a second app server (public:
    # no login needed) answers the same counters
    other = start_app_server(metrics_env, name="metricsapp2",
                             CORE4_OPTION_api__metrics__public="true",
                             **ENABLED)
    try:
        response = other.request("GET", "/metrics")
        assert response.status_code == 200, response.text
        again = parse(response.text)
        for (metric, name), n in expected.items():
            assert value(again, metric, name=name) == n, (metric, name)
        assert value(again, "core4_daemons_alive", kind="app") == 2
    finally:
        stop_app_server(other)


def test_counter_counts_each_event_once_in_batches(metrics_env):
    """Events are counted in batches (never splitting a millisecond) into
    totals shared by every counter (app server) of the database."""
    client = pymongo.MongoClient(metrics_env["url"], tz_aware=True)
    db = client[metrics_env["database"] + "_c"]
    try:
        system = types.SimpleNamespace(
            event=db.sys_event, queue=db.sys_queue, journal=db.sys_journal)
        settings = types.SimpleNamespace(lag=0, batch=3, max_time=2000)
        counters = [EventCounter(system, settings) for _ in range(2)]
        start = now() - datetime.timedelta(seconds=10)
        assert counters[0].advance(start)["jobs"] == []

        def at(ms):
            return start + datetime.timedelta(milliseconds=ms)
        events = [("complete_job", "a.A", 1), ("complete_job", "a.A", 2),
                  ("failed_job", "a.A", 2), ("error_job", "b.B", 2),
                  ("recover_job", "b.B", 3), ("complete_job", "b.B", 4),
                  ("enqueue_job", "b.B", 4), ("complete_job", "b.B", 4)]
        db.sys_event.insert_many([
            {"created": at(ms), "name": name, "channel": "queue",
             "data": {"name": job}} for name, job, ms in events])
        seqs = []
        for turn in range(6):
            state = counters[turn % 2].advance(at(5))
            seqs.append(state["seq"])
        assert seqs == [1, 2, 3, 4, 4, 4]
        assert state["jobs"] == [
            {"name": "a.A", "started": 0, "completed": 2, "failed": 1,
             "recovered": 0},
            {"name": "b.B", "started": 0, "completed": 2, "failed": 1,
             "recovered": 1}]
        assert db.sys_event.find_one({"_id": STATE_ID})["seq"] == 4
    finally:
        client.drop_database(db.name)
        client.close()
