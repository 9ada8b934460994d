"""The core4 configuration: a read-only, validated cascade of YAML layers.

Use :func:`get_config` (cached per project and process)::

    from core4.config import get_config, class_config

    cfg = get_config("mypro")
    cfg.job.attempts                    # 1, unless configured otherwise
    cfg.sys.queue                       # Connect(url=..., database=..., ...)
    cfg.sys.log.find_one()              # ... which is also the collection
    cfg.get_folder("transfer")          # absolute data folder
    class_config(cfg, "mypro.myjob.MyJob")  # per-class settings or None

The layers, later winning, are the package defaults ``core4/core4.yaml``
(also the schema), the project's ``<project>.yaml``, one local file and
``CORE4_OPTION_<k1>__<k2>=<value>`` environment variables; see
:mod:`core4.config.cascade`. A ``!connect`` value is a lazily connected
pymongo collection (:mod:`core4.config.connect`); the data folders are
described in :mod:`core4.config.folders`.
"""

import os

from core4.config.cascade import load_config
from core4.config.configmap import ConfigMap, class_config
from core4.config.connect import Connect

__all__ = ["ConfigMap", "Connect", "class_config", "get_config",
           "load_config", "prime_config", "reset_config",
           "reload_package_defaults"]

_CACHE = {}


def get_config(project=None):
    """Return :func:`load_config(project) <load_config>`, cached per project
    and process id (a forked child loads its own)."""
    key = (project, os.getpid())
    config = _CACHE.get(key)
    if config is None:
        config = _CACHE[key] = load_config(project)
    return config


def reset_config():
    """Forget every cached configuration (the next get_config reloads)."""
    _CACHE.clear()


def prime_config(project, config):
    """Make ``config`` what :func:`get_config(project) <get_config>`
    returns in this process (e.g. one loaded before a fork)."""
    _CACHE[(project, os.getpid())] = config


def reload_package_defaults():
    """Parse ``core4/core4.yaml`` anew on the next load (it changed, e.g.
    in an editable install) and forget every cached configuration."""
    from core4.config import cascade
    cascade.forget_package_defaults()
    reset_config()
