"""An upstream ``local.yaml`` starts (issue 19, item 12): every key of the
original core4's ``core4.yaml`` (release 1.0.10) is accepted in a local file
and in ``CORE4_OPTION_*`` variables; keys core4 has under another name are
mapped, the others ignored with one warning per key at startup saying what
to do instead; keys unknown to both stay errors."""

import os
import re
import subprocess
import sys

import pytest

from core4.config import load_config
from core4.config.upstream import IGNORED
from tests.support import ROOT

#: the original core4's core4.yaml (1.0.10; collection names with "_" so
#: they work on NX-27017, the store's logos and themes left out), used as
#: a local.yaml
UPSTREAM_YAML = """\
DEFAULT:
  mongo_url: mongodb://localhost:27017
  mongo_database: test
  python: ~
sys:
  admin: !connect mongodb://admin/dummy
  app: !connect mongodb://sys_app
  conf: ~
  cookie: !connect mongodb://sys_cookie
  event: !connect mongodb://sys_event
  handler: !connect mongodb://sys_handler
  job: !connect mongodb://sys_job
  journal: !connect mongodb://sys_journal
  lock: !connect mongodb://sys_lock
  log: !connect mongodb://sys_log
  queue: !connect mongodb://sys_queue
  role: !connect mongodb://sys_role
  setting: !connect mongodb://sys_setting
  stdout: !connect mongodb://sys_stdout
  userdb: user!
  worker: !connect mongodb://sys_worker
  store: !connect mongodb://sys_store
folder:
  root: /tmp/core4
  transfer: transfer
  process: proc
  archive: arch
  temp: temp
  home: ~
logging:
  stderr: INFO
  stdout: ~
  mongodb: ~
  format: "%(asctime)s - %(levelname)-8s [%(qual_name)s/%(identifier)s] %(message)s"
  exception:
    capacity: 1000
  extra: ~
  write_concern: 0
  size: 549755813888
event:
  write_concern: 0
  size: 549755813888
  queue_interval: 3
base:
  log_level: DEBUG
job:
  attempts: 1
  defer_max: 3600
  defer_time: 300
  error_time: 600
  zombie_time: 1800
  force: False
  hidden: False
  wall_time: ~
  max_parallel: 15
  worker: ~
  priority: 0
  schedule: ~
  tag: ~
  progress_interval: 5
  archive_stamp: "{year:04d}/{month:02d}/{day:02d}/{_id:s}"
rjob:
  cran_mirror: "http://cran.us.r-project.org"
daemon:
  heartbeat: 15
  alive_timeout: 60
worker:
  virtual_environment_home: ~
  avg_stats_secs: 60.0
  min_free_ram: 32
  max_cpu: 99
  moving_avg_seconds: 30
  execution_plan:
    work_jobs: 0.25
    remove_jobs: 3.0
    flag_jobs: 10.0
    collect_stats: 20.0
  stdout_ttl: 604800
scheduler:
  interval: 1
api:
  setting:
    debug: True
    compress_response: False
    cookie_secret: a not so secret cookie secret
  crt_file: ~
  key_file: ~
  route: localhost
  allow_origin: "*"
  port: 5001
  default_static: api/v1/request/_static
  error_html_page: standard/template/error.html
  error_text_page: standard/template/error.txt
  help_html_page: standard/template/help.html
  info_html_page: standard/template/info.html
  reset_password:
    expiration: 28800
  token:
    expiration: 28800
    refresh: 3600
    algorithm: HS512
    secret: secret
  admin_username: admin
  admin_realname: admin user
  admin_password: admin
  user_rolename: standard_user
  user_realname: standard user group
  user_permission:
    - api://core4.api.v1.request.standard.*
    - api://core4.api.v1.server.*
    - api://core4.api.v1.request.store.*/u
  verify_ssl: True
  new_range: 180
  tag:
    - new
    - analytics
email:
  username: ~
  password: ~
  sent_from: ~
  host: ~
  port: ~
  starttls: ~
  ssl: ~
  template:
    base_dir: email_templates/
    en:
      domain: ~
      password_reset: en/password_reset.txt
user_setting:
   _general:
     language: EN
store:
  default:
    contact: mail@mailer.com
queue:
  history_in_days: 7
  precision:
    year: day
"""

#: what core4 sees of the mapped keys
MAPPED = {("api", "debug"): True, ("api", "address"): "localhost"}


def coco(*args, env):
    return subprocess.run([sys.executable, "-m", "core4.script.coco", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def warned(stderr):
    """``{key: [advice, ...]}`` of the upstream warnings in ``stderr``."""
    found = {}
    for key, advice in re.findall(
            r"^core4: warning: .*?: upstream key (\S+?)(?:: ~)? is not used "
            r"by core4: (.*)$", stderr, re.MULTILINE):
        found.setdefault(key, []).append(advice)
    return found


@pytest.fixture
def upstream_local(core4_env, tmp_path, monkeypatch):
    """The upstream core4.yaml as this test's local.yaml."""
    path = tmp_path / "upstream-local.yaml"
    path.write_text(UPSTREAM_YAML)
    monkeypatch.setenv("CORE4_CONFIG", str(path))
    return path


def test_upstream_local_yaml_starts_with_one_warning_per_key(
        upstream_local):
    done = coco("--listing", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no jobs."
    found = warned(done.stderr)
    expected = {"DEFAULT.python", "logging.write_concern", "logging.extra",
                "logging.size", "event.write_concern", "event.size",
                "event.queue_interval", "base.log_level", "job.hidden",
                "job.schedule", "job.tag", "job.archive_stamp",
                "worker.virtual_environment_home",
                "worker.moving_avg_seconds",
                "worker.execution_plan.remove_jobs", "sys.admin", "sys.app",
                "sys.conf", "sys.handler", "sys.lock", "sys.setting",
                "sys.userdb", "sys.store", "api.setting.compress_response",
                "api.setting.cookie_secret", "api.crt_file", "api.key_file",
                "api.allow_origin", "api.default_static",
                "api.error_html_page", "api.error_text_page",
                "api.help_html_page", "api.info_html_page",
                "api.reset_password", "api.token.secret",
                "api.admin_realname", "api.user_rolename",
                "api.user_realname", "api.user_permission", "api.verify_ssl",
                "api.new_range", "api.tag", "email", "rjob", "user_setting",
                "store", "queue", "folder.home"}
    # keys core4 has itself (job.archive_stamp, job.tag, ...) warn no more
    expected = {key for key in expected
                if key in IGNORED or key == "folder.home"}
    assert set(found) == expected, done.stderr
    assert all(len(advice) == 1 for advice in found.values()), done.stderr
    other = [line for line in done.stderr.splitlines()
             if "upstream key" not in line]
    assert not other, done.stderr
    assert "CORE4_JWT_SECRET" in found["api.token.secret"][0]
    assert "CORE4_COOKIE_SECRET" in found["api.setting.cookie_secret"][0]
    assert "reverse proxy" in found["api.crt_file"][0]
    assert "local.yaml" in found["sys.conf"][0]


def test_upstream_keys_map_onto_core4_settings(upstream_local):
    config = load_config()
    for (section, key), value in MAPPED.items():
        assert config[section][key] == value
    assert "setting" not in config.api and "conf" not in config.sys
    assert "email" not in config and "store" not in config
    # upstream's "folder.home: ~" leaves core4's home (here: the test's)
    assert config.folder.home == os.environ["CORE4_OPTION_folder__home"]
    assert config.api.token.expiration == 28800


def test_core4_key_in_the_same_file_wins(core4_env, tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("api:\n  route: 0.0.0.0\n  address: 127.0.0.2\n"
                    "  setting:\n    debug: true\n")
    config = load_config(local_file=str(path))
    assert config.api.address == "127.0.0.2"
    assert config.api.debug is True


def test_upstream_keys_in_environment_variables(core4_env):
    env = dict(os.environ, CORE4_OPTION_api__token__secret="s3cret",
               CORE4_OPTION_logging__write_concern="!!int 1",
               CORE4_OPTION_api__route="127.0.0.3")
    done = coco("--listing", env=env)
    assert done.returncode == 0, done.stderr
    found = warned(done.stderr)
    assert set(found) == {"api.token.secret", "logging.write_concern"}
    assert "CORE4_OPTION_api__token__secret" in done.stderr
    code = ("from core4.config import get_config; "
            "print(get_config().api.address)")
    shown = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip() == "127.0.0.3", shown.stderr


@pytest.mark.parametrize("text, key", [
    ("api:\n  bogus: 1\n", "api.bogus"),
    ("logging:\n  extras: ~\n", "logging.extras"),
    ("api:\n  token:\n    secrets: x\n", "api.token.secrets"),
    ("worker:\n  execution_plan:\n    remove_job: 3\n",
     "worker.execution_plan.remove_job"),
    ("api:\n  setting:\n    debugging: true\n", "api.setting.debugging"),
])
def test_keys_unknown_to_both_stay_errors(core4_env, tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    env = dict(os.environ, CORE4_CONFIG=str(path))
    done = coco("--listing", env=env)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "unknown key %s" % key in done.stderr, done.stderr


def test_docs_list_every_upstream_key():
    from core4.config.upstream import MAPPED, NO_NONE
    text = open(os.path.join(ROOT, "docs", "upstream.rst")).read()
    for key in list(MAPPED) + list(MAPPED.values()) + list(IGNORED):
        assert "``%s``" % key in text, key
    for key in NO_NONE:
        assert "``%s: ~``" % key in text, key
