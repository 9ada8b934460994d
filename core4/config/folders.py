"""The data folders of the ``folder`` section: where jobs find their files.

``folder.root`` holds the four folders jobs work with (see
:class:`core4.queue.helper.job.base.CoreLoadJob`): ``transfer`` (files
arriving), ``process`` (files being processed), ``archive`` (files done
with) and ``temp``. Relative names are joined with ``root`` when the
configuration is loaded. Workers, the scheduler, the app server and
``execute()`` create them when they start (:func:`ensure_folders`).
"""

import os

from core4.error import Core4ConfigurationError

#: the folders created by :func:`ensure_folders`, root first
DATA_FOLDERS = ("root", "transfer", "process", "archive", "temp")

#: every key of the ``folder`` section :func:`get_folder` accepts
FOLDER_KEYS = ("home",) + DATA_FOLDERS


def get_folder(config, name):
    """Return the absolute path of ``folder.<name>`` of ``config``.

    ``name`` is one of :data:`FOLDER_KEYS`; an unknown name or a folder
    that is not set raises :class:`Core4ConfigurationError`.
    """
    if name not in FOLDER_KEYS:
        raise Core4ConfigurationError(
            "unknown folder %r: use one of %s" % (name, ", ".join(
                FOLDER_KEYS)))
    value = (config.get("folder") or {}).get(name)
    if not value:
        raise Core4ConfigurationError("folder.%s is not set" % name)
    return os.path.abspath(os.path.expanduser(str(value)))


def ensure_folders(config):
    """Create ``folder.root`` and its ``transfer``, ``process``,
    ``archive`` and ``temp`` folders where missing; return the paths
    created. A folder that cannot be created raises
    :class:`Core4ConfigurationError` naming it."""
    created = []
    for name in DATA_FOLDERS:
        path = get_folder(config, name)
        if os.path.isdir(path):
            continue
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise Core4ConfigurationError(
                "cannot create folder.%s %s: %s" % (
                    name, path, exc.strerror or exc)) from None
        created.append(path)
    return created
