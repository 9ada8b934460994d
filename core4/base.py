"""Small helpers every core4 object uses: names, project, host and user."""

import getpass
import os
import socket
import sys


def module_name(cls):
    """Return the importable module name of ``cls``.

    A class defined in a script run as ``__main__`` gets the module name its
    file would have when imported from ``sys.path`` (so a worker can load it).
    """
    name = cls.__module__
    if name != "__main__":
        return name
    path = os.path.abspath(getattr(sys.modules["__main__"], "__file__", ""))
    if not path:
        return name
    stem = os.path.splitext(path)[0]
    best = None
    for entry in sys.path:
        entry = os.path.abspath(entry or os.getcwd())
        if stem.startswith(entry + os.sep):
            rel = stem[len(entry) + 1:].replace(os.sep, ".")
            if best is None or len(rel) < len(best):
                best = rel
    return best or name


def qual_name(cls):
    """Return ``<module>.<Class>``, the name core4 knows a class by."""
    return "%s.%s" % (module_name(cls), cls.__qualname__)


def project_of(name):
    """Return the project (first component) of a qualified name."""
    return name.split(".", 1)[0]


def hostname():
    """Return this machine's host name."""
    return socket.gethostname()


def username():
    """Return the name of the user running this process."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry, e.g. in a container
        return str(os.getuid())
