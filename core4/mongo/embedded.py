"""The embedded NX-27017 server, started on demand without a ``mongo_url``.

One data directory holds one server. The directory is private (0700) and
so is every file in it (0600; the server runs with umask 077, and the modes
of a directory written by an older core4 are fixed at the next start). The
server accepts only clients that authenticate with the credentials of
``credentials.json`` (see :mod:`core4.mongo.nxauth`). Files inside
``data_dir``:

- ``server.json``: the recorded state ``{"pid", "port", "url", "started_at",
  "python", "auth"}`` (``started_at`` in epoch seconds, ``url`` without
  credentials), written atomically
- ``credentials.json``: the user and password of the server's only user
- ``port``: the server's TCP port on 127.0.0.1, chosen once (a free port)
  and reused at every start, so that clients reconnect by themselves when
  the server restarts
- ``server.lock``: ``flock``-ed around every check-and-start and stop
- ``nx.pid``, ``nx.log``: NX-27017's own pid and log file
- ``nx.out``: stdout/stderr of the latest start (truncated at each start)
- ``<database>.db``: the SQLite files of the data

The server is detached (own session) and outlives the process that started
it; :func:`stop_server` ends it. Plain functions, no module-level state.
"""

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import time

import psutil

from core4 import private
from core4.error import CoreDatabaseUnreachable
from core4.mongo import nxauth

STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
PID_FILE = "nx.pid"
LOG_FILE = "nx.log"
OUT_FILE = "nx.out"
PORT_FILE = "port"
#: seconds a recorded, live server may stay silent before it is killed
HUNG_AFTER = 5.0
#: how many ports are tried when the chosen one was taken meanwhile
PORT_ATTEMPTS = 5
# ``python -m nx_27017.nx_27017`` works but runpy warns (the package imports
# the module first); calling main() keeps nx.out clean. The filter drops the
# two INFO lines NX logs per generic command (every ping), which would grow
# nx.log and nx.out at each CLI start.
# core4.mongo.nxpatch fixes gaps of NX before it serves (see there), and
# core4.mongo.nxauth makes it refuse clients without credentials.
_NX_CODE = ("import logging, os, sys; os.umask(0o077); "
            "from nx_27017.nx_27017 import main; "
            "import core4.mongo.nxpatch; core4.mongo.nxpatch.apply(); "
            "import core4.mongo.nxauth; core4.mongo.nxauth.apply(); "
            "logging.getLogger('nx_27017').addFilter(lambda r: not str(r.msg)"
            ".startswith(('Calling db.command', 'NeoSQLite returned'))); "
            "sys.exit(main())")
# OP_MSG {"ping": 1, "$db": "admin"}: header, flags, section kind 0, BSON
_PING = b"\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00"
_PING = struct.pack("<i", len(_PING) + 5) + _PING + b"\x00"
_PING = struct.pack("<iiiiIB", 21 + len(_PING), 1, 0, 2013, 0, 0) + _PING


def ping(port, timeout=1.0):
    """Return True if a MongoDB server on 127.0.0.1:``port`` answers a ping.

    One TCP connect and one raw OP_MSG round trip: no pymongo client, no
    monitor threads, so it is cheap enough for every CLI start.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as sock:
            sock.sendall(_PING)
            with sock.makefile("rb") as reply:
                length, _, _, opcode = struct.unpack("<iiii", reply.read(16))
                if opcode != 2013 or not 21 < length < (1 << 20):
                    return False
                body = reply.read(length - 16)
    except (OSError, struct.error):
        return False
    import bson  # ships with pymongo; imported here to keep imports light
    try:
        return body[4] == 0 and bson.decode(body[5:]).get("ok") == 1
    except Exception:  # noqa: BLE001 - any garbage means "not a server"
        return False


def _nx_process(pid, data_dir, port=None):
    """Return the live :class:`psutil.Process` if ``pid`` is the NX server
    of ``data_dir`` (and listens on ``port`` if given), else None."""
    try:
        proc = psutil.Process(int(pid))
        if _exited(proc, 0):
            return None
        cmdline = proc.cmdline()
    except (psutil.Error, ValueError, TypeError):
        return None
    args = dict(zip(cmdline, cmdline[1:]))
    if not any("nx_27017" in part for part in cmdline) \
            or args.get("--data-dir") != data_dir \
            or (port is not None and args.get("-p") != str(port)):
        return None
    return proc


def _read(data_dir, name, parse):
    """Return ``parse(content of data_dir/name)``, None if missing or bad."""
    try:
        with open(os.path.join(data_dir, name), errors="replace") as handle:
            return parse(handle.read())
    except (OSError, ValueError):
        return None


def _read_state(data_dir):
    """Return the dict in ``server.json``, or None if missing or unreadable."""
    state = _read(data_dir, STATE_FILE, json.loads)
    if not isinstance(state, dict) or not all(
            isinstance(state.get(key), kind) for key, kind in
            (("pid", int), ("port", int), ("url", str))):
        return None
    return state


def _write_file(data_dir, name, text):
    """Write ``data_dir/name`` atomically (tmp file + os.replace), 0600."""
    private.write_private(os.path.join(data_dir, name), text)


def _write_state(data_dir, state):
    """Write ``server.json`` atomically."""
    _write_file(data_dir, STATE_FILE, json.dumps(state))


def _exited(proc, timeout):
    """Poll up to ``timeout`` s until ``proc`` exited (a zombie counts: it
    holds no port nor file; our own zombie child is reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, os.WNOHANG)
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _terminate(proc, timeout=10.0):
    """SIGTERM ``proc``, wait up to ``timeout`` seconds, then SIGKILL it."""
    with contextlib.suppress(psutil.Error):
        proc.terminate()
        proc.resume()  # a stopped (SIGSTOP) process must run to see SIGTERM
        if not _exited(proc, timeout):
            proc.kill()
            _exited(proc, timeout)


def _tail(data_dir, lines=2):
    """Return the last non-empty lines of nx.out (else nx.log) as one line."""
    for name in (OUT_FILE, LOG_FILE):
        text = _read(data_dir, name, lambda t: t[-4096:]) or ""
        found = [ln.strip() for ln in text.splitlines() if ln.strip(" ^~\t")]
        if found:
            return " | ".join(found[-lines:])
    return "no output"


def _unreachable(data_dir, reason):
    """Return a one-line :class:`CoreDatabaseUnreachable` for ``data_dir``."""
    return CoreDatabaseUnreachable(
        ("cannot start the embedded NX-27017 server in %s: %s"
         % (data_dir, reason)).replace("\n", " "))


def _locked(data_dir, timeout):
    """Hold an exclusive flock on ``data_dir/server.lock`` (poll, timeout)."""
    return private.locked(os.path.join(data_dir, LOCK_FILE), timeout,
                          lambda reason: _unreachable(data_dir, reason))


def _free_port():
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_user(port):
    """Describe the process listening on ``port`` (or None if none)."""
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port \
                    and conn.status == psutil.CONN_LISTEN:
                try:
                    return "pid %d, %s" % (conn.pid, psutil.Process(
                        conn.pid).name()) if conn.pid else "another process"
                except psutil.Error:
                    return "pid %s" % conn.pid
    except (psutil.Error, OSError):
        pass
    return None


def _start(data_dir, timeout):
    """Start a detached NX-27017 server on ``data_dir`` at its port (chosen
    once, see ``PORT_FILE``); return its state."""
    deadline = time.monotonic() + timeout
    nxauth.ensure_credentials(data_dir)
    stored = _read(data_dir, PORT_FILE, int)
    for _ in range(1 if stored else PORT_ATTEMPTS):
        port = stored or _free_port()
        user = _port_user(port)
        if user is not None:
            raise _unreachable(data_dir, "its port %d is taken by %s; stop "
                               "that, or delete %s to choose another port"
                               % (port, user, os.path.join(data_dir,
                                                           PORT_FILE)))
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(data_dir, PID_FILE))
        cmd = [sys.executable, "-c", _NX_CODE, "--data-dir", data_dir,
               "--host", "127.0.0.1", "-p", str(port),
               "--pid-file", os.path.join(data_dir, PID_FILE),
               "--log-file", os.path.join(data_dir, LOG_FILE)]
        try:
            with os.fdopen(private.open_private(
                    os.path.join(data_dir, OUT_FILE)), "wb") as out:
                child = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=data_dir, close_fds=True,
                    start_new_session=True, umask=0o077)
        except OSError as exc:
            raise _unreachable(data_dir, str(exc)) from None
        pause = 0.01
        while child.poll() is None:
            if ping(port, 0.5) and child.poll() is None:
                if not stored:
                    _write_file(data_dir, PORT_FILE, "%d\n" % port)
                state = {"pid": child.pid, "port": port,
                         "url": "mongodb://127.0.0.1:%d/" % port,
                         "started_at": time.time(), "python": sys.executable,
                         "auth": True}
                _write_state(data_dir, state)
                child.returncode = 0  # detached on purpose: no ResourceWarning
                return state
            if time.monotonic() > deadline:
                _terminate(psutil.Process(child.pid))
                child.poll()
                raise _unreachable(data_dir, "no answer within %.0f s (%s)"
                                   % (timeout, _tail(data_dir)))
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)
        output = _tail(data_dir)
        if stored or "address already in use" not in output.lower():
            raise _unreachable(data_dir, "exited with %s: %s"
                               % (child.returncode, output))
    raise _unreachable(data_dir, "no free port after %d attempts (%s)"
                       % (PORT_ATTEMPTS, _tail(data_dir)))


def _client_url(data_dir, state):
    """The url of ``state`` with the credentials of ``data_dir``, or None
    if the server runs without them (started by an older core4) or the
    credentials file is gone."""
    credentials = nxauth.read_credentials(data_dir)
    if not (state.get("auth") and credentials):
        return None
    return nxauth.client_url(state["url"], credentials)


def ensure_server(data_dir: str, timeout: float = 30.0,
                  kill_hung: bool = True) -> str:
    """Return ``mongodb://core4:PASSWORD@127.0.0.1:PORT/`` of a live server
    for ``data_dir``.

    ``data_dir`` is created if missing (0700; the modes of an existing one
    are made private). A recorded, live, answering server is returned at
    once (no lock); otherwise, under ``server.lock``, a stale or silent
    server, or one without authentication (started by an older core4), is
    killed and a new one started (waiting up to ``timeout`` seconds for it
    to answer). Without ``kill_hung`` a live server that does not answer
    (stalled, stopped) or runs without authentication is left alone:
    :class:`CoreDatabaseUnreachable` is raised instead. Raises
    :class:`CoreDatabaseUnreachable` with a one-line message if no server
    can be started.
    """
    data_dir = os.path.realpath(os.path.expanduser(data_dir))
    state = _read_state(data_dir)
    if state and _nx_process(state["pid"], data_dir, state["port"]) \
            and ping(state["port"], 1.0):
        url = _client_url(data_dir, state)
        if url:
            with contextlib.suppress(OSError):
                if not private.is_private(data_dir):
                    private.tighten(data_dir)
            if not os.path.exists(os.path.join(data_dir, PORT_FILE)):
                _write_file(data_dir, PORT_FILE, "%d\n" % state["port"])
            return url
    try:
        private.make_private_dir(data_dir)
        private.tighten(data_dir)
    except OSError as exc:
        raise _unreachable(data_dir, exc.strerror or str(exc)) from None
    with _locked(data_dir, timeout):
        state = _read_state(data_dir)
        proc = state and _nx_process(state["pid"], data_dir, state["port"])
        url = state and _client_url(data_dir, state)
        if proc and not kill_hung:
            raise _unreachable(data_dir, (
                "the server (pid %d) runs but does not answer" if url else
                "the server (pid %d) runs without authentication (started "
                "by an older core4): restart it (coco --db stop, coco --db "
                "start)") % proc.pid)
        if proc and url:  # recorded and alive: give it HUNG_AFTER s
            deadline = time.monotonic() + HUNG_AFTER
            while time.monotonic() < deadline and not _exited(proc, 0):
                if ping(state["port"], 1.0):
                    return url
                time.sleep(0.05)
        if proc:
            _terminate(proc)
        orphan = _nx_process(_read(data_dir, PID_FILE, int), data_dir)
        if orphan:  # started but never recorded: one server per data dir
            _terminate(orphan)
        return _client_url(data_dir, _start(data_dir, timeout))


def server_status(data_dir: str) -> dict | None:
    """Return the recorded state of ``data_dir``'s server plus ``alive``
    (the recorded process runs and answers a ping), ``data_dir`` and
    ``log`` (path of nx.log); None if no server was ever recorded there."""
    data_dir = os.path.realpath(os.path.expanduser(data_dir))
    state = _read_state(data_dir)
    if state is None:
        return None
    alive = bool(_nx_process(state["pid"], data_dir, state["port"])
                 and ping(state["port"], 1.0))
    return dict(state, alive=alive, data_dir=data_dir,
                log=os.path.join(data_dir, LOG_FILE))


def stop_server(data_dir: str, timeout: float = 10) -> bool:
    """Stop the server of ``data_dir`` (SIGTERM, wait ``timeout``, SIGKILL)
    and remove ``server.json``. Return True if a process was stopped."""
    data_dir = os.path.realpath(os.path.expanduser(data_dir))
    if not os.path.isdir(data_dir):
        return False
    stopped = False
    with _locked(data_dir, timeout + HUNG_AFTER + 30):
        state = _read_state(data_dir) or {}
        for pid in (state.get("pid"), _read(data_dir, PID_FILE, int)):
            proc = _nx_process(pid, data_dir)
            if proc:
                _terminate(proc, timeout)
                stopped = True
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(data_dir, STATE_FILE))
    return stopped
