"""Private files of the core4 home: readable and writable by their owner
only (directories 0700, files 0600).

The secrets file (``<folder.home>/secrets.json``, or the path in
``CORE4_SECRET_FILE``) holds what must not be readable by someone who can
merely reach the database: the app servers' signing secrets
(:mod:`core4.api.secret`) and the keys of secret job arguments
(:mod:`core4.queue.secret`). Every app server, worker and ``coco`` of one
home shares it; it is created at first use and changed under a lock, so
concurrent first starts agree on one value.
"""

import contextlib
import fcntl
import json
import os
import stat
import time

from core4.error import Core4ConfigurationError

#: the secrets file in the core4 home
SECRET_FILE = "secrets.json"
#: environment variable naming another secrets file (e.g. a mounted secret)
SECRET_FILE_ENV = "CORE4_SECRET_FILE"
#: seconds to wait for the lock of the secrets file
LOCK_TIMEOUT = 30.0


def make_private_dir(path):
    """Create the directory ``path`` (and its parents) if missing; make
    it 0700 (also when it exists, e.g. made by an older core4)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) != 0o700:
        os.chmod(path, 0o700)


def is_private(path):
    """True if nobody but the owner may read, write or enter ``path``."""
    return not stat.S_IMODE(os.stat(path).st_mode) & 0o077


def tighten(path):
    """Make the directory ``path`` 0700 and every file below it 0600 (and
    every directory below 0700); the files of other users are left alone.
    For directories written by an older core4 with the default umask."""
    make_private_dir(path)
    uid = os.getuid()
    for root, dirs, files in os.walk(path):
        for name, mode in [(d, 0o700) for d in dirs] + \
                [(f, 0o600) for f in files]:
            full = os.path.join(root, name)
            with contextlib.suppress(OSError):
                info = os.lstat(full)
                if info.st_uid == uid and not stat.S_ISLNK(info.st_mode) \
                        and stat.S_IMODE(info.st_mode) != mode:
                    os.chmod(full, mode)


def open_private(path, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    """Open ``path`` with ``flags`` (os.open), created 0600; an existing
    file is made 0600. Return the file descriptor."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def write_private(path, text):
    """Write ``text`` to ``path`` atomically (tmp file + os.replace), 0600."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with os.fdopen(open_private(tmp), "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def secret_file(config):
    """Return the path of the secrets file of ``config``."""
    return os.environ.get(SECRET_FILE_ENV) or os.path.join(
        config.folder.home, SECRET_FILE)


def read_secrets(path):
    """Return the dict in the secrets file ``path`` ({} if missing).
    A file others may read is made 0600 first (if it is ours); one that is
    not a JSON object raises :class:`Core4ConfigurationError`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise Core4ConfigurationError("cannot read the secrets file %s: %s"
                                      % (path, exc.strerror)) from None
    with os.fdopen(fd) as handle:
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.getuid():
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o600)
        try:
            data = json.load(handle)
        except ValueError:
            data = None
    if not isinstance(data, dict):
        raise Core4ConfigurationError("the secrets file %s is not a JSON "
                                      "object" % path)
    return data


@contextlib.contextmanager
def locked(path, timeout, failed):
    """Hold an exclusive flock on the private file ``path`` (created 0600),
    polling for at most ``timeout`` seconds; ``failed(reason)`` returns
    the exception raised when the file cannot be opened or stays locked."""
    try:
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise failed(exc.strerror or str(exc)) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise failed("%s is locked for more than %.0f s" % (
                        os.path.basename(path), timeout)) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _locked(path):
    """Hold the lock of the secrets file ``path``."""
    return locked(path + ".lock", LOCK_TIMEOUT, lambda reason:
                  Core4ConfigurationError("cannot change the secrets file "
                                          "%s: %s" % (path, reason)))


def update_secrets(path, change):
    """Call ``change(data)`` with the content of the secrets file ``path``
    under its lock; if it returns True, write ``data`` back (0600). Return
    ``data``. The directory is created (0700) if missing."""
    try:
        if not os.path.isdir(os.path.dirname(path) or "."):
            make_private_dir(os.path.dirname(path))
    except OSError as exc:
        raise Core4ConfigurationError("cannot create the directory of the "
                                      "secrets file %s: %s"
                                      % (path, exc.strerror)) from None
    with _locked(path):
        data = read_secrets(path)
        if change(data):
            try:
                write_private(path, json.dumps(data, indent=2,
                                               sort_keys=True) + "\n")
            except OSError as exc:
                raise Core4ConfigurationError(
                    "cannot write the secrets file %s: %s"
                    % (path, exc.strerror)) from None
        return data
