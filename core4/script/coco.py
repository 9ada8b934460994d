"""coco: the core4 control command.

Every user mistake ends with one line on stderr naming the problem and exit
code 2; no tracebacks.
"""

import argparse
import json
import os
import sys

import pymongo.errors

import core4
from core4.config import get_config
from core4.error import Core4UserError
from core4.logger import flush_logging, format_record, job_records
from core4.mongo.connection import close_clients
from core4.queue import states
from core4.script import display

GLOBAL = "__global__"
#: exit code when the reader of the output went away (128 + SIGPIPE)
PIPE_CLOSED = 141


class CocoParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message):
        self.exit(2, "%s: %s (see %s --help)\n" % (self.prog, message,
                                                  self.prog))


def build_parser():
    """Return the ``coco`` argument parser."""
    parser = CocoParser(
        prog="coco", description="core4 control: enqueue, inspect and "
        "control jobs, run workers.")
    group = parser.add_mutually_exclusive_group()
    add = group.add_argument
    add("-e", "--enqueue", nargs="+", metavar=("QUAL_NAME", "ARG"),
        help="enqueue a job; ARGs are k=v with JSON literal values, or one "
        "JSON object; prints the new _id")
    add("-d", "--detail", nargs="+", metavar="ID|QUAL_NAME",
        help="show every matching job with its output")
    add("-l", "--listing", nargs="*", metavar="STATE",
        help="list queued jobs, optionally of some states")
    add("-i", "--info", action="store_true",
        help="count queued jobs by name and state")
    add("--services", action="store_true",
        help="list running service jobs with their urls")
    add("--container", action="store_true",
        help="list the API containers and their routes")
    add("--kill", nargs="+", metavar="ID|QUAL_NAME", help="kill jobs")
    add("--restart", nargs="+", metavar="ID|QUAL_NAME", help="restart jobs")
    add("--remove", nargs="+", metavar="ID|QUAL_NAME",
        help="remove jobs (a running job when its run ends)")
    add("--remove-hard", nargs="+", metavar="ID|QUAL_NAME",
        help="delete jobs from the queue at once")
    add("--pause", nargs="?", const=GLOBAL, metavar="PROJECT",
        help="stop claiming jobs (of PROJECT)")
    add("--resume", nargs="?", const=GLOBAL, metavar="PROJECT",
        help="resume claiming jobs (of PROJECT)")
    add("--mode", action="store_true", help="show maintenance mode")
    add("-x", "--halt", action="store_true",
        help="stop all running daemons gracefully")
    add("-a", "--alive", action="store_true", help="list live daemons")
    add("--migrate", action="store_true",
        help="convert the times of a database written by core4 < 0.3 "
        "(epoch seconds) to datetimes")
    add("--rotate-key", action="store_true",
        help="re-encrypt the secret job arguments in sys_queue and "
        "sys_journal with a new key")
    add("-o", "--who", action="store_true",
        help="show which database and configuration are in use")
    add("--db", nargs="?", const="status", choices=("status", "start",
                                                    "stop"),
        metavar="status|start|stop",
        help="show (default), start or stop the embedded database")
    add("-v", "--version", action="store_true", help="print the version")
    add("-w", "--worker", nargs="?", const="worker", metavar="NAME",
        help="run a worker NAME@hostname in the foreground")
    add("-s", "--scheduler", nargs="?", const="scheduler", metavar="NAME",
        help="run a scheduler NAME@hostname in the foreground")
    add("--application", nargs="?", const="app", metavar="NAME",
        help="serve the REST API, the dashboard and the projects' "
        "containers as NAME@hostname")
    add("--init", nargs="+", metavar=("NAME", "DESCRIPTION"),
        help="create the project NAME in the current directory")
    add("-m", "--home", action="store_true",
        help="list the projects installed in the core4 home")
    add("-j", "--jobs", action="store_true",
        help="list the job classes of core4 and of every project")
    add("--build", nargs="?", const="patch",
        choices=("major", "minor", "patch"),
        help="start release X.Y.Z of the project (git-flow)")
    add("--release", action="store_true",
        help="finish the pending release of the project")
    parser.add_argument("--start-method", choices=("fork", "spawn"),
                        help="with --worker: how job processes start")
    parser.add_argument("--port", type=_port,
                        help="with --application: port (api.port, 5001)")
    parser.add_argument("--address", help="with --application: address to "
                        "listen on (api.address, 127.0.0.1)")
    parser.add_argument("--project", help="with --application: serve only "
                        "this project's containers")
    parser.add_argument("--filter", nargs="+", metavar="PREFIX",
                        help="with --application: serve only containers "
                        "whose qualified name starts with a PREFIX")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="with --init: do not ask (needed without a "
                        "terminal)")
    parser.add_argument("-n", "--introspect", action="store_true",
                        help="with --jobs: register them in sys.job")
    return parser


def _port(value):
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a port number" % value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("port %d is not 0 to 65535" % port)
    return port


def _no_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def parse_job_args(values):
    """Turn ``k=v`` pairs (JSON literal values) or one JSON object into a
    dict; raise :class:`Core4UserError` naming the bad part."""
    if len(values) == 1 and values[0].lstrip().startswith("{"):
        try:
            args = json.loads(values[0], parse_constant=_no_constant)
        except ValueError as exc:
            raise Core4UserError("arguments are not valid JSON: %s" % exc)
        if not isinstance(args, dict):
            raise Core4UserError("arguments must be a JSON object")
        return args
    args = {}
    for value in values:
        key, sep, literal = value.partition("=")
        if not sep or not key.strip():
            raise Core4UserError(
                "argument %r is not k=v (or a JSON object)" % value)
        try:
            args[key.strip()] = json.loads(literal,
                                           parse_constant=_no_constant)
        except ValueError:
            raise Core4UserError(
                "value of argument %r is not a JSON literal: %r (quote "
                "strings: %s='\"%s\"')" % (key, literal, key, literal))
    return args


def _queue():
    from core4.queue.queue import CoreQueue
    return CoreQueue(get_config())


def cmd_enqueue(values):
    """``--enqueue``: enqueue a job (in its project's environment where it
    cannot be imported here) and print its id."""
    from core4.queue.remote import enqueue_anywhere
    name, args = values[0], parse_job_args(values[1:])
    print(enqueue_anywhere(_queue(), name, **args))


def cmd_detail(values):
    """``--detail``: every matching job with its output."""
    queue = _queue()
    first = True
    for value in values:
        ids = _ids_or_journal(queue, value)
        for _id in ids:
            doc = queue.detail(_id)
            if doc is None:
                raise Core4UserError("job %s not found" % _id)
            if not first:
                print()
            first = False
            print(display.pretty(doc))
            out = queue.stdout(_id)
            print("STDOUT:")
            if out:
                if isinstance(out, bytes):
                    out = out.decode("utf-8", errors="replace")
                print(out.rstrip("\n"))
            print("LOG:")
            for record in job_records(queue.sys, _id):
                print(format_record(record))


def _ids_or_journal(queue, value, recent=10):
    """Ids of a job id, of the queued jobs of a name, or else of its most
    recent ``recent`` journaled jobs."""
    from bson import ObjectId
    from core4.error import CoreJobNotFound
    if ObjectId.is_valid(str(value)):
        return [ObjectId(str(value))]
    try:
        return queue.resolve(value)
    except CoreJobNotFound:
        names = [value]
        try:
            from core4.queue.loader import load_job_class
            names.append(load_job_class(value).qual_name())
        except Core4UserError:
            pass  # not importable here: its stored name is all we have
        ids = [doc["_id"] for doc in queue.sys.journal.find(
            {"name": {"$in": names}}, {"_id": 1}).sort("_id", -1).limit(
                recent)]
        if not ids:
            raise
        return ids[::-1]


def cmd_listing(values):
    """``--listing``: a table of queued jobs."""
    for state in values:
        if state not in states.ALL:
            raise Core4UserError("unknown state %r (one of %s)" % (
                state, ", ".join(states.ALL)))
    docs = _queue().listing(*values)
    if not docs:
        print("no jobs.")
        return
    print(display.table(display.job_rows(docs), display.JOB_HEADER))


def cmd_info():
    """``--info``: counts of queued jobs by name, state and flags."""
    counts = {}
    for doc in _queue().listing():
        key = (doc["name"], doc["state"], display.flags(doc))
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        print("no jobs.")
        return
    rows = [[n, state, flag, name] for (name, state, flag), n
            in sorted(counts.items())]
    print(display.table(rows, ["n", "state", "flag", "name"]))


def _each(values, action, verb, done):
    queue = _queue()
    failed = 0
    for value in values:
        for _id in queue.resolve(value, queued=True):
            result = getattr(queue, action)(_id)
            if result is None or result is False:
                failed += 1
                print("failed to %s [%s]" % (verb, _id))
            elif result is True or result == _id:
                print("%s [%s]" % (done, _id))
            else:
                print("%s [%s], new _id [%s]" % (done, _id, result))
    if failed:
        raise Core4UserError("%d job(s) not in a state to %s" % (
            failed, verb))


def cmd_remove(values):
    """``--remove``: journal jobs; a running job is journaled when its run
    ends (in the state it ends in), and ``--kill`` stops a run."""
    queue = _queue()
    failed = 0
    for value in values:
        for _id in queue.resolve(value, queued=True):
            if not queue.remove(_id):
                failed += 1
                print("failed to remove [%s]" % _id)
            elif queue.sys.queue.find_one(
                    {"_id": _id, "state": states.RUNNING}, {"_id": 1}):
                print("removing [%s]: it is running; the removal takes "
                      "effect when the run ends (--kill stops it now)" % _id)
            else:
                print("removed [%s]" % _id)
    if failed:
        raise Core4UserError("%d job(s) not in a state to remove" % failed)


def cmd_worker(name, start_method):
    """``--worker``: run a worker until halted or signalled."""
    from core4.queue.worker import CoreWorker
    if not name.replace("-", "").replace("_", "").isalnum():
        raise Core4UserError("worker name %r may only contain letters, "
                             "digits, '-' and '_'" % name)
    CoreWorker(name, get_config(), start_method=start_method).start()


def cmd_init(values, yes):
    """``--init NAME [DESCRIPTION]``: create a project (asks only on a
    terminal)."""
    from core4.project.create import create_project
    if len(values) > 2:
        raise Core4UserError("--init takes NAME and one DESCRIPTION (quote "
                             "it)")
    create_project(get_config(), values[0],
                   values[1] if len(values) > 1 else None, yes=yes,
                   interactive=sys.stdin is not None and sys.stdin.isatty())


def cmd_home():
    """``--home``: installed projects with their versions."""
    from core4.project.home import installed_projects
    config = get_config()
    rows = [[p["name"], p["version"] or "?", (p["commit"] or "")[:10],
             p["python"] or "MISSING .venv", p["root"]]
            for p in installed_projects(config)]
    if not rows:
        print("no project in %s." % config.folder.home)
        return
    print(display.table(rows, ["project", "version", "commit", "python",
                               "root"]))


def cmd_jobs(introspect):
    """``--jobs``: job classes per project (``--introspect``: register)."""
    from core4.queue.registry import collect_all, register
    entries = collect_all(get_config())
    if introspect:
        register(_queue().sys, entries)
    rows = [[e["project"], e["name"], "yes" if e["valid"] else "NO",
             e.get("schedule") or "", e.get("author") or "",
             e.get("exception") or ""] for e in entries]
    print(display.table(rows, ["project", "job", "valid", "schedule",
                               "author", "error"]))


def cmd_build(part):
    """``--build``: start a release."""
    from core4.project.release import build
    build(".", part)


def cmd_release():
    """``--release``: finish a release."""
    from core4.project.release import release
    release(".")


def cmd_scheduler(name):
    """``--scheduler``: run a scheduler until halted or signalled."""
    from core4.queue.scheduler.scheduler import CoreScheduler
    _check_daemon_name(name)
    CoreScheduler(name, get_config()).start()


def cmd_application(ns):
    """``--application``: serve until halted or signalled."""
    from core4.api.server import AppServer
    _check_daemon_name(ns.application)
    if ns.project is not None and not ns.project.isidentifier():
        raise Core4UserError("--project %r is not a project name" %
                             ns.project)
    AppServer(ns.application, get_config(), port=ns.port,
              address=ns.address, project=ns.project,
              filters=ns.filter).start()


def _check_daemon_name(name):
    if not name.replace("-", "").replace("_", "").isalnum():
        raise Core4UserError("daemon name %r may only contain letters, "
                             "digits, '-' and '_'" % name)


def cmd_mode():
    """``--mode``: the maintenance mode."""
    mode = _queue().maintenance()
    print("global maintenance: %s" % ("on" if mode["global"] else "off"))
    print("projects in maintenance: %s" % (
        ", ".join(mode["projects"]) or "none"))


def cmd_alive():
    """``--alive``: live daemons."""
    from core4.queue.daemon import alive_daemons
    config = get_config()
    docs = alive_daemons(_queue().sys, config)
    if not docs:
        print("no daemon.")
        return
    rows = [[d["_id"], d.get("kind", ""), d.get("pid", ""),
             d.get("phase", ""), display.iso(d.get("heartbeat"))]
            for d in docs]
    print(display.table(rows, ["_id", "kind", "pid", "phase", "heartbeat"]))


def cmd_who():
    """``--who``: database, configuration and folders in use (a stopped
    embedded server stays stopped)."""
    from core4.script.dbcmd import masked, who_line
    config = get_config()
    connect = config.sys.queue
    print("core4 %s, python %s (%s)" % (core4.__version__,
                                        sys.version.split()[0],
                                        sys.executable))
    print("config file: %s" % (os.environ.get("CORE4_CONFIG") or
                               _local_config_file() or "none"))
    print("home: %s" % config.folder.home)
    running = True
    if connect.url:
        print("database: %s (configured mongo_url), database %s" % (
            masked(connect.url), connect.database))
    else:
        line, running = who_line(config)
        print(line)
    if running:
        _queue().sys.ping()
    print("sys.queue: %s.%s" % (connect.database, connect.collection))


def cmd_migrate():
    """``--migrate``: convert the float times of a database written by
    core4 < 0.3 to datetimes; one line per collection changed."""
    from core4.logger import get_logger
    from core4.queue import migrate
    system = _queue().sys
    log = get_logger("core4.queue.migrate")
    changed = migrate.migrate(system, log)
    if not changed:
        print("nothing to migrate (schema %d)" % migrate.SCHEMA)
    for name, number in changed.items():
        print("%s: %d document(s) converted" % (name, number))


def cmd_rotate_key():
    """``--rotate-key``: re-encrypt every secret job argument with a new
    key (:func:`core4.queue.secret.rotate_key`)."""
    from core4.queue.secret import rotate_key
    result = rotate_key(get_config())
    print("rotated the key of %s: %d job(s) in sys_queue and %d in "
          "sys_journal re-encrypted" % (result["source"], result["sys_queue"],
                                        result["sys_journal"]))
    if result["unreadable"]:
        print("%d secret(s) no key can read were left as they are" %
              result["unreadable"])


def _local_config_file():
    for path in (os.path.expanduser("~/.core4/local.yaml"),
                 "/etc/core4/local.yaml"):
        if os.path.exists(path):
            return path
    return None


def dispatch(ns, parser):
    """Run the command ``ns`` asks for; return the exit code."""
    if ns.version:
        print("core4 %s" % core4.__version__)
    elif ns.enqueue:
        cmd_enqueue(ns.enqueue)
    elif ns.detail:
        cmd_detail(ns.detail)
    elif ns.listing is not None:
        cmd_listing(ns.listing)
    elif ns.services:
        from core4.script.services import cmd_services
        cmd_services(_queue())
    elif ns.container:
        from core4.script.services import cmd_container
        cmd_container()
    elif ns.info:
        cmd_info()
    elif ns.kill:
        _each(ns.kill, "kill", "kill", "killed")
    elif ns.restart:
        _each(ns.restart, "restart", "restart", "restarted")
    elif ns.remove:
        cmd_remove(ns.remove)
    elif ns.remove_hard:
        _each(ns.remove_hard, "remove_hard", "remove", "hard removed")
    elif ns.pause:
        _queue().pause(None if ns.pause == GLOBAL else ns.pause)
        cmd_mode()
    elif ns.resume:
        _queue().resume(None if ns.resume == GLOBAL else ns.resume)
        cmd_mode()
    elif ns.mode:
        cmd_mode()
    elif ns.init:
        cmd_init(ns.init, ns.yes)
    elif ns.home:
        cmd_home()
    elif ns.jobs:
        cmd_jobs(ns.introspect)
    elif ns.build:
        cmd_build(ns.build)
    elif ns.release:
        cmd_release()
    elif ns.worker:
        cmd_worker(ns.worker, ns.start_method)
    elif ns.scheduler:
        cmd_scheduler(ns.scheduler)
    elif ns.application:
        cmd_application(ns)
    elif ns.halt:
        _queue().halt()
        print("system halt")
    elif ns.alive:
        cmd_alive()
    elif ns.who:
        cmd_who()
    elif ns.db:
        from core4.script.dbcmd import cmd_db
        cmd_db(ns.db, get_config())
    elif ns.migrate:
        cmd_migrate()
    elif ns.rotate_key:
        cmd_rotate_key()
    else:
        parser.exit(2, "coco: nothing to do (see coco --help)\n")
    return 0


def first_line(exc):
    """The first line of an error message, without pymongo's details (the
    configured timeouts, the topology, the full server answer)."""
    text = str(exc).split("\n")[0]
    for tail in (" (configured timeouts", ", Timeout:", ", full error:"):
        text = text.split(tail)[0]
    return text


def main(argv=None):
    """Entry point of ``coco``."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.start_method and not ns.worker:
        parser.error("--start-method goes with --worker")
    if ns.yes and not ns.init:
        parser.error("--yes goes with --init")
    if ns.introspect and not ns.jobs:
        parser.error("--introspect goes with --jobs")
    for flag in ("port", "address", "project", "filter"):
        if getattr(ns, flag) is not None and not ns.application:
            parser.error("--%s goes with --application" % flag)
    try:
        try:
            return dispatch(ns, parser)
        finally:
            flush_logging()
            close_clients()
    except Core4UserError as exc:
        print("coco: %s" % exc, file=sys.stderr)
        return getattr(exc, "code", 2)
    except pymongo.errors.ConnectionFailure as exc:
        print("coco: cannot reach MongoDB: %s" % first_line(exc),
              file=sys.stderr)
        return 2
    except pymongo.errors.PyMongoError as exc:
        print("coco: MongoDB error: %s" % first_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe():
    """The reader of our output went away (``coco ... | head``): end
    quietly, like a tool killed by SIGPIPE (exit code 141)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return PIPE_CLOSED


def run():
    """Console entry point: like :func:`main`, but skips pymongo's slow
    interpreter-shutdown hooks (about 0.5 s) once all output is flushed."""
    try:
        code = main()
    except BrokenPipeError:  # while argparse printed --help
        code = closed_pipe()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            code = code or closed_pipe()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
