"""Service jobs: a job whose process is a server (a Jupyter server, a web
tool, a directory served over HTTP), started by a worker, reachable
through the app server, stopped by the user.

::

    from core4.queue.service import CoreService

    class Notebook(CoreService):
        author = "mra"
        health_path = "/api/status"

        def command(self, port, prefix, **kwargs):
            return ["jupyter", "server", "--port", str(port),
                    "--ServerApp.base_url=" + prefix]

The worker runs a service job like any other job, in its own process (and
in its project's virtualenv). :meth:`CoreService.execute` picks a free
port, starts :meth:`~CoreService.command` with ``port`` and the path
``prefix`` it is served under (``/service/<job id>/``; the app server
relays that path unchanged, so the service's links work), and reports in
the job's document (field ``service``) where it listens and how it is:
``starting`` until its health check passes, then ``healthy`` or
``unhealthy``. It runs until it is stopped (``coco --kill``, the
dashboard's Stop, ``DELETE /core4/api/v1/service/<id>``: the job ends
``killed`` and its whole process group is gone), until it was not used for
``idle_timeout`` seconds or ran ``max_runtime`` seconds (then it is stopped
and the job ends ``complete``), or until its server exits: with code 0
the job is ``complete``; otherwise it fails, and runs again while
``attempts`` are left (after ``error_time``). A service that does not
become healthy within ``start_timeout`` seconds is stopped and fails; its
output stays in the job's ``stdout`` as for every job.
"""

import os
import signal
import socket
import subprocess
import time

from core4.mongo import now
from core4.queue import secret
from core4.queue.job import CoreAbstractMixin, CoreJob

#: health of a service, as its job document shows it
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
#: seconds a health check may take
CHECK_TIMEOUT = 3.0


class CoreServiceError(RuntimeError):
    """A service did not start, or its server failed."""


def service_token(doc, config):
    """The token a service job stored for the app server (see
    :meth:`CoreService.secret_token`), decrypted; None if it has none."""
    sealed = (doc.get("service") or {}).get("token")
    if not sealed:
        return None
    return secret.keyring(config, create=False).decrypt(sealed)


def free_port(address="127.0.0.1"):
    """Return a TCP port free on ``address`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def prefix_of(job_id):
    """The path a service job is served under by the app server."""
    return "/service/%s/" % job_id


def check_health(address, port, path):
    """True if the service answers: an HTTP GET of ``path`` with a status
    below 500 (a redirect to a login page means it is up), or, with
    ``path`` None, a TCP connect."""
    import http.client  # (only services need it, not every job process)
    try:
        if path is None:
            with socket.create_connection((address, port), CHECK_TIMEOUT):
                return True
        conn = http.client.HTTPConnection(address, port,
                                          timeout=CHECK_TIMEOUT)
        try:
            conn.request("GET", path)
            return conn.getresponse().status < 500
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


class CoreService(CoreAbstractMixin, CoreJob):
    """Base class of service jobs (see the module docstring): implement
    :meth:`command`; set ``health_path`` (None: a TCP connect decides),
    ``start_timeout``, ``idle_timeout`` and ``max_runtime`` as needed."""

    #: path (below the prefix) whose GET tells the service is healthy
    health_path = ""
    #: seconds the service may take to become healthy
    start_timeout = 60
    #: seconds between health checks while it runs
    check_interval = 5
    #: stop the service after this many seconds without a request through
    #: the app server (None: never)
    idle_timeout = None
    #: stop the service after this many seconds (None: never)
    max_runtime = None
    #: seconds the server has to exit after SIGTERM before SIGKILL
    stop_grace = 10
    #: the address the server listens on; the app server connects to it
    address = "127.0.0.1"
    attempts = 1
    error_time = 1

    def command(self, port, prefix, **kwargs):
        """Return the command line (a list) that runs the server on
        ``port``, serving below the path ``prefix``; ``kwargs`` are the
        job's arguments."""
        raise NotImplementedError("a service implements command()")

    def environment(self, port, prefix, **kwargs):
        """Return extra environment variables for the server (a dict)."""
        return {}

    def secret_token(self):
        """A token the app server adds to every request it relays (as
        ``Authorization: token <value>``), or None; see
        :class:`core4.queue.helper.job.service.JupyterService`."""
        return None

    def execute(self, **kwargs):
        """Run the server until it is stopped, idle, too old or exits."""
        port = free_port(self.address)
        prefix = prefix_of(self._id)
        argv = [str(part) for part in self.command(port, prefix, **kwargs)]
        env = dict(os.environ, **{
            key: str(value) for key, value in
            self.environment(port, prefix, **kwargs).items()})
        self.logger.info("starting service on %s:%d%s: %s", self.address,
                         port, prefix, " ".join(argv))
        server = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        status = None
        try:
            status = ServiceStatus(self, port, prefix)
            self._wait_healthy(server, status, port, prefix)
            return self._run(server, status, port, prefix)
        finally:
            stop_server(server, self.stop_grace)
            if status is not None:
                # a next run (attempts) starts without this run's address
                status.clear()

    def _health(self, port, prefix):
        path = None if self.health_path is None else \
            prefix + self.health_path.lstrip("/")
        return check_health(self.address, port, path)

    def _wait_healthy(self, server, status, port, prefix):
        deadline = time.monotonic() + self.start_timeout
        while not self._health(port, prefix):
            code = server.poll()
            if code is not None:
                raise CoreServiceError("service exited with code %s before it "
                                   "became healthy" % code)
            if time.monotonic() > deadline:
                raise CoreServiceError("service did not become healthy within "
                                   "%s seconds" % self.start_timeout)
            time.sleep(0.2)
        status.set(HEALTHY)
        self.logger.info("service healthy at %s", status.url)

    def _run(self, server, status, port, prefix):
        started = time.monotonic()
        while True:
            code = _wait(server, self.check_interval)
            if code is not None:
                if code == 0:
                    self.logger.info("service exited")
                    return
                raise CoreServiceError("service exited with code %s" % code)
            status.set(HEALTHY if self._health(port, prefix) else UNHEALTHY)
            if self.max_runtime is not None and \
                    time.monotonic() - started > self.max_runtime:
                self.logger.info("service stopped after %s seconds",
                                 self.max_runtime)
                return
            idle = status.idle_seconds()
            if self.idle_timeout is not None and idle > self.idle_timeout:
                self.logger.info("service stopped: not used for %d seconds",
                                 idle)
                return


def _wait(server, seconds):
    """Wait up to ``seconds`` for the server to exit; its code or None."""
    try:
        return server.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def stop_server(server, grace):
    """SIGTERM the server, SIGKILL it after ``grace`` seconds."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    if _wait(server, grace) is None:
        server.kill()
        server.wait()


class ServiceStatus:
    """The ``service`` field of a running service job's document: where it
    listens, its health, when it was last used (the app server writes
    ``service.used_at`` as it relays requests). Writes are fenced by the
    job's lease."""

    def __init__(self, job, port, prefix):
        from core4.queue.queue import CoreQueue
        self.job = job
        self.queue = CoreQueue(job.config)
        self.url = "http://%s:%d%s" % (job.address, port, prefix)
        self.health = None
        self.started = now()
        token = job.secret_token()
        doc = {"url": self.url, "address": job.address, "port": port,
               "prefix": prefix, "health": STARTING, "health_at": self.started,
               "used_at": self.started}
        if token:
            doc["token"] = secret.keyring(job.config).encrypt(token)
        self._write({"service": doc})
        self.health = STARTING

    def _fence(self):
        return {"_id": self.job._id,
                "locked.token": (self.job.locked or {}).get("token")}

    def _write(self, fields):
        self.queue.sys.queue.update_one(self._fence(), {"$set": fields})

    def clear(self):
        """Remove the ``service`` field: the server is gone (best
        effort: a database away leaves it to the next run)."""
        try:
            self.queue.sys.queue.update_one(self._fence(),
                                            {"$unset": {"service": ""}})
        except Exception as exc:  # noqa: BLE001 - the run's end counts
            self.job.logger.warning("service address not cleared: %s", exc)

    def set(self, health):
        """Record ``health`` if it changed."""
        if health != self.health:
            self._write({"service.health": health, "service.health_at": now()})
            self.health = health

    def idle_seconds(self):
        """Seconds since the app server last relayed a request to it."""
        doc = self.queue.sys.queue.find_one({"_id": self.job._id},
                                            {"service.used_at": 1})
        used = ((doc or {}).get("service") or {}).get("used_at")
        if used is None:
            used = self.started
        from core4.mongo import to_datetime
        return (now() - to_datetime(used)).total_seconds()
