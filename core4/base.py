"""Small helpers every core4 object uses: names, project, host and user."""

import getpass
import os
import socket
import sys


def module_name(cls):
    """Return the importable module name of ``cls``.

    A class defined in a script run as ``__main__`` gets the module name its
    file would have when imported (so a worker can load it): its name in its
    package (``python mypro/myjob.py`` defines ``mypro.myjob``) if that
    package is importable from there, else its name relative to
    ``sys.path``.
    """
    name = cls.__module__
    if name != "__main__":
        return name
    path = getattr(sys.modules["__main__"], "__file__", None)
    if not path:
        return name
    path = os.path.abspath(path)
    stem = os.path.splitext(path)[0]
    dotted = _package_module(stem)
    if dotted:
        return dotted
    best = None
    for entry in sys.path:
        entry = os.path.abspath(entry or os.getcwd())
        if stem.startswith(entry + os.sep):
            rel = stem[len(entry) + 1:].replace(os.sep, ".")
            if best is None or len(rel) < len(best):
                best = rel
    return best or name


def _package_module(stem):
    """The dotted name of the module file ``stem``(.py) inside its package
    (the folders up from it holding ``__init__.py``), if the top package
    imports from exactly there; else None."""
    import importlib.util
    folder, parts = os.path.split(stem)
    parts = [parts]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, package = os.path.split(folder)
        parts.insert(0, package)
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        return None
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or os.path.realpath(os.path.dirname(origin)) != \
            os.path.realpath(os.path.join(folder, parts[0])):
        return None
    return ".".join(parts)


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
