"""A job module with an effect at import (for ``test_security.py``):
importing it appends the importing process's id to ``sideeffect-imported``
in the core4 home (``CORE4_OPTION_folder__home``). ``POST /job`` must never
import it into the app server."""

import os

from core4.queue.job import CoreJob

#: the file each import appends its process id to
MARKER = "sideeffect-imported"


def _mark():
    home = os.environ.get("CORE4_OPTION_folder__home")
    if home:
        with open(os.path.join(home, MARKER), "a") as handle:
            handle.write("%d\n" % os.getpid())


_mark()


class SideEffectJob(CoreJob):
    """Does nothing; its module's import leaves a mark."""

    author = "test"

    def execute(self, **kwargs):
        """Nothing."""
