"""Service jobs end to end: a real worker runs core4's HttpService, the
package's real app server lists it, relays to it behind core4's login
(HTTP and a WebSocket upgrade) and stops it; its port is free again and
no process of it is left."""

import base64
import os
import socket

import psutil
import pytest

from tests.api.conftest import API, unique
from tests.apijobs.client import enqueue, get_job, wait_job
from tests.support import wait_for

HTTP = "core4.queue.helper.job.service.HttpService"


def running_service(api, _id, token=None):
    """Wait until the service ``_id`` is listed healthy; return its entry."""
    def healthy():
        response = api.request("GET", API + "/service",
                               token=token or api.admin)
        assert response.status_code == 200, response.text
        entries = [e for e in response.json()["data"] if e["_id"] == _id]
        return entries[0] if entries and \
            entries[0]["health"] == "healthy" else None
    try:
        return wait_for(healthy, 120, message="service %s healthy" % _id)
    except AssertionError as exc:
        doc = get_job(api, _id)
        output = api.request("GET", API + "/job/%s/stdout" % _id,
                             token=api.admin).text
        raise AssertionError("%s: it is %s, last_error %s, output %s" % (
            exc, doc["state"], doc.get("last_error"), output[-2000:])) \
            from None


def port_free(port):
    """True if nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def served(tmp_path):
    """A directory with one file to serve."""
    (tmp_path / "hello.txt").write_text("hello from a service\n")
    return str(tmp_path)


def test_http_service_is_proxied_and_stopped(api, api_worker, served):
    owner, token = api.create_user(
        ["job://core4\\.queue\\.helper\\.job\\.service\\..*/x"])
    job = enqueue(api, HTTP, token=token, directory=served)
    _id = job["_id"]
    entry = running_service(api, _id, token)
    assert entry["owner"] == owner
    assert entry["path"] == "/service/%s/" % _id
    doc = api.db.sys_queue.find_one({"_id": job_oid(_id)})
    port = doc["service"]["port"]
    # through the proxy, with core4's login
    response = api.request("GET", entry["path"] + "hello.txt", token=token)
    assert response.status_code == 200, api.output()[-3000:]
    assert response.text == "hello from a service\n"
    # no login: 401; a user who may not read the job: 403; another user
    # who may read it but does not own it: 403; an admin: 200
    assert api.request("GET", entry["path"] + "hello.txt").status_code == 401
    _, stranger = api.create_user(["job://nothing/r"])
    assert api.request("GET", entry["path"] + "hello.txt",
                       token=stranger).status_code == 403
    _, reader = api.create_user(
        ["job://core4\\.queue\\.helper\\.job\\.service\\..*/r"])
    assert api.request("GET", entry["path"] + "hello.txt",
                       token=reader).status_code == 403
    assert api.request("GET", entry["path"] + "hello.txt",
                       token=api.admin).status_code == 200
    # its use is recorded for the idle timeout
    used = api.db.sys_queue.find_one({"_id": job_oid(_id)})["service"]
    assert used["used_at"] >= used["health_at"]
    pids = service_pids(api_worker, port)
    assert pids
    # stop it: killed, its port free, no process of it left
    response = api.request("DELETE", API + "/service/%s" % _id, token=token)
    assert response.status_code == 200, response.text
    wait_job(api, _id, "killed", timeout=60)
    wait_for(lambda: port_free(port), 30, message="port %d free" % port)
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(
        p).status() != psutil.STATUS_ZOMBIE for p in pids), 30,
        message="the service's processes gone")
    response = api.request("GET", entry["path"] + "hello.txt", token=token)
    assert response.status_code == 404


def test_websocket_upgrade_is_tunnelled(api, api_worker, served):
    """The proxy relays a WebSocket handshake to the service (here the
    directory server refuses it with an HTTP answer: what matters is that
    the request reaches the service with the service's path and without
    core4's credentials, and that its answer comes back)."""
    job = enqueue(api, HTTP, directory=served)
    entry = running_service(api, job["_id"])
    host, port = api.url.rpartition("//")[2].split(":")
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host, int(port)), 30) as sock:
        sock.sendall(("GET %shello.txt HTTP/1.1\r\nHost: %s:%s\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                      "Authorization: Bearer %s\r\n\r\n" % (
                          entry["path"], host, port, key, api.admin)
                      ).encode())
        sock.settimeout(30)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    # the directory server answered the upgraded GET with the file
    assert answer.startswith(b"HTTP/1."), answer[:200]
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:200]
    log = get_job(api, job["_id"])
    assert log["state"] == "running"
    response = api.request("DELETE", API + "/service/%s" % job["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    wait_job(api, job["_id"], "killed", timeout=60)


def test_a_service_that_never_gets_healthy_ends_in_error(api, api_worker):
    """A directory that does not exist: the job fails at once with a clear
    message (attempts 1: error)."""
    job = enqueue(api, HTTP, directory="/nonexistent/" + unique())
    doc = wait_job(api, job["_id"], "error", timeout=60)
    assert "does not exist" in doc["last_error"]["exception"]


def test_stopping_a_job_that_is_no_service(api, api_worker):
    job = enqueue(api, "core4.queue.helper.job.example.NoopJob")
    wait_job(api, job["_id"], "complete", timeout=60)
    response = api.request("DELETE", API + "/service/%s" % job["_id"],
                           token=api.admin)
    assert response.status_code in (404, 409), response.text
    assert response.json()["message"]


def job_oid(_id):
    from bson import ObjectId
    return ObjectId(_id)


def service_pids(worker, port):
    """Pids of the processes listening on ``port``."""
    found = []
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and \
                conn.status == psutil.CONN_LISTEN and conn.pid:
            found.append(conn.pid)
    return found


def test_an_idle_service_is_stopped_and_completes(api, api_worker):
    job = enqueue(api, "tests.apijobs.IdleService")
    running_service(api, job["_id"])
    doc = wait_job(api, job["_id"], "complete", timeout=60)
    assert doc["runtime"] >= 3


def test_a_crashed_service_runs_again_by_its_attempts(api, api_worker,
                                                      tmp_path):
    marker = str(tmp_path / "runs")
    job = enqueue(api, "tests.apijobs.CrashingService", marker=marker)
    # the first run fails (code 3), the second is healthy and stays up
    wait_for(lambda: get_job(api, job["_id"]).get("trial", 0) >= 2, 120,
             message="a second run")
    entry = running_service(api, job["_id"])
    doc = get_job(api, job["_id"])
    assert "exited with code 3" in doc["last_error"]["exception"]
    with open(marker) as handle:
        assert len(handle.readlines()) == 2
    response = api.request("DELETE", API + "/service/%s" % job["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    assert entry["health"] == "healthy"
    wait_job(api, job["_id"], "killed", timeout=60)


def test_coco_lists_running_services(api, api_worker, served):
    import subprocess
    import sys
    job = enqueue(api, HTTP, directory=served)
    entry = running_service(api, job["_id"])
    out = subprocess.run(
        [sys.executable, "-m", "core4.script.coco", "--services"],
        env=api.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = [row for row in out.stdout.splitlines() if job["_id"] in row]
    assert line and "healthy" in line[0], out.stdout
    assert (api.url + entry["path"]) in line[0], out.stdout
    response = api.request("DELETE", API + "/service/%s" % job["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    wait_job(api, job["_id"], "killed", timeout=60)


def test_coco_lists_the_containers_routes(api):
    import subprocess
    import sys
    out = subprocess.run(
        [sys.executable, "-m", "core4.script.coco", "--container"],
        env=api.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "/core4/api/v1/job" in out.stdout
    assert "core4.api.v1.service.ServiceContainer" in out.stdout
