"""The deployment files in ``deploy/``.

* ``docker compose config`` validates ``docker-compose.yml`` alone and with
  the ``docker-compose.dev.yml`` overlay; the resolved configuration has the
  replica set, the workers, two schedulers and the app server, and its core4
  settings load with core4's own configuration code.
* MongoDB runs with authentication: a replica-set keyfile, a root and a
  core4 user made from Docker secrets by ``make-secrets.sh``, and core4
  connecting as core4 with the password file.
* ``systemd-analyze verify`` checks the systemd units, and their stop,
  restart and start settings are asserted.

``docker compose`` (the v2 CLI plugin; no Docker engine needed) and
``systemd-analyze`` are installed by ``scripts/system-deps``, which
``scripts/test`` runs first. A missing tool fails these tests: they are
never skipped.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core4.config.loader import load_file
from core4.script.coco import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
REPLICA_SET_URL = ("mongodb://mongo1:27017,mongo2:27017,mongo3:27017/"
                   "?replicaSet=rs0")
MONGO = {"mongo1", "mongo2", "mongo3"}
CORE4 = {"worker", "scheduler1", "scheduler2", "app"}
SERVICES = MONGO | CORE4 | {"mongo-init"}
#: where the units expect core4 (docs/deploy.rst installs it there)
UNIT_COCO = "/opt/core4/venv/bin/coco"
DEFAULTS = load_file(ROOT / "core4" / "core4.yaml")
MISSING = "%s not found: run `bash scripts/system-deps` (scripts/test does)"


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(MISSING % name)
    return path


def compose_config(*files):
    """``docker compose -f ... config`` as a dict; asserts exit 0."""
    docker = tool("docker")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COMPOSE_")}
    if subprocess.run([docker, "compose", "version"], env=env,
                      capture_output=True, timeout=60).returncode:
        pytest.fail(MISSING % "docker compose (the CLI plugin)")
    args = [docker, "compose"]
    for name in files:
        args += ["-f", str(DEPLOY / name)]
    proc = subprocess.run(args + ["config", "--format", "json"], cwd=DEPLOY,
                          env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def seconds(duration):
    """Seconds of a Go duration as compose prints it (``5m30s``)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def core4_config(environment, tmp_path):
    """Load core4's configuration with a service's environment (in a fresh
    process, with an empty local yaml) and return what the daemons use."""
    local = tmp_path / "local.yaml"
    local.write_text("")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CORE4_")}
    env.update({k: str(v) for k, v in environment.items()})
    env["CORE4_CONFIG"] = str(local)
    code = ("import json; from core4.config import get_config; c = "
            "get_config(); print(json.dumps({'url': c.sys.queue.url, "
            "'database': c.sys.queue.database, 'stderr': c.logging.stderr, "
            "'halt_grace': c.worker.halt_grace, "
            "'kill_grace': c.worker.kill_grace, 'debug': c.api.debug}))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def worker_stop(config):
    """Longest stop of a worker after SIGTERM: running jobs get halt_grace,
    then SIGTERM and SIGKILL after kill_grace, and the shutdown waits
    kill_grace + 5 s for them at most."""
    return config["halt_grace"] + 2 * config["kill_grace"] + 5


def parse_coco(args):
    """coco's parsed arguments; a flag coco does not know fails the test."""
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail("coco does not accept %s" % " ".join(args))


def assert_coco_command(argv, **expected):
    """``argv`` is a coco command line coco's parser accepts."""
    assert Path(argv[0]).name == "coco", argv
    ns = parse_coco(argv[1:])
    for key, value in expected.items():
        assert getattr(ns, key) == value, (argv, key)


# -- docker compose -----------------------------------------------------------

def test_compose_prod(tmp_path):
    config = compose_config("docker-compose.yml")
    services = config["services"]
    assert set(services) == SERVICES

    for name in MONGO:
        mongo = services[name]
        assert mongo["image"].startswith("mongo:")
        assert mongo["command"][:3] == ["mongod", "--replSet", "rs0"]
        assert mongo["restart"] == "unless-stopped"
        assert mongo["healthcheck"]["test"]
        assert any(v["target"] == "/data/db" and v["type"] == "volume"
                   for v in mongo["volumes"])
    init = services["mongo-init"]
    assert {name: dep["condition"] for name, dep in
            init["depends_on"].items()} == dict.fromkeys(
                MONGO, "service_healthy")
    script = [v for v in init["volumes"]
              if v["target"] == "/init-replica-set.js"][0]
    text = Path(script["source"]).read_text()
    for member in ("mongo1:27017", "mongo2:27017", "mongo3:27017", "rs0"):
        assert member in text

    for name in CORE4:
        service = services[name]
        assert service["image"] == "core4:latest"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(service["build"]["context"]) == ROOT
        assert service["init"] is True
        assert service["restart"] == "unless-stopped"
        assert service["depends_on"]["mongo-init"]["condition"] == \
            "service_completed_successfully"
        env = service["environment"]
        assert env["CORE4_OPTION_DEFAULT__mongo_url"] == REPLICA_SET_URL

    worker = services["worker"]
    assert_coco_command(worker["command"], worker="worker")
    assert worker["deploy"]["replicas"] >= 2
    for name in ("scheduler1", "scheduler2"):
        assert_coco_command(services[name]["command"], scheduler="scheduler")
    hosts = {services[name]["hostname"] for name in ("scheduler1",
                                                     "scheduler2")}
    assert len(hosts) == 2  # two identifiers scheduler@<hostname>
    app = services["app"]
    assert_coco_command(app["command"], application="app",
                        address="0.0.0.0", port=5001)
    assert [(p["target"], p["published"]) for p in app["ports"]] == [
        (5001, "5001")]

    loaded = core4_config(worker["environment"], tmp_path)
    assert loaded["url"] == REPLICA_SET_URL
    assert loaded["database"] == "core4"
    assert seconds(worker["stop_grace_period"]) > worker_stop(loaded)


def test_compose_dev_overlay(tmp_path):
    prod = compose_config("docker-compose.yml")["services"]
    config = compose_config("docker-compose.yml", "docker-compose.dev.yml")
    services = config["services"]
    assert set(services) == SERVICES
    for name in MONGO:
        assert services[name]["command"] == prod[name]["command"]
    for name in CORE4:
        service = services[name]
        assert service["image"] == "core4:dev"
        assert service["build"]["args"]["EDITABLE"] == "true"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"] == prod[name]["command"]
        mounts = {v["target"]: v for v in service["volumes"]}
        assert Path(mounts["/opt/core4/src"]["source"]) == ROOT
        assert mounts["/home/core4/.core4"]["type"] == "volume"
        env = service["environment"]
        assert env["CORE4_OPTION_DEFAULT__mongo_url"] == REPLICA_SET_URL
        assert env["CORE4_OPTION_logging__stderr"] == "DEBUG"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 1
    assert core4_config(services["app"]["environment"],
                        tmp_path)["debug"] is True

    loaded = core4_config(worker["environment"], tmp_path)
    assert loaded["url"] == REPLICA_SET_URL
    assert loaded["stderr"] == "DEBUG"
    assert seconds(worker["stop_grace_period"]) > worker_stop(loaded)


def test_dockerfile_installs_core4():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "pip install -e /opt/core4/src" in text
    assert "pip install /opt/core4/src" in text
    assert re.search(r"^USER core4$", text, re.M)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    sources = " ".join(re.findall(r"^COPY (.+) \S+$", text, re.M)).split()
    assert "core4" in sources and "pyproject.toml" in sources
    for name in sources:
        assert (ROOT / name).exists(), name
        # the build context excludes everything it does not re-include
        assert "!" + name in ignore or "!" + name + "/" in ignore, name


def test_compose_mongo_authentication(tmp_path):
    config = compose_config("docker-compose.yml")
    services, secrets = config["services"], config["secrets"]
    assert {name: Path(secret["file"]) for name, secret in secrets.items()} \
        == {name: DEPLOY / "secrets" / name for name in (
            "mongo_keyfile", "mongo_root_password", "mongo_core4_password")}
    for name in MONGO:
        mongo = services[name]
        command = mongo["command"]
        assert "--auth" in command
        keyfile = command[command.index("--keyFile") + 1]
        assert [s["source"] for s in mongo["secrets"]] == ["mongo_keyfile"]
        # the secret is copied to the keyfile, 0400 and owned by mongodb
        script = mongo["entrypoint"][2]
        assert ("install -m 0400 -o mongodb -g mongodb "
                "/run/secrets/mongo_keyfile %s" % keyfile) in script
        assert "exec docker-entrypoint.sh" in script

    init = services["mongo-init"]
    assert init["network_mode"] == "service:mongo1"  # localhost exception
    assert "mongodb://127.0.0.1:27017/" in " ".join(init["command"])
    assert {s["source"] for s in init["secrets"]} == {
        "mongo_root_password", "mongo_core4_password"}
    script = (DEPLOY / "mongo" / "init-replica-set.js").read_text()
    for needed in ('secret("mongo_root_password")',
                   'secret("mongo_core4_password")', 'roles: ["root"]',
                   '{ role: "readWrite", db: "core4" }', "createUser",
                   "updateUser", 'admin.auth("root", rootPassword)'):
        assert needed in script, needed

    for name in CORE4:
        service = services[name]
        assert [s["source"] for s in service["secrets"]] == [
            "mongo_core4_password"]
        env = service["environment"]
        assert "@" not in env["CORE4_OPTION_DEFAULT__mongo_url"]
        assert env["CORE4_MONGO_USER"] == "core4"
        assert env["CORE4_MONGO_PASSWORD_FILE"] == \
            "/run/secrets/mongo_core4_password"


def test_make_secrets(tmp_path):
    """make-secrets.sh makes the three secrets once, in a 0700 directory."""
    import stat
    script = tmp_path / "make-secrets.sh"
    script.write_text((DEPLOY / "make-secrets.sh").read_text())
    proc = subprocess.run(["sh", str(script)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    made = {path.name: path.read_text() for path in folder.iterdir()}
    assert set(made) == {"mongo_keyfile", "mongo_root_password",
                         "mongo_core4_password"}
    for name in ("mongo_root_password", "mongo_core4_password"):
        assert re.fullmatch(r"[0-9a-f]{64}\n", made[name]), name
    assert made["mongo_root_password"] != made["mongo_core4_password"]
    key = "".join(made["mongo_keyfile"].split())
    assert 6 <= len(key) <= 1024 and re.fullmatch(r"[A-Za-z0-9+/=]+", key)
    again = subprocess.run(["sh", str(script)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "", again.stdout
    assert {path.name: path.read_text() for path in folder.iterdir()} == made
    assert "*" in (DEPLOY / "secrets" / ".gitignore").read_text().split()


# -- systemd ------------------------------------------------------------------

def read_unit(path):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read(path)
    return parser


@pytest.mark.parametrize("name", ["core4-worker@.service",
                                  "core4-scheduler.service",
                                  "core4-app.service"])
def test_systemd_unit(name, tmp_path):
    unit = read_unit(UNITS / name)
    assert "network-online.target" in unit["Unit"]["After"].split()
    assert "network-online.target" in unit["Unit"]["Wants"].split()
    service = unit["Service"]
    assert service["User"] == "core4"
    assert service["EnvironmentFile"].lstrip("-") == "/etc/core4/core4.env"
    assert service["Restart"] in ("on-failure", "always")
    assert float(service["RestartSec"]) > 0
    assert service["KillMode"] == "mixed"  # SIGTERM to coco, not its jobs
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == UNIT_COCO
    stop = float(service["TimeoutStopSec"])
    if name.startswith("core4-worker@"):
        assert_coco_command(argv, worker="worker-%i")
        assert stop > worker_stop(DEFAULTS["worker"])
    elif name == "core4-scheduler.service":
        assert_coco_command(argv, scheduler="scheduler")
        assert stop >= 10
    else:
        # address and port from api.address and api.port (127.0.0.1:5001)
        assert_coco_command(argv, application="app", address=None,
                            port=None)

    # verify a copy whose ExecStart names this environment's coco (the unit's
    # /opt/core4/venv is not installed here)
    coco = Path(sys.executable).with_name("coco")
    assert coco.exists(), coco
    (tmp_path / name).write_text(
        (UNITS / name).read_text().replace(UNIT_COCO, str(coco)))
    proc = subprocess.run([tool("systemd-analyze"), "verify", name],
                          cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    # verify reports problems (an unknown key, a bad value) as warnings
    # with exit code 0; ignore any about the system's own units
    ours = [line for line in proc.stderr.splitlines()
            if name.split("@")[0].split(".")[0] in line]
    assert ours == [], proc.stderr


def test_systemd_env_example_loads(tmp_path):
    env = {}
    for line in (UNITS / "core4.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    assert env and all(k.startswith("CORE4_OPTION_") for k in env)
    loaded = core4_config(env, tmp_path)
    assert loaded["url"].startswith("mongodb://")
    assert "replicaSet=rs0" in loaded["url"]
