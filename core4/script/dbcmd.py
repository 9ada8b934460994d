"""``coco --db [status|start|stop]``: the embedded NX-27017 server.

Without a configured ``mongo_url`` core4 starts an NX-27017 server under
``<folder.home>/mongo`` on demand, and it keeps running after the command
that started it. ``coco --db`` shows it (state, pid, port, data directory,
size, version), ``--db start`` starts it and ``--db stop`` stops it. With a
configured ``mongo_url`` there is nothing embedded: one line says so (exit
code 2) and nothing is started.
"""

import glob
import importlib.metadata
import os
import re

from core4.error import Core4UserError
from core4.script import display

ACTIONS = ("status", "start", "stop")
#: the distribution of the embedded server
NX = "nx-27017"


def masked(url):
    """``url`` without its password."""
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url or "")


def embedded_dir(config):
    """The embedded server's data directory; a user error if ``config``
    names a ``mongo_url`` (then nothing is embedded)."""
    from core4.mongo.connection import embedded_data_dir
    url = config.sys.queue.url
    if url:
        raise Core4UserError(
            "the database is not embedded: mongo_url is configured (%s); "
            "coco --db manages only the embedded NX-27017 server"
            % masked(url))
    return embedded_data_dir(config)


def nx_version():
    """The installed NX-27017 version, or ``?``."""
    try:
        return importlib.metadata.version(NX)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def data_size(data_dir):
    """Bytes of the data directory's ``*.db`` files."""
    total = 0
    for path in glob.glob(os.path.join(glob.escape(data_dir), "*.db")):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


def stored_port(data_dir):
    """The port kept in ``<data_dir>/port``, or None."""
    from core4.mongo.embedded import PORT_FILE
    try:
        with open(os.path.join(data_dir, PORT_FILE)) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def access(data_dir):
    """Who may use the embedded server: the owner of its credentials."""
    from core4.mongo import nxauth
    return "owner only: user %s, password in %s (0600)" % (
        nxauth.USER, os.path.join(data_dir, nxauth.CREDENTIALS_FILE))


def status_lines(data_dir):
    """The lines of ``coco --db status`` (the url without credentials)."""
    from core4.mongo import embedded
    status = embedded.server_status(data_dir)
    alive = bool(status and status["alive"])
    port = status["port"] if alive else stored_port(data_dir)
    if alive:
        state = "running (pid %d, since %s)" % (
            status["pid"], display.iso(status.get("started_at")))
    elif not os.path.isdir(data_dir):
        state = "not running, never started (coco --db start)"
    else:
        state = "not running (coco --db start)"
    rows = [("state", state),
            ("url", "mongodb://127.0.0.1:%d/" % port if port else "-"),
            ("access", access(data_dir)),
            ("port", port or "none yet (chosen at the first start)"),
            ("data dir", data_dir),
            ("size", display.size(data_size(data_dir))),
            ("version", "%s %s" % (NX, nx_version())),
            ("log", os.path.join(data_dir, embedded.LOG_FILE))]
    return ["%-9s %s" % (key + ":", value) for key, value in rows]


def live_daemons(config):
    """Identifiers of the live daemons using the (running) embedded
    server: they would start it again after a stop."""
    from core4.queue.daemon import alive_daemons
    from core4.queue.queue import CoreQueue
    return [doc["_id"] for doc in alive_daemons(CoreQueue(config).sys,
                                                 config)]


def cmd_db(action, config, out=print):
    """Run ``coco --db ACTION``."""
    from core4.mongo import embedded
    data_dir = embedded_dir(config)
    if action == "status":
        for line in status_lines(data_dir):
            out(line)
        return
    status = embedded.server_status(data_dir)
    alive = bool(status and status["alive"])
    if action == "start":
        if alive:
            out("the embedded NX-27017 is running already: pid %d, %s" % (
                status["pid"], status["url"]))
            return
        url = embedded.ensure_server(data_dir)
        status = embedded.server_status(data_dir) or {}
        out("started the embedded NX-27017: pid %s, %s, data %s" % (
            status.get("pid", "?"), status.get("url") or masked(url),
            data_dir))
        return
    if alive:
        daemons = live_daemons(config)
        if daemons:
            raise Core4UserError(
                "%d daemon(s) use the embedded database and would start it "
                "again (%s): stop them first (coco --halt)" % (
                    len(daemons), ", ".join(daemons)))
    if embedded.stop_server(data_dir):
        out("stopped the embedded NX-27017 (pid %s), data %s" % (
            status.get("pid", "?") if status else "?", data_dir))
    else:
        out("the embedded NX-27017 is not running (data %s)" % data_dir)


def who_line(config):
    """``coco --who``'s database line for the embedded server, and whether
    it runs (``--who`` never starts it)."""
    from core4.mongo import embedded, nxauth
    from core4.mongo.connection import embedded_data_dir
    data_dir = embedded_data_dir(config)
    status = embedded.server_status(data_dir)
    database = config.sys.queue.database
    if status and status["alive"]:
        return ("database: embedded NX-27017 at %s (owner only: "
                "password in %s), data %s, pid %s, database %s" % (
                    status["url"], nxauth.CREDENTIALS_FILE, data_dir,
                    status["pid"], database)), True
    return ("database: embedded NX-27017, not running (coco --db start), "
            "data %s, database %s" % (data_dir, database)), False
