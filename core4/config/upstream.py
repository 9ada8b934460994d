"""Configuration keys of the original core4 (release 1.0.10).

A ``local.yaml`` (or a project's yaml, or a ``CORE4_OPTION_*`` variable)
written for the original core4 may hold keys core4 does not have. Each of
them is accepted: :data:`MAPPED` keys set core4's own setting of the same
meaning (unless the same layer sets that one too), every other key of
:data:`IGNORED` is dropped with one warning per key and process, saying
what to do instead. A key core4's schema has is never touched here, and a
key unknown to both stays an error (see :mod:`core4.config.schema`).
docs/upstream.rst lists the same table.
"""

import sys

from core4.error import Core4ConfigurationError

#: upstream key -> core4 key with the same meaning
MAPPED = {
    "api.setting.debug": "api.debug",
    "api.route": "api.address",
}

_SECRET = ("core4 keeps the %s in the secrets file of the core4 home "
           "(generated at first start); to share it between hosts set %s "
           "(at least 32 characters) in the environment of every app server")
_TLS = ("core4 serves plain HTTP; terminate TLS in a reverse proxy in front "
        "of the app server and list it in api.trusted_proxies "
        "(docs/deploy.rst, 'TLS and a reverse proxy')")
_UI = "core4's dashboard and API bring their own pages; remove it"
_ROLES = ("manage users and roles with the API (/core4/api/v1/role) or the "
          "dashboard")
_NO_COLLECTION = "core4 needs no such collection; remove it"

#: upstream key (or section) -> what to do instead
IGNORED = {
    "DEFAULT.python": "jobs of a project run with the .venv python of the "
                      "project in the core4 home, others with the worker's",
    "logging.write_concern": "core4 writes sys_log records from a "
                             "background thread in batches; remove it",
    "logging.extra": "configure further Python logging handlers in your "
                     "own code (logging.config.dictConfig)",
    "logging.size": "sys_log keeps records logging.mongodb_ttl seconds",
    "event.queue_interval": "the dashboard's live queue "
                            "(/_dashboard/stream/queue) sends an event every "
                            "interval seconds its client asks for; remove it",
    "event.size": "sys_event keeps events event.ttl seconds",
    "event.write_concern": "remove it",
    "base.log_level": "set logging.stderr, logging.stdout and "
                      "logging.mongodb to the levels you want",
    "job.hidden": "core4 lists every job; remove it",
    "job.schedule": "set schedule in the job class or in its class "
                    "section (<qual_name>: {schedule: ...})",
    "job.tag": "set tag in the job class or in its class section",
    "job.inactive_time": "a deferred job becomes inactive after "
                         "job.defer_max seconds",
    "worker.virtual_environment_home": "projects in the core4 home "
                                       "(folder.home) run with their own "
                                       ".venv",
    "worker.moving_avg_seconds": "the CPU load is averaged over "
                                 "worker.avg_stats_secs seconds",
    "worker.execution_plan.remove_jobs": "kill, remove and restart "
                                         "requests are checked every "
                                         "worker.execution_plan."
                                         "check_requests seconds",
    "worker.execution_plan.kill_jobs": "kill, remove and restart requests "
                                       "are checked every worker."
                                       "execution_plan.check_requests "
                                       "seconds",
    "worker.execution_plan.nopid_jobs": "jobs of lost workers are "
                                        "recovered every worker."
                                        "execution_plan.recover_jobs "
                                        "seconds",
    "worker.execution_plan.nonstop_jobs": "zombie and non-stop jobs are "
                                          "flagged every worker."
                                          "execution_plan.flag_jobs seconds",
    "sys.admin": "core4 needs no admin database; remove it",
    "sys.app": "app servers register in sys_worker; remove it",
    "sys.conf": "core4 reads no configuration from MongoDB: put the "
                "settings in local.yaml or CORE4_OPTION_* variables",
    "sys.handler": "app servers register in sys_worker; remove it",
    "sys.lock": "core4 needs no lock collection (leases live in the job "
                "documents); remove it",
    "sys.quota": _NO_COLLECTION,
    "sys.setting": "core4 keeps no user settings; remove it",
    "sys.store": _NO_COLLECTION,
    "sys.userdb": "users and roles live in sys_role; remove it",
    "api.setting.cookie_secret": _SECRET % ("cookie secret",
                                            "CORE4_COOKIE_SECRET"),
    "api.setting.compress_response": "compress responses in the reverse "
                                     "proxy; remove it",
    "api.token.secret": _SECRET % ("login token key", "CORE4_JWT_SECRET"),
    "api.crt_file": _TLS,
    "api.key_file": _TLS,
    "api.allow_origin": "core4 sends no CORS headers: serve pages that "
                        "call the API from the same origin (or through the "
                        "same reverse proxy); origins allowed to post with "
                        "the login cookie go in api.csrf.origins",
    "api.user_permission": _ROLES,
    "api.user_rolename": _ROLES,
    "api.user_realname": _ROLES,
    "api.admin_realname": "the admin user is api.admin_username; remove it",
    "api.reset_password": "an administrator sets a new password through "
                          "the API or the dashboard; remove it",
    "api.verify_ssl": "remove it",
    "api.new_range": "remove it",
    "api.tag": "remove it",
    "api.default_static": _UI,
    "api.error_html_page": _UI,
    "api.error_text_page": _UI,
    "api.help_html_page": _UI,
    "api.info_html_page": _UI,
    "email": "core4 sends no mail; remove the section",
    "rjob": "core4 has no R jobs; remove the section",
    "store": "core4 has no store of UI settings; remove the section",
    "user_setting": "core4 keeps no user settings; remove the section",
    "queue": "core4 keeps the journal until you delete it; remove the "
             "section",
}

#: keys both have, where upstream's ``~`` meant "none" but core4 needs a
#: value: a ``~`` there is dropped (core4's default applies) with a warning
NO_NONE = {
    "folder.home": "core4 needs a home for its projects, the embedded "
                   "database and its secrets: ~ gives the default "
                   "~/.core4; set folder.home to a directory to choose "
                   "another",
}

#: sections of upstream that hold upstream keys (a value that is not a
#: mapping there is ignored as a whole)
SECTIONS = {key.rsplit(".", 1)[0] for key in list(MAPPED) + list(IGNORED)
            if "." in key}

_warned = set()
_silent = []


def silence():
    """Warn no more in this process (a job process: its output is the
    job's; its worker warned at its start)."""
    _silent.append(True)


def warn(key, advice, source):
    """Write one warning per ``key`` and process to stderr."""
    if key in _warned or _silent:
        return
    _warned.add(key)
    sys.stderr.write("core4: warning: %s: upstream key %s is not used by "
                     "core4: %s\n" % (source, key, advice))
    sys.stderr.flush()


def _is_project(name):
    from core4.config.cascade import project_file
    return project_file(name) is not None


def translate(schema, layer, source, namespaces=()):
    """Return ``layer`` with the upstream keys the ``schema`` does not have
    mapped (:data:`MAPPED`) or dropped with a warning (:data:`IGNORED`);
    every other key is left for :func:`~core4.config.schema.validate_layer`
    to check. A top-level upstream section in ``namespaces`` (the layer's
    own project) or of an importable project is left alone."""
    mapped = []
    result = _walk(schema, layer, "", source, mapped, namespaces)
    for upstream_key, target, value in mapped:
        node = result
        *parents, leaf = target.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(leaf, value)  # core4's own key in it wins
    return result


def _walk(schema, data, prefix, source, mapped, namespaces):
    result = {}
    for key, value in data.items():
        path = prefix + str(key)
        known = isinstance(schema, dict) and key in schema
        if known and value is None and path in NO_NONE:
            warn(path + ": ~", NO_NONE[path], source)
        elif known:
            below = schema[key]
            if isinstance(below, dict) and isinstance(value, dict):
                value = _walk(below, value, path + ".", source, mapped,
                              namespaces)
            result[key] = value
        elif path in MAPPED:
            mapped.append((path, MAPPED[path], value))
        elif path in IGNORED and not (
                "." not in path and (path in namespaces
                                     or _is_project(path))):
            warn(path, IGNORED[path], source)
        elif path in SECTIONS:
            if not isinstance(value, dict):
                warn(path, "remove it", source)
                continue
            left = _walk({}, value, path + ".", source, mapped, namespaces)
            if left:
                raise Core4ConfigurationError("%s: unknown key %s.%s" % (
                    source, path, next(iter(left))))
        else:
            result[key] = value
    return result
