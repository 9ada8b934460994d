"""The jobs that ship with core4 (``core4.queue.helper.job``): importing
them loads no HTTP client modules (a job process that runs ``DummyJob``
paid ~8 ms for them), and every name the package offers is found, by
import and by the API's look at the source."""

import subprocess
import sys

from core4.queue.remote import locate
from tests.support import ROOT

NAMES = ("CoreLoadJob", "DummyJob", "HttpService", "JupyterService")


def test_the_package_loads_no_http_client():
    # what a job process imports beyond its launcher's preloaded modules
    script = (
        "import sys\n"
        "from core4.queue.launcher.server import PRELOAD\n"
        "for name in PRELOAD[:-1]:\n"
        "    __import__(name)\n"
        "before = set(sys.modules)\n"
        "import core4.queue.helper.job as jobs\n"
        "print(sorted(set(jobs.__all__) - set(dir(jobs))))\n"
        "print(sorted(m for m in set(sys.modules) - before\n"
        "             if m.split('.')[0] == 'http'))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[]", "[]"], out


def test_every_name_is_found_without_running_the_package():
    for name in NAMES:
        kind, where = locate("core4.queue.helper.job." + name)
        assert kind in ("alias", "bound"), (name, kind, where)
    assert locate("core4.queue.helper.job.HttpService") == (
        "alias", "core4.queue.helper.job.service.HttpService")
    assert locate("core4.queue.helper.job.NoSuchJob")[0] == "absent"
