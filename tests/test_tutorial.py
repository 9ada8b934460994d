"""The tutorial works as written: ``docs/tutorial.rst`` is run, command by
command, in a fresh home.

How the page is run
===================

Every block of the page is marked ``.. not-executed: tests/test_tutorial.py
runs the tutorial`` (so ``test_docs`` only checks the ``coco`` command
lines against the parser), and this test runs them all, in order
(:mod:`tests.tutorialsupport`):

``.. code-block:: console``
    Each ``$ command`` runs in bash on a pseudo terminal, as typed into the
    reader's terminal: the working directory, exported variables, functions
    (``deactivate`` of an activated environment) and ``$?`` carry over to
    the next command. What it prints must match the lines below it, as in
    ``test_docs`` (ids, times, ``...``), and commit ids and the versions of
    core4 and Python are compared as placeholders. It must exit with 0,
    unless the next command is ``echo $?``. A question (output stopping at
    the beginning of an expected line such as ``type yes to create it:
    yes``) gets the rest of that line typed. An id that an earlier command
    printed in the page (``coco --enqueue``) is replaced by the id that
    command printed in this run.
``.. code-block:: python`` or ``yaml`` with a file name as caption
    The file is saved (relative to the shell's current directory, ``~`` is
    the home).
``.. code-block:: text``
    Not run.

The first command that fails stops the run; every mismatch is reported.

The machine
===========

The reader is ``mra`` with a fresh, empty ``HOME`` (shown as
``/home/mra``) that holds ``~/core4``, a checkout of this working tree (the
tracked files as they are now and the untracked files git does not ignore,
committed on ``master``): the tutorial makes the bare repository that
stands in for core4's remote from it. No ``CORE4_*`` variable is set (but
``CORE4_OPTION_worker__max_cpu``, the test machine is busy) and no
``mongo_url`` configured: the embedded database runs under the tutorial's
``folder.home``. ``python3`` is the interpreter this venv was made from
(without core4), and pip installs from a wheelhouse of core4's
dependencies, without an index (``PIP_FIND_LINKS``, ``PIP_NO_INDEX``): the
stand-ins for the network. The tutorial builds four virtual environments
(``./core4``, the project's ``.venv`` and two production installs).

At the end every embedded server below the home is stopped and every
process of the run killed; if the run succeeded, anything still running
then is a failure (the tutorial cleans up after itself).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests import tutorialsupport as tutorial
from tests.docexamples import Block

pytestmark = pytest.mark.timeout(1800)

#: the steps of issue 17 the page must show verbatim (in a command line),
#: in this order
REQUIRED = [
    "git clone -q --bare ~/core4 ~/core4.git",
    "git archive --remote $CORE4_REMOTE $CORE4_BRANCH croll.py | tar -xO "
    "> croll.py",
    "python3 croll.py core4 $CORE4_REMOTE@$CORE4_BRANCH",
    ". core4/bin/activate",
    'coco --init mypro "My first core4 project"',
    "source mypro/enter_env",
    "python mypro/myjob.py",
    "(coco --worker > ~/worker.log 2>&1 &)",
    "coco --enqueue mypro.myjob.MyJob",
    "coco --detail ",
    "coco --halt",
    "git commit -q -m ",
    "coco --build",
    "git merge -q --no-ff release-0.0.2",
    "coco --release",
    "python3 croll.py mypro file://$HOME/.core4/mypro/.repos",
    "(coco --worker > ~/worker.log 2>&1 &)",
    "coco --build",
    "coco --release",
    "python3 croll.py mypro file://$HOME/.core4/mypro/.repos",
    "coco --db stop",
]


def test_page_shows_every_step():
    """The page parses, every block is for this test, and it has the
    tutorial's steps in order (fast: nothing runs)."""
    steps = tutorial.steps()
    commands = [step.command for step in steps if step.command is not None]
    assert [step.path for step in steps if step.command is None] == [
        "~/.core4/local.yaml", "mypro/myjob.py",
        "~/core4.home/mypro/mypro/myjob.py"]
    position = 0
    for wanted in REQUIRED:
        for index in range(position, len(commands)):
            if wanted in commands[index]:
                position = index + 1
                break
        else:
            pytest.fail("docs/tutorial.rst: no command %r after %r" % (
                wanted, commands[position - 1] if position else None))


# --- the runner ------------------------------------------------------------

def fake_step(command, expected=""):
    block = Block(tutorial.NAME, 1, "console", "$ %s\n%s" % (command,
                                                              expected))
    return tutorial.Step(block, command, expected)


def test_terminal_answers_a_question():
    code, output = tutorial.run_on_terminal(
        [sys.executable, "-c", "import sys; print(sys.stdin.isatty()); "
         "print('got', input('type yes to create it: '))"], "/",
        dict(os.environ), 30, ["type yes to create it: yes"])
    assert (code, output) == (0, "True\ntype yes to create it: yes\n"
                                 "got yes\n")


def test_session_keeps_the_shell_state(tmp_path):
    """cd, exported variables, functions and $? carry over; an id the
    page shows is the one printed; a mismatch is reported and the run goes
    on; a failing command stops it."""
    home = tmp_path / "home"
    home.mkdir()
    session = tutorial.Session(tmp_path, home, dict(
        os.environ, HOME=str(home)), timeout=30)
    steps = [
        fake_step("mkdir -p a/b && cd a"),
        fake_step("export TUTORIAL_X=1; greet() { echo hi $1; }"),
        fake_step("cd b; pwd", "/home/mra/a/b\n"),
        fake_step("greet $TUTORIAL_X", "hi 1\n"),
        fake_step("false"),
        fake_step("echo $?", "1\n"),
        fake_step("printf '%024x\\n' 7", "6b04756e2debafe1e2fc49d3\n"),
        fake_step("echo 6b04756e2debafe1e2fc49d3 | tail -c 2", "7\n"),
        fake_step("echo hello", "goodbye\n"),
        fake_step("true"),
        fake_step("exit 3"),
        fake_step("echo never"),
    ]
    assert session.run(steps) is False
    ran = [step.command for step, code, note in session.ran]
    assert ran == [step.command for step in steps[:-1]]
    assert len(session.failures) == 2, session.failures
    assert "$ echo hello" in session.failures[0]
    assert "goodbye" in session.failures[0]
    assert "$ exit 3\nexit code 3" in session.failures[1]
    assert tutorial.matches("installed at %s\ncore4 0.1.0" % ("a1" * 20),
                            "installed at %s\ncore4 9.9" % ("b2" * 20))
    assert not tutorial.matches("core4 0.1.0\n", "python 0.1.0\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The whole tutorial, run once; returns the session."""
    base = tmp_path_factory.mktemp("tutorial")
    home = base / "mra"
    (home / "core4").mkdir(parents=True)
    (base / "run").mkdir()
    if not (tutorial.ROOT / ".git").exists():
        pytest.skip("not a git checkout: no core4 repository to start from")
    commit = tutorial.snapshot(home / "core4")
    wheels = tutorial.wheelhouse(base / "wheels")
    bin_dir = tutorial.bare_python(base / "bin")
    session = tutorial.Session(base / "run", home, tutorial.user_environment(
        home, str(bin_dir), wheels))
    session.commit = commit
    started = time.monotonic()
    try:
        session.run(tutorial.steps())
    finally:
        session.cleanup(complain=not session.failures)
        session.elapsed = time.monotonic() - started
    return session


def test_tutorial_runs_as_written(run):
    assert not run.failures, "docs/tutorial.rst does not work as " \
        "written:\n\n%s\n\nwhat ran (%.0f s):\n%s" % (
            "\n\n".join(run.failures), run.elapsed, run.report())


def git(path, *args):
    return subprocess.run(["git", *args], cwd=path, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_what_the_tutorial_leaves(run):
    """Behind the outputs: core4 installed from the stand-in remote, the
    project with its releases, production at the last release."""
    if run.failures:
        pytest.skip("the tutorial failed (see test_tutorial_runs_as_written)")
    home = run.home
    env = json.loads((home / "core4.home" / "core4" / "croll.json")
                     .read_text())
    assert env["commit"] == run.commit and env["ref"] == "master"
    assert env["repository"] == "file://%s/core4.git" % home
    dev = home / "core4.home" / "mypro"
    assert os.path.realpath(home / ".core4" / "mypro") == str(dev)
    assert git(dev, "tag").split() == ["0.0.2", "0.0.3"]
    assert git(dev, "branch", "--show-current") == "develop"
    assert git(dev, "status", "--porcelain") == ""
    prod = home / "core4.prod" / "mypro"
    state = json.loads((prod / "croll.json").read_text())
    assert state["commit"] == git(dev, "rev-parse", "0.0.3^{commit}")
    assert state["repository"] == "file://%s/.core4/mypro/.repos" % home
    assert os.path.realpath(prod / ".venv") == state["venv"]
    assert sorted(os.listdir(prod / ".venvs")) == sorted([
        git(dev, "rev-parse", "0.0.2^{commit}"), state["commit"]])
