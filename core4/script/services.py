"""``coco --services`` and ``coco --container``: what the app servers
serve."""

from core4.config import get_config
from core4.queue import states
from core4.script import display


def app_url(system, config):
    """The url of a live app server (None if none runs)."""
    from core4.queue.daemon import alive_daemons
    for doc in alive_daemons(system, config, "app"):
        if doc.get("url"):
            return doc["url"].rstrip("/")
    return None


def cmd_services(queue):
    """``--services``: the running service jobs with the url to open them
    (through a live app server) and their health."""
    config = get_config()
    docs = list(queue.sys.queue.find(
        {"state": states.RUNNING, "service.prefix": {"$exists": True}},
        {"name": 1, "service": 1, "enqueued": 1, "started_at": 1}
    ).sort("_id", 1))
    if not docs:
        print("no service.")
        return
    base = app_url(queue.sys, config) or ""
    rows = []
    for doc in docs:
        service = doc.get("service") or {}
        rows.append([str(doc["_id"]), doc.get("name", ""),
                     (doc.get("enqueued") or {}).get("username", ""),
                     service.get("health", ""),
                     display.iso(doc.get("started_at")),
                     base + service.get("prefix", "")])
    print(display.table(rows, ["_id", "name", "owner", "health", "started",
                               "url"]))
    if not base:
        print("(no app server runs: start one with coco --application)")


def cmd_container():
    """``--container``: the API containers and their routes that
    ``coco --application`` serves."""
    from core4.api.discover import route_rows
    rows = route_rows(get_config())
    print(display.table(
        [[r["container"], "yes" if r["enabled"] else "no", r["route"],
          r["handler"] or r.get("error", "")] for r in rows],
        ["container", "enabled", "route", "handler"]))
