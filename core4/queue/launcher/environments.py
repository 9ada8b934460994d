"""The Python environments a worker runs jobs in.

A job of a project installed in the core4 home runs with that project's
``.venv`` python, never the worker's; every other job runs with the
worker's own python. Each environment has its own launcher (a warm one
that has imported core4 and the project, in fork mode). When a project's
code or installed packages change, its launcher is retired (its running
jobs finish) and the next job gets a fresh one, so new code runs without
restarting the worker.
"""

import glob
import os
import sys

from core4.project.home import installed, project_root, venv_python
from core4.queue.launcher.jobprocess import job_files
from core4.queue.launcher.launcher import ForkLauncher, SpawnLauncher


#: suffix of the files a primed job process writes until its job comes
PRIMED = ".prime"


class EnvironmentProblem(Exception):
    """A project's environment is missing or broken (the job cannot run)."""


def fingerprint(root, project):
    """Return what changes when a project's code or packages change: the
    resolved venv (croll.py swaps it on upgrade), the newest mtime of the
    project's package files, and the mtimes of its site-packages."""
    venv = os.path.realpath(os.path.join(root, ".venv"))
    stamps = [venv]
    for base in (os.path.join(root, ".src", project),
                 os.path.join(root, project)):
        newest = 0.0
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            for name in files:
                if name.endswith((".py", ".yaml", ".pth")):
                    try:
                        newest = max(newest, os.stat(
                            os.path.join(folder, name)).st_mtime)
                    except OSError:
                        pass
        stamps.append(newest)
    for site in glob.glob(os.path.join(venv, "lib", "python*",
                                       "site-packages")):
        stamps.append(os.stat(site).st_mtime)
    return tuple(stamps)


class Environments:
    """The launchers of one worker, one per Python environment."""

    def __init__(self, config, start_method):
        self.config = config
        self.start_method = start_method
        self.default = self._make(sys.executable, (), isolated=False)
        self.projects = {}     # project -> (launcher, fingerprint)
        self.retired = []

    def _make(self, python, preload, isolated=True):
        if self.start_method == "spawn":
            return SpawnLauncher(python=python, isolated=isolated)
        return ForkLauncher(python=python, preload=preload,
                            isolated=isolated)

    def launcher_for(self, doc):
        """Return the launcher for the job ``doc``; raise
        :class:`EnvironmentProblem` if its project's venv is missing."""
        project = doc.get("project") or doc["name"].split(".", 1)[0]
        if not installed(self.config, project):
            return self.default
        root = project_root(self.config, project)
        python = venv_python(root)
        if not os.path.exists(python):
            raise EnvironmentProblem(
                "project %s has no virtual environment: %s is missing" % (
                    project, python))
        stamp = fingerprint(root, project)
        current = self.projects.get(project)
        if current is not None and current[1] != stamp:
            current[0].retire()
            self.retired.append(current[0])
            current = None
        if current is None:
            current = (self._make(python, (project,)), stamp)
            self.projects[project] = current
        return current[0]

    def claim_primed(self, candidates, claim, out_dir, logs, watch):
        """Return ``claim(candidates)``; meanwhile the launcher of the first
        candidate (with its ``id`` and ``name``) prepares that job's process
        (see :meth:`ForkLauncher.prime`; ``out_dir`` and ``logs`` as for
        :func:`~core4.queue.launcher.jobprocess.job_files`, ``watch`` the
        settings of its watchdog), and is told if the claim of it was
        lost."""
        first = candidates[0] if candidates else None
        launcher = self._running_launcher(first.name) if first else None
        if launcher is None:
            return claim(candidates)
        # the primed process writes files of its own, never the job's
        _, result, log = job_files(out_dir, first.id, logs)
        if not launcher.prime(first.id, first.name, log and log + PRIMED,
                              result + PRIMED, watch):
            return claim(candidates)
        won = False
        try:
            docs = claim(candidates)
            won = any(doc["_id"] == first.id for doc in docs)
            return docs
        finally:
            if not won:
                try:
                    launcher.unprime(first.id)
                except Exception:  # noqa: BLE001 - the claim's answer first
                    pass

    def _running_launcher(self, name):
        """The launcher of the job class ``name`` if it was started (its
        project's files are not checked here); None if none."""
        if not name:
            return None
        project = name.split(".", 1)[0]
        if not installed(self.config, project):
            return self.default
        entry = self.projects.get(project)
        return entry[0] if entry is not None else None

    def launchers(self):
        """Every launcher that may still report events."""
        return [self.default] + [entry[0] for entry in
                                 self.projects.values()] + self.retired

    def poll(self):
        """Events of every launcher; forget retired ones that are done."""
        events = []
        for launcher in self.launchers():
            events.extend(launcher.poll())
        self.retired = [r for r in self.retired if not r.finished()]
        return events

    def filenos(self):
        """Descriptors to wait on for events."""
        return [fd for fd in (launcher.fileno() for launcher in
                              self.launchers()) if fd is not None]

    def close(self):
        """Stop every launcher (each kills its job processes still
        running; spawned ones are not affected)."""
        for launcher in self.launchers():
            launcher.close()
