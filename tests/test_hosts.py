"""Several hosts (issue 12): workers on two machines share one database.

The "machines" are network namespaces built by :mod:`tests.netns` on a
private /24 (``10.213.N.0/24``), joined by a bridge, each process with its
own host name (UTS namespace)::

    c4-db      .1   NX-27017 listening on 10.213.N.1:27017 only
    c4-ctl     .4   coco --application (API on 10.213.N.4:5001) and the
                    command line tools (coco --kill, coco --alive)
    c4-host-a  .11  coco --worker w1   ->  w1@c4-host-a
    c4-host-b  .12  coco --worker w1   ->  w1@c4-host-b
    (root)     .254 the test itself: enqueues and reads the database

Both workers have the same name: only the host name tells them apart. Each
host has its own core4 home; all use the database ``hosts`` on the db host
(``CORE4_OPTION_DEFAULT__mongo_url``), fast daemon settings
(:data:`tests.support.FAST`: heartbeat 2 s, so a lease lasts 4 s) and at
most 6 jobs per worker.

The tests run in file order on one module-scoped cluster and show:

1. jobs spread over both hosts (``locked.hostname`` while they run, the
   ``start_job`` events after);
2. ``coco --kill`` on c4-ctl stops a job running on a worker host (the
   job ends ``killed``, its process and its child are gone from that host);
3. ``coco --alive`` on c4-ctl lists the workers of both hosts;
4. the API's ``GET /system`` (the dashboard's daemon list) shows both;
5. last (it kills a host): when everything on one worker host is
   SIGKILLed, the other host recovers its job, which ends ``complete``
   with ``lost`` 1 and ``lost_by`` naming the dead worker.

The fixture's finalizer kills every process in the namespaces and deletes
them, also after failures. Without root the tests fail (not skip), see
:func:`tests.netns.require_netns`.
"""

import os
import sys
import time

import psutil
import pymongo
import pytest
import requests

from core4.config import reset_config
from core4.mongo import embedded, nxauth
from core4.queue.queue import CoreQueue
from tests.netns import Lab, require_netns
from tests.support import FAST, ROOT

JOBS = "tests.wjobs.jobs."
DATABASE = "hosts"
WORKER = "w1"
APP = "hostsapp"
API = "/core4/api/v1"
ADMIN_PASSWORD = "admin-secret-1"
DB_PORT = 27017
API_PORT = 5001
#: job seconds for "a job longer than the lease" (lease = 2 x heartbeat 2 s)
LONG = 8.0


class Cluster:
    """The hosts of the module: database, workers, app server; the
    test's database client and helpers to wait and to run ``coco``."""

    def __init__(self, base):
        self.base = str(base)
        self.lab = Lab()
        self.workers = {}
        self.app = None
        self.client = None
        self.db = None
        self.url = None
        self.local = os.path.join(self.base, "local.yaml")
        with open(self.local, "w") as handle:
            handle.write("{}\n")

    # setup ------------------------------------------------------------------

    def start(self):
        """Build the namespaces and start the database, both workers and
        the app server; return once all of them answer."""
        self.lab.start()
        self.dbhost = self.lab.add_host("db", 1, "c4-db")
        self.ctl = self.lab.add_host("ctl", 4, "c4-ctl")
        self.a = self.lab.add_host("a", 11, "c4-host-a")
        self.b = self.lab.add_host("b", 12, "c4-host-b")
        self.url = "mongodb://%s:%d/" % (self.dbhost.address, DB_PORT)
        self._start_database()
        for host in (self.a, self.b):
            self.workers[host.key] = host.spawn(
                [sys.executable, "-m", "core4.script.coco", "--worker",
                 WORKER], self.env(host), self.log(host), cwd=ROOT)
        self.app = self.ctl.spawn(
            [sys.executable, "-m", "core4.script.coco", "--application", APP,
             "--address", self.ctl.address, "--port", str(API_PORT)],
            self.env(self.ctl), self.log(self.ctl), cwd=ROOT)
        for host in (self.a, self.b):
            self.wait(lambda h=host: self.db.sys_worker.find_one(
                {"_id": self.identifier(h), "phase": "loop"}),
                60, "worker %s to register" % self.identifier(host))
        self.wait(self._api_answers, 60, "the app server to answer")
        return self

    def _start_database(self):
        """NX-27017 on the db host, bound to its address only (as core4
        starts it, patches included, see :mod:`core4.mongo.embedded`)."""
        data = os.path.join(self.base, "nx")
        os.makedirs(data)
        # the server refuses clients without its credentials
        self.url = nxauth.client_url(self.url, nxauth.ensure_credentials(data))
        self.nx = self.dbhost.spawn(
            [sys.executable, "-c", embedded._NX_CODE, "--data-dir", data,
             "--host", self.dbhost.address, "-p", str(DB_PORT),
             "--pid-file", os.path.join(data, "nx.pid"),
             "--log-file", os.path.join(data, "nx.log")],
            dict(os.environ), self.log(self.dbhost), cwd=data)
        self.client = pymongo.MongoClient(
            self.url, tz_aware=True, serverSelectionTimeoutMS=1000)

        def answers():
            try:
                return self.client.admin.command("ping")
            except pymongo.errors.PyMongoError:
                return None
        self.wait(answers, 60, "NX-27017 on %s:%d" % (self.dbhost.address,
                                                       DB_PORT))
        self.db = self.client[DATABASE]

    def env(self, host):
        """Environment of a core4 process on ``host``: the database on the
        db host, the host's own core4 home, fast daemon settings; no
        CORE4_* variable of the test process leaks in."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("CORE4_")}
        env.update(FAST)
        home = os.path.join(self.base, host.key, "home")
        os.makedirs(home, exist_ok=True)
        env.update({
            "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", ""),
            "CORE4_CONFIG": self.local,
            "CORE4_OPTION_DEFAULT__mongo_url": self.url,
            "CORE4_OPTION_DEFAULT__mongo_database": DATABASE,
            "CORE4_OPTION_folder__home": home,
            "CORE4_OPTION_api__admin_password": ADMIN_PASSWORD,
            "CORE4_OPTION_worker__max_jobs": "!!int 6"})
        return env

    def log(self, host):
        """Path of the log file of ``host``'s long-running process."""
        return os.path.join(self.base, "%s.log" % host.key)

    def close(self):
        """Finalizer: stop everything and remove the namespaces."""
        if self.client is not None:
            self.client.close()
        self.lab.close()

    # helpers ----------------------------------------------------------------

    def identifier(self, host):
        """The worker identifier on ``host``."""
        return "%s@%s" % (WORKER, host.hostname)

    def host_of(self, hostname):
        """The worker host named ``hostname``."""
        return {self.a.hostname: self.a, self.b.hostname: self.b}[hostname]

    def other(self, host):
        """The other worker host."""
        return self.b if host is self.a else self.a

    def output(self, chars=2500):
        """The tails of all process logs, for failure messages."""
        parts = []
        for host in (self.dbhost, self.ctl, self.a, self.b):
            try:
                with open(self.log(host), "rb") as handle:
                    text = handle.read().decode("utf-8", "replace")
            except OSError:
                text = ""
            parts.append("--- %s (%s):\n%s" % (
                host.hostname, host.ns, text[-chars:]))
        return "\n".join(parts)

    def wait(self, predicate, timeout, message):
        """Poll ``predicate`` until it returns a true value (returned);
        after ``timeout`` seconds fail with ``message`` and the logs."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    "timed out after %.0f s waiting for %s\n%s" % (
                        timeout, message, self.output()))
            time.sleep(0.1)

    def job(self, _id):
        """The job document, from the queue or else the journal."""
        return self.db.sys_queue.find_one({"_id": _id}) or \
            self.db.sys_journal.find_one({"_id": _id})

    def wait_state(self, _id, state, timeout=60):
        """Wait until job ``_id`` is in ``state``; return its document."""
        return self.wait(lambda: (self.job(_id) or {}).get("state") == state
                         and self.job(_id), timeout,
                         "job %s to be %s (now %s)" % (
                             _id, state, self.job(_id)))

    def coco(self, host, *args):
        """Run ``coco ARGS`` on ``host``; return the completed process."""
        return host.run([sys.executable, "-m", "core4.script.coco", *args],
                        self.env(host), cwd=ROOT)

    def starts(self, ids):
        """``start_job`` events of the jobs ``ids``, oldest first."""
        return list(self.db.sys_event.find(
            {"name": "start_job", "data._id": {"$in": list(ids)}}).sort(
                "created", 1))

    def _api_answers(self):
        if self.app.poll() is not None:
            raise AssertionError("app server exited:\n" + self.output())
        try:
            return self.http("GET", API + "/openapi.json").status_code == 200
        except requests.RequestException:
            return False

    def http(self, method, path, **kwargs):
        """A request to the app server on c4-ctl (no proxy from the
        environment: the address is only reachable directly)."""
        with requests.Session() as session:
            session.trust_env = False
            return session.request(
                method, "http://%s:%d%s" % (self.ctl.address, API_PORT, path),
                timeout=30, **kwargs)


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    """The running hosts; this process talks to their database (enqueue
    through :class:`CoreQueue`) while the module runs."""
    require_netns()
    found = Cluster(tmp_path_factory.mktemp("hosts"))
    request.addfinalizer(found.close)
    found.start()
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("CORE4_")]:
            patch.delenv(key)
        for key, value in found.env(found.ctl).items():
            if key.startswith("CORE4_"):
                patch.setenv(key, value)
        reset_config()
        try:
            yield found
        finally:
            reset_config()


def enqueue(name, **kwargs):
    """Enqueue a job of tests/wjobs; return its id."""
    return CoreQueue().enqueue(JOBS + name, **kwargs)._id


def enough(fetch, n):
    """A predicate for :meth:`Cluster.wait`: the list ``fetch()`` once it
    holds at least ``n`` items."""
    def predicate():
        found = fetch()
        return found if len(found) >= n else None
    return predicate


def gone(pid):
    """True if process ``pid`` ended (a zombie counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# 1. jobs spread ------------------------------------------------------------

def test_jobs_spread_over_both_hosts(cluster):
    ids = [enqueue("SleepJob", key="spread%d" % i, secs=1.5)
           for i in range(20)]
    leases = set()

    def all_complete():
        for doc in cluster.db.sys_queue.find(
                {"_id": {"$in": ids}, "state": "running"}, {"locked": 1}):
            locked = doc.get("locked") or {}
            leases.add((locked.get("worker"), locked.get("hostname")))
        # (find, not count_documents: NX-27017 counts 0 for an $in of
        # ObjectIds, its aggregation cannot bind them)
        return len(list(cluster.db.sys_journal.find(
            {"_id": {"$in": ids}, "state": "complete"}, {"_id": 1}))) == len(
                ids)
    cluster.wait(all_complete, 120, "20 jobs to complete")
    expected = {(cluster.identifier(h), h.hostname)
                for h in (cluster.a, cluster.b)}
    # leases seen while the jobs ran: worker and host name agree
    assert leases == expected, leases
    # who started each job (events are written by the worker, on its host)
    starts = cluster.wait(enough(lambda: cluster.starts(ids), len(ids)),
                          30, "start events of all jobs")
    by_host = {}
    for event in starts:
        assert event["data"]["worker"] == "%s@%s" % (
            WORKER, event["hostname"]), event
        by_host.setdefault(event["hostname"], set()).add(event["data"]["_id"])
    assert set(by_host) == {cluster.a.hostname, cluster.b.hostname}, by_host
    assert set().union(*by_host.values()) == set(ids)
    # the job processes themselves log with the host name of their worker
    ran_on = {str(e["data"]["_id"]): e["hostname"] for e in starts}
    records = cluster.wait(enough(lambda: list(cluster.db.sys_log.find(
        {"identifier": {"$in": list(ran_on)},
         "message": "start execution"})), len(ids)),
        30, "the jobs' log records")
    for record in records:
        assert record["hostname"] == ran_on[record["identifier"]], record
    print("jobs per host:", {k: len(v) for k, v in by_host.items()})


# 2. coco --kill from another host -----------------------------------------

def test_kill_from_another_host(cluster):
    _id = enqueue("ChildSleepJob", key="kill")
    cluster.wait_state(_id, "running")
    report = cluster.wait(lambda: cluster.db.w_report.find_one(
        {"_id": "kill", "child": {"$exists": True}}), 60,
        "the job to report its pids")
    doc = cluster.job(_id)
    host = cluster.host_of(doc["locked"]["hostname"])
    assert doc["locked"]["worker"] == cluster.identifier(host)
    # the job and its child run on that host, not on the other one
    on_host = set(host.pids())
    assert {report["pid"], report["child"]} <= on_host, (report, on_host)
    assert not {report["pid"], report["child"]} & set(
        cluster.other(host).pids())

    done = cluster.coco(cluster.ctl, "--kill", str(_id))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "killed [%s]" % _id in done.stdout, done.stdout

    killed = cluster.wait_state(_id, "killed", 60)
    assert "killed" in killed["last_error"]["exception"], killed
    cluster.wait(lambda: gone(report["pid"]) and gone(report["child"]), 30,
                 "the job process %d and its child %d to end" % (
                     report["pid"], report["child"]))
    assert not {report["pid"], report["child"]} & set(host.pids())
    # the worker on that host lives on
    assert cluster.workers[host.key].poll() is None, cluster.output()


# 3. coco --alive ------------------------------------------------------------

def test_alive_lists_workers_of_both_hosts(cluster):
    done = cluster.coco(cluster.ctl, "--alive")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in (cluster.a, cluster.b):
        line = [ln for ln in done.stdout.splitlines()
                if ln.strip().startswith(cluster.identifier(host))]
        assert line, done.stdout
        assert str(cluster.workers[host.key].pid) in line[0], done.stdout
        assert "worker" in line[0] and "loop" in line[0], done.stdout
    assert "%s@%s" % (APP, cluster.ctl.hostname) in done.stdout, done.stdout
    # the registry records each worker's own host name
    docs = {d["_id"]: d for d in cluster.db.sys_worker.find(
        {"kind": "worker"})}
    for host in (cluster.a, cluster.b):
        assert docs[cluster.identifier(host)]["hostname"] == host.hostname


# 4. the API's daemon list ---------------------------------------------------

def test_api_system_lists_both_hosts(cluster):
    login = cluster.http("POST", API + "/login", json={
        "username": "admin", "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["data"]["token"]
    response = cluster.http("GET", API + "/system", headers={
        "Authorization": "Bearer %s" % token})
    assert response.status_code == 200, response.text
    daemons = {d["_id"]: d for d in response.json()["data"]["daemons"]}
    for host in (cluster.a, cluster.b):
        doc = daemons.get(cluster.identifier(host))
        assert doc, daemons
        assert doc["kind"] == "worker" and doc["hostname"] == host.hostname
        assert doc["pid"] == cluster.workers[host.key].pid
        assert doc["phase"] == "loop"
    app = daemons["%s@%s" % (APP, cluster.ctl.hostname)]
    assert app["hostname"] == cluster.ctl.hostname
    assert app["url"] == "http://%s:%d" % (cluster.ctl.address, API_PORT)


# 5. a host dies (last: the cluster keeps one worker host) ------------------

def test_dead_host_job_recovered_by_other_host(cluster):
    _id = enqueue("SleepJob", key="lost", secs=LONG)
    running = cluster.wait_state(_id, "running")
    report = cluster.wait(lambda: cluster.db.w_report.find_one(
        {"_id": "lost", "pid": {"$exists": True}}), 60,
        "the job to report its pid")
    dead = cluster.host_of(running["locked"]["hostname"])
    alive = cluster.other(dead)
    assert report["pid"] in dead.pids()
    # its start event (buffered by the worker up to a loop pass: events are
    # best effort and die with an unflushed buffer) is written
    cluster.wait(enough(lambda: cluster.starts([_id]), 1), 30,
                 "the start event of the first run")

    dead.kill_all()  # worker, launcher, job processes: all SIGKILLed
    assert cluster.workers[dead.key].wait(10) == -9
    assert gone(report["pid"])

    done = cluster.wait_state(_id, "complete", 60 + 2 * LONG)
    assert done["lost"] == 1, done
    assert done["lost_by"] == [cluster.identifier(dead)], done
    assert "%s lost" % cluster.identifier(dead) in \
        done["last_error"]["exception"], done
    starts = cluster.wait(enough(lambda: cluster.starts([_id]), 2), 30,
                          "both start events")
    assert [(e["hostname"], e["data"]["worker"]) for e in starts] == [
        (dead.hostname, cluster.identifier(dead)),
        (alive.hostname, cluster.identifier(alive))], starts
    # the second run's process ran on the surviving host
    final = cluster.db.w_report.find_one({"_id": "lost"})
    assert final["pid"] != report["pid"] and "end" in final, final
    assert cluster.workers[alive.key].poll() is None, cluster.output()
