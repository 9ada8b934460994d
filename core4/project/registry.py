"""The job registry ``sys_job``: every job class of core4 and of the
installed projects, introspected in each project's own environment."""

from core4.mongo import now
from core4.project.home import installed_projects
from core4.project.introspect import collect
from core4.project.remote import run_remote


def collect_all(config):
    """Return the registry entries of core4's jobs (introspected here) and
    of every installed project (introspected in its ``.venv``)."""
    entries = [entry for entry in collect("core4")
               if entry["project"] == "core4"]
    for project in installed_projects(config):
        if project["python"] is None:
            entries.append({
                "_id": project["name"], "name": project["name"],
                "project": project["name"], "valid": False,
                "exception": "no virtual environment in %s" % project[
                    "root"]})
            continue
        try:
            answer = run_remote(config, project["name"], "introspect",
                                {"package": project["name"]})
        except Exception as exc:
            entries.append({"_id": project["name"], "name": project["name"],
                            "project": project["name"], "valid": False,
                            "exception": str(exc)})
            continue
        entries.extend(answer["jobs"])
    return entries


def register(system, entries):
    """Upsert ``entries`` into ``sys_job``; entries no longer found are
    marked ``valid: False`` with ``exception: "not found"``."""
    at = now()
    seen = []
    for entry in entries:
        fields = {key: value for key, value in entry.items() if key != "_id"}
        fields["updated_at"] = at
        system.job.update_one({"_id": entry["_id"]},
                              {"$set": fields,
                               "$setOnInsert": {"created_at": at}},
                              upsert=True)
        seen.append(entry["_id"])
    system.job.update_many({"_id": {"$nin": seen}},
                           {"$set": {"valid": False,
                                     "exception": "not found",
                                     "updated_at": at}})
