"""A killed worker's directory (job output, results, logs, its lease file)
is removed by the next worker that starts on the machine; a living
worker's never is."""

import glob
import os
import time

from core4.queue import workdir
from tests.support import wait_for


def _dirs(parent):
    return set(glob.glob(os.path.join(str(parent), workdir.PREFIX + "*")))


def _age(path, seconds):
    """Make ``path`` look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_next_worker_removes_a_killed_workers_directory(start_worker,
                                                        tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    first = start_worker("first", TMPDIR=str(tmp))
    (left,) = wait_for(lambda: _dirs(tmp), message="the first's directory")
    first.kill9()
    assert os.path.exists(os.path.join(left, "lease"))  # nobody cleaned up
    _age(left, workdir.SETTLE + 5)

    second = start_worker("second", TMPDIR=str(tmp))
    wait_for(lambda: not os.path.exists(left), 30,
             message="the killed worker's directory to go")
    (mine,) = _dirs(tmp)
    assert "removed 1 directories of dead workers" in second.output()
    # the living worker's directory stays, however old it looks
    _age(mine, workdir.SETTLE + 5)
    assert workdir.sweep(str(tmp)) == []
    assert os.path.exists(os.path.join(mine, "lease"))


def test_sweep_spares_young_foreign_and_recent_unlocked_directories(
        tmp_path):
    """Only directories of this user and host, made a minute ago or more,
    whose lock is free (or, made before the lock, unchanged for a day)."""
    living = workdir.WorkDir(str(tmp_path))
    dead = workdir.WorkDir(str(tmp_path))
    os.close(dead._fd)  # as if its worker had died: the lock is free
    dead._fd = None
    old = tmp_path / (workdir.PREFIX + "before-locks")
    old.mkdir()
    (old / "lease").write_text("1.0")
    other = tmp_path / "core4-bench-keep"
    other.mkdir()
    elsewhere = workdir.WorkDir(str(tmp_path))  # a dead worker of host B
    os.close(elsewhere._fd)
    elsewhere._fd = None
    with open(elsewhere.file(workdir.OWNER), "w") as handle:
        handle.write("4242 another-host\n")
    now = time.time()

    # a directory just made may not be locked yet: left alone
    assert workdir.sweep(str(tmp_path), now=now) == []
    later = now + workdir.SETTLE + 1
    assert workdir.sweep(str(tmp_path), now=later) == [dead.path]
    # without an owner file: removed only after a day without a change
    assert os.path.exists(old)
    assert workdir.sweep(str(tmp_path),
                         now=now + workdir.UNLOCKED_AGE + 1) == [str(old)]
    assert os.path.exists(living.path) and os.path.exists(other)
    # a lock may hold on its own host only: another host's is left alone
    assert os.path.exists(elsewhere.path)
    living.remove()
    assert not os.path.exists(living.path)
