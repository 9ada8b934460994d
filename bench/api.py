"""Requests/s and latency of ``GET /core4/api/v1/job`` with 10,000 jobs
queued, against a real ``coco --application`` on the embedded NX-27017
server::

    .venv/bin/python bench/api.py [--jobs 10000] [--requests 500]
                                  [--clients 4] [--per-page 25]

Jobs are inserted in bulk (as ``CoreQueue.submit_document`` would store
them, without workers). Clients are threads with keep-alive HTTP sessions
sending Bearer tokens; the figures printed are for the first page (default
sort) and for a filtered, sorted page further in.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PASSWORD = "bench-password"


def configure(home):
    """Point this process and the app server at a fresh database."""
    from core4.config import reset_config
    os.environ.pop("CORE4_OPTION_DEFAULT__mongo_url", None)
    os.environ["CORE4_OPTION_folder__home"] = home
    os.environ["CORE4_OPTION_DEFAULT__mongo_database"] = "bench_api"
    os.environ["CORE4_OPTION_logging__stderr"] = "WARNING"
    os.environ["CORE4_OPTION_api__admin_password"] = PASSWORD
    os.environ["CORE4_OPTION_api__max_per_page"] = "!!int 1000"
    reset_config()
    from core4.queue.queue import CoreQueue
    return CoreQueue()


def fill(queue, count):
    """Insert ``count`` pending DummyJob documents."""
    from core4.queue.job import args_hash
    from core4.queue.loader import make_job
    template = make_job("core4.queue.helper.job.DummyJob").serialise()
    queue.setup()
    at = time.time()
    docs = []
    for i in range(count):
        doc = dict(template, args={"i": i}, _hash=args_hash({"i": i}),
                   state="pending", attempts_left=1, trial=0, query_at=at,
                   prog={"value": 0.0, "message": None},
                   enqueued={"at": at + i * 1e-3, "hostname": "bench",
                             "username": "user%d" % (i % 10)})
        docs.append(doc)
        if len(docs) == 1000:
            queue.sys.queue.insert_many(docs)
            docs = []
    if docs:
        queue.sys.queue.insert_many(docs)


def start_server(port, log):
    """Start ``coco --application`` and wait until it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", "--application",
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/core4/api/v1/openapi.json", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the app server did not start")


def measure(url, token, path, total, clients):
    """Send ``total`` GETs of ``path`` from ``clients`` threads; return
    (requests/s, latencies in ms)."""
    latencies = []
    lock = threading.Lock()
    per_client = total // clients

    def client():
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + token
        mine = []
        for _ in range(per_client):
            start = time.perf_counter()
            response = session.get(url + path, timeout=60)
            mine.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                raise SystemExit("%s: %s" % (path, response.text[:200]))
        with lock:
            latencies.extend(mine)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, sorted(latencies)


def percentile(values, p):
    """Return the ``p`` percentile of sorted ``values``."""
    return values[min(len(values) - 1, int(round(p / 100 * (len(values)
                                                            - 1))))]


def main():
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-page", type=int, default=25)
    ns = parser.parse_args()
    home = tempfile.mkdtemp(prefix="core4-bench-api-")
    log = open(os.path.join(home, "app.log"), "wb")
    proc = None
    try:
        queue = configure(home)
        queue.sys.queue.drop()
        fill(queue, ns.jobs)
        from tests.conftest import free_port
        proc, url = start_server(free_port(), log)
        token = requests.post(url + "/core4/api/v1/login", json={
            "username": "admin", "password": PASSWORD}).json()["data"][
                "token"]
        print("GET /job with %d jobs queued, %d requests, %d clients, "
              "per_page %d" % (ns.jobs, ns.requests, ns.clients,
                               ns.per_page))
        for label, path in (
                ("first page", "/core4/api/v1/job?per_page=%d" % ns.per_page),
                ("filtered+sorted page 10",
                 "/core4/api/v1/job?per_page=%d&page=10&user=user3"
                 "&sort=-enqueued.at&state=pending" % ns.per_page)):
            measure(url, token, path, ns.clients * 5, ns.clients)  # warm-up
            rate, latencies = measure(url, token, path, ns.requests,
                                      ns.clients)
            print("  %-24s %7.1f requests/s   p50 %6.1f ms   p99 %6.1f ms"
                  % (label, rate, statistics.median(latencies),
                     percentile(latencies, 99)))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        from core4.mongo import embedded
        embedded.stop_server(os.path.join(home, "mongo"))
        log.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
