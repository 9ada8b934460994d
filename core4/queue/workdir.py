"""A worker's private directory, and the removal of those dead workers left.

A worker keeps its jobs' output, result and log files and its lease file
(read by its jobs' watchdogs) in a directory of its own under the system's
temporary folder, ``core4-worker-*``. It removes the directory when it
stops; a worker that was killed cannot, and job output can be large. So a
worker holds an exclusive ``flock`` on ``<directory>/owner`` while it lives
(the kernel releases it however the process ends, and it holds across PID
and network namespaces), and a worker that starts removes every
``core4-worker-*`` directory whose lock it can take: its owner is gone.
Removing it also fences the dead worker's job processes that still run:
their watchdogs find no lease file and stop them. Only the directories of
the same user and host are looked at (``owner`` names the host: on a
temporary folder shared between hosts a lock may hold on one host only).
"""

import fcntl
import os
import shutil
import tempfile
import time

from core4.base import hostname

#: the name of a worker directory starts with this
PREFIX = "core4-worker-"
#: the file a living worker holds locked
OWNER = "owner"
#: seconds a directory is left alone after it was made (its worker takes
#: the lock right after making it)
SETTLE = 60.0
#: a directory without an ``owner`` file (made before core4 locked them)
#: is removed once nothing in it changed for this long
UNLOCKED_AGE = 24 * 3600.0


class WorkDir:
    """The directory of one living worker, locked while it lives."""

    def __init__(self, parent=None):
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        self._fd = None
        try:
            self._fd = os.open(os.path.join(self.path, OWNER),
                               os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                               | os.O_NOFOLLOW, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, ("%d %s\n" % (os.getpid(), hostname()))
                     .encode())
        except BaseException:
            self.remove()
            raise

    @classmethod
    def after_sweep(cls, log, parent=None):
        """Remove the directories of dead workers (see :func:`sweep`,
        logged to ``log``), then make this worker's."""
        swept = sweep(parent)
        if swept:
            log.info("removed %d directories of dead workers: %s",
                     len(swept), ", ".join(swept))
        return cls(parent)

    def file(self, name):
        """The path of ``name`` in the directory."""
        return os.path.join(self.path, name)

    def remove(self):
        """Delete the directory and release it."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _last_change(path):
    """The newest modification time in ``path`` (not recursive)."""
    newest = os.stat(path).st_mtime
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False)
                             .st_mtime)
            except OSError:
                pass
    return newest


def _abandoned(path, now):
    """If no living worker of this user and host owns the directory
    ``path``, return an open descriptor that holds its lock; else None."""
    info = os.stat(path, follow_symlinks=False)
    if info.st_uid != os.getuid() or now - info.st_mtime < SETTLE:
        return None
    try:
        fd = os.open(os.path.join(path, OWNER),
                     os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        if now - _last_change(path) > UNLOCKED_AGE:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        owner = os.read(fd, 4096).decode("utf-8", "replace").split()
    except OSError:  # held: its worker lives
        os.close(fd)
        return None
    if owner[1:2] not in ([], [hostname()]):
        os.close(fd)  # another host's
        return None
    return fd


def sweep(parent=None, now=None):
    """Remove the worker directories under ``parent`` (default: the
    temporary folder) that no living worker owns; return their paths.
    Directories of other users or hosts, or that vanish meanwhile, are
    skipped."""
    parent = parent or tempfile.gettempdir()
    now = time.time() if now is None else now
    removed = []
    try:
        entries = [entry for entry in os.scandir(parent)
                   if entry.name.startswith(PREFIX)
                   and entry.is_dir(follow_symlinks=False)]
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = _abandoned(entry.path, now)
        except OSError:
            continue
        if fd is None:
            continue
        try:
            shutil.rmtree(entry.path)
            removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
