"""The storm of issue 12, small: ``bench/chaos.py --modes storm`` with 300
jobs on 3 workers, while a random worker gets SIGKILL every 2-5 s and the
database server every ~10 s (see bench/chaos_storm.py).

The benchmark runs in a subprocess with its own NX-27017 server and core4
home (this test needs no fixture), writes its figures as JSON, and cleans
up after itself, also on SIGTERM. It takes about a minute; its bounds
(``--seconds``, ``--settle``) leave room for a loaded machine.
"""

import json
import os
import signal
import subprocess
import sys
import threading

from tests.support import ROOT

JOBS = 300
ARGS = ["--modes", "storm", "--jobs", str(JOBS), "--seconds", "90",
        "--settle", "40", "--slots", "4", "--sleep", "0.3,1.2",
        "--db-every", "10"]
#: seconds the benchmark may take: 90 s of storm, 120 s at most to settle,
#: startup and cleanup
TIMEOUT = 270


def run_storm(tmp_path):
    """Run the storm; return its figures and its output."""
    out = tmp_path / "storm.json"
    # the benchmark sets up its own home, server and database
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("CORE4_")}
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bench", "chaos.py"), *ARGS,
         "--json", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # it stops its workers and server
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        raise AssertionError("the storm ran longer than %d s:\n%s" % (
            TIMEOUT, output[-4000:]))
    assert out.exists(), "no figures (exit %s):\n%s" % (proc.returncode,
                                                        output[-4000:])
    with open(out) as handle:
        (result,) = json.load(handle)["results"]
    return result, output


def test_storm_loses_doubles_and_strands_nothing(tmp_path):
    res, output = run_storm(tmp_path)
    print(output)
    assert "failed" not in res, output[-4000:]
    assert res["jobs"] == JOBS, output[-4000:]
    # it was a storm: workers and the database server were killed
    assert res["kills"] >= 3 and res["db_restarts"] >= 1, output[-4000:]
    assert res["lost"] == [], output[-4000:]
    assert res["overlaps"] == 0, output[-4000:]
    assert res["stuck"] == [], output[-4000:]
    assert res["doubled"] == [], output[-4000:]
    assert res["unexpected"] == [], output[-4000:]
    # every job final: complete, or error after its planned failures
    assert sum(res["states"].values()) == JOBS
    assert set(res["states"]) <= {"complete", "error"}
    assert res["states"].get("error", 0) == res["errors_planned"]


def test_witness_reads_each_record_once_with_two_readers(tmp_path):
    # the storm's kills read the witness log while its thread does: a
    # record read twice looked like a job run twice at once
    from bench.chaos_jobs import StormWitness, storm_record
    witness = StormWitness(str(tmp_path))
    records = 3000
    done = threading.Event()

    def read():
        while not done.is_set():
            witness.poll()

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for i in range(records):
            storm_record(witness.path, "overlap", "job%d" % i, 1)
    finally:
        done.set()
        for reader in readers:
            reader.join(60)
    witness.poll()
    assert [job for job, _, _ in witness.flock] == [
        "job%d" % i for i in range(records)]
