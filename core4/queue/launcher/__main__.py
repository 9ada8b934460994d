"""``python -m core4.queue.launcher [MODULE ...]``: the warm launcher
process of a worker (see :func:`core4.queue.launcher.server.serve`)."""

import sys

from core4.queue.launcher.server import serve

if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
