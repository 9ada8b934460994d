"""The job process: what runs inside the OS process of one job.

A worker starts it either by forking its warm launcher
(:mod:`core4.queue.launcher.server`) or, in ``spawn`` mode, as
``python -m core4.queue.launcher.process`` with the claimed job document and
the result path on stdin. Either way the process has its own process group,
its standard output and error go through a pipe into a file the worker
stores in ``sys_stdout`` (see :mod:`core4.queue.launcher.output`), and it
writes the job's outcome to the result file, which the worker records. It
opens a database connection of its own only if the job reports progress.
"""

import base64
import datetime
import gc
import json
import os
import sys

import bson
from bson import json_util
from bson.codec_options import CodecOptions

#: exit code of a job process that wrote its outcome
EXIT_DONE = 0
#: exit code of a job process that failed before writing an outcome
EXIT_LOST = 3
#: exit code of a job process its worker did not let run (see ``gate``)
EXIT_DROPPED = 4


def encode_doc(doc):
    """Serialise a document for the launcher protocol (one line)."""
    return json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS)


#: times decode as aware UTC datetimes, as pymongo reads them in core4
_DECODE = json_util.CANONICAL_JSON_OPTIONS.with_options(
    tz_aware=True, tzinfo=datetime.timezone.utc)


def decode_doc(text):
    """Inverse of :func:`encode_doc`."""
    return json_util.loads(text, json_options=_DECODE)


#: how a job process reads a document sent as BSON: as core4's clients do
_BSON = CodecOptions(tz_aware=True, tzinfo=datetime.timezone.utc)


def encode_bson(doc):
    """Serialise a document as BSON in base64, for a launcher that takes
    it (protocol 2, see :mod:`core4.queue.launcher.server`): about a
    quarter of the time of :func:`encode_doc` and its decoding, and every
    value kept as it is (extended JSON reads a sub-document with a key
    like ``$regex`` or ``$date`` as a value of that type)."""
    return base64.b64encode(bson.encode(doc)).decode("ascii")


def command_doc(command):
    """The job document of a launcher ``command``: ``bson`` (see
    :func:`encode_bson`) or, from a worker of protocol 1, ``doc``."""
    if "bson" in command:
        return bson.decode(base64.b64decode(command["bson"]),
                           codec_options=_BSON)
    return decode_doc(command["doc"])


def write_result(path, outcome):
    """Write the outcome atomically (the worker reads it after exit)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(encode_doc(outcome))
    os.replace(tmp, path)


def read_result(path):
    """Return the outcome a job process wrote, or None."""
    try:
        with open(path) as handle:
            return decode_doc(handle.read())
    except (OSError, ValueError):
        return None


def project_of(doc):
    """The project of a job document: the first part of its name."""
    return doc["name"].split(".", 1)[0]


def config_stamp(project):
    """What the configuration of ``project`` is loaded from, besides the
    environment (which a launcher shares with its children): the path and
    stat of the package defaults, the project's yaml and the local file."""
    from core4.config import cascade
    stamp = []
    for path in (cascade.package_defaults_path(),
                 cascade.project_file(project), cascade.local_path()):
        try:
            info = os.stat(path)
            stamp.append((path, info.st_mtime_ns, info.st_size, info.st_ino))
        except (OSError, TypeError):
            stamp.append((path,))
    return tuple(stamp)


class ConfigCache:
    """The configuration of each project, loaded in the launcher so that a
    forked child inherits it instead of parsing the YAML files again; it is
    loaded anew once one of its files changed (see :func:`config_stamp`).
    ``generation`` counts the loads."""

    def __init__(self):
        self.entries = {}      # project -> (stamp, config)
        self.defaults = None   # stamp of the package defaults parsed
        self.generation = 0

    def get(self, project):
        """Return the current configuration of ``project``, or None if it
        cannot be loaded (the child then loads it and reports why)."""
        from core4.config import load_config, reload_package_defaults
        try:
            stamp = config_stamp(project)
            if stamp[0] != self.defaults:
                # core4.yaml changed (an editable install): parse it anew
                reload_package_defaults()
                self.entries.clear()
                self.defaults = stamp[0]
            entry = self.entries.get(project)
            if entry is None or entry[0] != stamp:
                self.entries.pop(project, None)
                self.generation += 1
                entry = self.entries[project] = (stamp, load_config(project))
                gc.freeze()  # as the launcher's modules: shared, never freed
            return entry[1]
        except Exception:  # noqa: BLE001 - reported by the job process
            if self.entries.pop(project, None) is not None:
                self.generation += 1
            return None


def adopt_config(project, config=None):
    """Forget the cached configurations and return ``project``'s; with
    ``config`` (the launcher's, see :class:`ConfigCache`: loaded from the
    same environment and from files found unchanged when the job came) that
    one is used instead of loading it again."""
    from core4.config import get_config, prime_config, reset_config
    reset_config()
    if config is not None:
        prime_config(project, config)
    return get_config(project)


#: the job a spare builds ahead of its own (see :func:`rehearse`)
STAND_IN = "core4.queue.helper.job.example.NoopJob"


def prepare_ahead(configs, project, name=None, log_path=None):
    """In a spare child (see :mod:`core4.queue.launcher.child`), before
    its job comes: do what the job's start would do first, so that the job
    finds it done: adopt the configuration of ``project`` from the
    launcher's ``configs``; with ``name`` (a prime) set up logging into
    ``log_path`` and import the job class ``name``, else
    :func:`rehearse`. Whatever fails here is left for the job's own start
    to report."""
    from core4.config import upstream
    from core4.logger import setup_logging
    from core4.queue.loader import load_job_class
    try:
        upstream.silence()
        sys.stdout.reconfigure(line_buffering=True)
        entry = configs.entries.get(project)
        if entry is None:
            return
        config = adopt_config(project, entry[1])
        if not name:
            rehearse(config)
            adopt_config(project, entry[1])  # the cache as the job finds it
            return
        setup_logging(config, console=False, log_file=log_path)
        load_job_class(name)
    except BaseException:  # noqa: BLE001 - the job's start meets it too
        pass


def rehearse(config):
    """Take the core4 part of a job's start once, on a stand-in: decode,
    build and validate core4's own no-op job (:data:`STAND_IN`, with the
    adopted ``config``: no configuration is loaded for it) and format one
    log record of it, writing nothing. A child forked from the launcher
    shares its memory until it writes to it, and the first write to each
    page copies it: done here, in a spare waiting for its job, those
    copies no longer slow down the start of the job (by about a
    millisecond, ``docs/benchmarks.rst``)."""
    import logging

    from bson import ObjectId

    from core4.config import prime_config
    from core4.logger.forward import encode_record
    from core4.logger.mongo import record_document
    from core4.queue.launcher.runner import build_job
    from core4.queue.loader import make_job
    prime_config(STAND_IN.split(".", 1)[0], config)
    doc = make_job(STAND_IN).serialise()
    doc["_id"] = ObjectId()
    build_job(command_doc({"bson": encode_bson(doc)}))
    record = logging.LogRecord("core4.queue.job", logging.INFO, __file__, 0,
                               "start execution", (), None)
    record.identifier = str(doc["_id"])
    encode_record(record_document(record))


def run_job(doc, result_path, log_path=None, config=None, piped=False,
            gate=None, primed_log=None):
    """Run the claimed job ``doc`` in this (fresh) process and write its
    outcome; return the exit code. Configuration and logging are set up
    here (``config``: see :func:`adopt_config`) unless a prime did; with
    ``log_path`` the job's ``sys.log`` records go to that file for the
    worker to forward. Its output is captured through an
    :class:`~core4.queue.launcher.output.OutputPipe` unless it goes into a
    pipe already (``piped``: the fork launcher copies it, see
    :class:`~core4.queue.launcher.output.OutputCopies`). With ``gate`` the
    job runs only if ``gate()`` says so once it is prepared (its worker
    admits it meanwhile, see :mod:`core4.queue.parallel`); else nothing
    is written and the code is :data:`EXIT_DROPPED`. A spare primed for
    the job (``primed_log``: the path its logging was set up with, see
    :func:`prepare_ahead`) has adopted ``config`` already, and its log
    handler now writes to ``log_path``."""
    from core4.config import get_config, upstream
    from core4.logger import flush_logging, retarget_log_file, setup_logging
    from core4.mongo.connection import close_clients
    from core4.queue.queue import CoreQueue
    from core4.queue.launcher.output import OutputPipe
    from core4.queue.launcher.runner import execute_claimed
    upstream.silence()  # the worker warned of upstream keys, not each job
    # each line in order with what the job's children write
    sys.stdout.reconfigure(line_buffering=True)
    output = None if piped else OutputPipe()
    try:
        if primed_log and config is not None and log_path and \
                retarget_log_file(primed_log, log_path):
            config = get_config(project_of(doc))
        else:
            config = adopt_config(project_of(doc), config)
            # the job's log records go to sys_log, not its captured output
            setup_logging(config, console=False, log_file=log_path)
        outcome = execute_claimed(doc, lambda: CoreQueue(config), gate)
        if outcome is None:
            return EXIT_DROPPED
        write_result(result_path, outcome)
    finally:
        if output is not None:
            output.close()
        flush_logging(2.0)
        close_clients()
    return EXIT_DONE


def start_watchdog(command, watchdog=None):
    """Arm the job's watchdog (:mod:`core4.queue.launcher.watchdog`) with
    the settings the worker sent: ``{"lease_file", "deadline", "grace"}``
    (``watchdog``: one started ahead, else a new one); none without them (a
    job run by ``execute()``)."""
    watch = command.get("watch")
    if watch:
        if watchdog is None:
            from core4.queue.launcher.watchdog import Watchdog
            watchdog = Watchdog(write_result).start()
        watchdog.arm(watch["lease_file"], watch["deadline"], watch["grace"],
                     command["result"], watch.get("claimed"))


def main():
    """``python -m core4.queue.launcher.process``: run the job given on
    stdin."""
    command = json.loads(sys.stdin.readline())

    def stdin_off():
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)

    def gate():
        word = sys.stdin.readline()
        stdin_off()
        return word == "go\n"

    if not command.get("gated"):
        stdin_off()
    start_watchdog(command)
    return run_job(command_doc(command), command["result"],
                   command.get("log"),
                   gate=gate if command.get("gated") else None)


if __name__ == "__main__":
    sys.exit(main())
