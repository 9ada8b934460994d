"""End-to-end tests of the web dashboard in headless Chromium: login, the
live queue, starting a job and following it, kill and restart, filters
and paging, permissions, daemons, users and roles, a narrow screen - and
the shell's static serving over plain HTTP.

Screenshots of every page are saved as artefacts (see conftest)."""

import datetime
import re

import json

import requests
from bson import ObjectId
from playwright.sync_api import expect

from tests.api.conftest import API, unique
from tests.dashboard.conftest import TIMEOUT
from tests.support import wait_for

DUMMY = "core4.queue.helper.job.DummyJob"
DUMMY_NAME = "core4.queue.helper.job.example.DummyJob"
NOOP = "core4.queue.helper.job.example.NoopJob"


def enqueue(server, args, token=None, name=DUMMY):
    """Enqueue ``name`` with ``args`` through the API; return its id."""
    response = server.request("POST", API + "/job", json={
        "qual_name": name, "args": args}, token=token or server.admin)
    assert response.status_code == 201, response.text
    return response.json()["data"]["_id"]


def job_detail(server, _id):
    """The document of job ``_id`` (queue or journal)."""
    return server.request("GET", API + "/job/" + _id,
                          token=server.admin).json()["data"]


def job_state(server, _id):
    """The state of job ``_id``."""
    return job_detail(server, _id)["state"]


def stop_job(server, _id):
    """Kill ``_id`` if it still runs or waits (frees the worker)."""
    server.request("PUT", API + "/job/%s/kill" % _id, token=server.admin)


def no_page_overflow(page):
    """True if the page does not scroll sideways."""
    return page.evaluate("document.documentElement.scrollWidth <= "
                         "document.documentElement.clientWidth")


def test_login_queue_and_logout(browse):
    session = browse()
    page = session.page
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in to core4")).to_be_visible()
    expect(page.get_by_role("link", name="Queue")).to_have_count(0)
    session.shot("login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("wrong-password")
    session.expected.append("401")  # the refused login's network error
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Wrong username or password.")
    expect(page.get_by_label("Password")).to_be_focused()
    page.get_by_label("Password").fill("admin-secret-1")
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_role("heading", name="Queue", exact=True)
           ).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.get_by_role("link", name="Queue")).to_have_attribute(
        "aria-current", "page")
    chart = page.get_by_role("img", name=re.compile(
        "Jobs in the queue, last hour"))
    expect(chart).to_be_visible()
    expect(chart.locator("path.line")).to_have_count(1)
    # a live sample (the stream's ISO time) is drawn: no NaN in the chart
    expect(page.locator("#live-state")).to_have_text("live")
    assert "NaN" not in chart.inner_html()
    expect(page.get_by_role("list", name="Jobs per state").get_by_role(
        "button")).to_have_count(8)
    assert session.expected == []
    session.shot("queue")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to core4")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text("You are logged out.")
    # the cookie is gone: a reload still shows the login
    page.reload()
    expect(page.get_by_role("heading", name="Log in to core4")).to_be_visible()


def test_start_job_follow_progress_and_log(browse, dash):
    session = browse()
    page = session.login(path="/#/start")
    expect(page.get_by_role("heading", name="Start a job")).to_be_visible()
    queued = dash.db.sys_queue.count_documents({})
    picker = page.get_by_label("Job", exact=True)
    expect(picker.locator("option")).to_contain_text([DUMMY_NAME])
    picker.select_option(DUMMY_NAME)
    expect(page.locator("#start-doc")).to_contain_text("Sleep for")
    args = page.get_by_label("Arguments (JSON object)")
    # invalid arguments are refused before anything is sent
    args.fill('{"sleep": 3')
    expect(args).to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator("#start-args-error")).to_contain_text("Not valid JSON")
    args.fill('[1, 2]')
    expect(page.locator("#start-args-error")).to_contain_text(
        "must be a JSON object")
    assert dash.db.sys_queue.count_documents({}) == queued
    args.fill('{"sleep": 3}')
    expect(args).to_have_attribute("aria-invalid", "false")
    session.shot("start-a-job")
    page.get_by_role("button", name="Start job").click()
    # the new job's detail follows it live
    expect(page).to_have_url(re.compile(r"#/job/[0-9a-f]{24}$"))
    _id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-live-state")).to_have_text("live")
    progress = page.get_by_role("progressbar", name="Progress")
    expect(page.locator(".job-head .state")).to_have_text("running",
                                                          timeout=TIMEOUT)
    session.shot("job-running")
    expect(progress).to_have_attribute("aria-valuenow", "100")
    expect(progress).to_contain_text("100 %")
    expect(page.locator(".job-head .state")).to_have_text("complete")
    log = page.get_by_role("table").filter(has_text="Message")
    expect(log).to_contain_text("start execution")
    expect(log).to_contain_text("done execution with [complete]")
    expect(page.locator("#stdout")).to_contain_text("line 1 at")
    expect(page.locator("#job-live")).to_have_text("Job is complete.")
    # a finished job cannot be killed, restarted or removed
    for action in ("kill", "restart", "remove"):
        expect(page.locator("#job-" + action)).to_be_disabled()
    expect(page.locator("#hint-kill")).to_have_text(
        "The job is no longer in the queue.")
    session.shot("job-complete")
    assert job_state(dash, _id) == "complete"
    # the log of a finished job shows when the detail is opened again
    page.goto("/#/queue")
    page.goto("/#/job/" + _id)
    expect(page.get_by_role("table").filter(has_text="Message")
           ).to_contain_text("done execution")


def test_kill_and_restart_running_job(browse, dash):
    _id = enqueue(dash, {"sleep": 60, "run": unique()})
    session = browse()
    page = session.login(path="/#/job/" + _id)
    state = page.locator(".job-head .state")
    expect(state).to_have_text("running")
    expect(page.locator("#job-restart")).to_be_disabled()
    page.get_by_role("button", name="Kill").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Kill job %s" % DUMMY_NAME)
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    session.shot("job-kill-confirm")
    dialog.get_by_role("button", name="Kill job").click()
    expect(state).to_have_text("killed")
    # the disabled Kill button gave the focus to the state section
    expect(page.get_by_role("region", name="State")).to_be_focused()
    expect(page.locator("#job-kill")).to_be_disabled()
    restart = page.locator("#job-restart")
    expect(restart).to_be_enabled()
    expect(page.get_by_role("region", name="Last error")).to_contain_text(
        "killed")
    session.shot("job-killed")
    restart.click()
    # a killed job restarts as a new job: its detail opens
    expect(page).not_to_have_url(re.compile(_id))
    expect(page).to_have_url(re.compile(r"#/job/[0-9a-f]{24}$"))
    new_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("link", name=_id)).to_be_visible()
    expect(state).to_have_text(re.compile("pending|running"))
    session.shot("job-restarted")
    assert dash.db.sys_journal.find_one({"_id": ObjectId(_id)})[
        "enqueued"]["child_id"] == ObjectId(new_id)
    # remove (with confirmation) the restarted job: Escape cancels
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.locator("#job-remove")).to_be_focused()
    assert not job_detail(dash, new_id).get("journaled")
    page.get_by_role("button", name="Remove").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove job").click()
    expect(page.locator("#hint-remove")).to_have_text(re.compile(
        "no longer in the queue|Removal is under way"))
    expect(page.locator("#job-remove")).to_be_disabled()
    # a running job's removal waits for the run's end: kill ends it now
    if not job_detail(dash, new_id).get("journaled"):
        dash.request("PUT", API + "/job/%s/kill" % new_id, token=dash.admin)
    wait_for(lambda: job_detail(dash, new_id).get("journaled"), 30,
             message="the removed job to leave the queue")
    expect(state).to_have_text(re.compile("killed|pending|removed"))


def test_queue_filters_paging_and_live_rows(browse, dash):
    user, token = dash.create_user([r"job://core4\.queue\.helper/x"])
    ids = [enqueue(dash, {"n": i}, token=token, name=NOOP)
           for i in range(12)]
    wait_for(lambda: all(job_state(dash, i) == "complete" for i in ids), 60,
             message="12 noop jobs to finish")
    session = browse()
    page = session.login(path="/#/queue")
    expect(page.locator("#live-state")).to_have_text("live")
    page.get_by_label("Show").select_option("journal")
    page.get_by_label("Enqueued by").fill(user)
    page.get_by_label("Per page").select_option("10")
    page.get_by_role("button", name="Apply filters").click()
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(10)
    expect(page.locator("#page-info")).to_have_text(
        "Page 1 of 2 · jobs 1–10 of 12")
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    session.shot("queue-filtered")
    page.get_by_role("button", name="Next page").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#page-info")).to_have_text(
        "Page 2 of 2 · jobs 11–12 of 12")
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    # the filters are in the address: a reload keeps them
    page.reload()
    expect(rows).to_have_count(2)
    expect(page.get_by_label("Enqueued by")).to_have_value(user)
    page.get_by_label("Name starts with").fill("core4.queue.helper.job.ex"
                                               "ample.Dummy")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(0)
    expect(page.get_by_text("No jobs match the filters.")).to_be_visible()
    # live: a job enqueued now appears in the queue table without reload
    page.get_by_label("Show").select_option("queue")
    page.get_by_label("Name starts with").fill("")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(0)
    page.evaluate("window.stayed = true")  # gone after a page load
    live_id = enqueue(dash, {"sleep": 60, "run": unique()}, token=token)
    row = page.locator('tr[data-id="%s"]' % live_id)
    expect(row).to_contain_text("running")
    expect(row.get_by_role("progressbar")).to_be_visible()
    expect(row).to_contain_text(user)
    expect(row).to_contain_text("dashworker@")
    running = page.get_by_role("button", name=re.compile(r"^\d+ running$"))
    expect(running).not_to_have_accessible_name("0 running")
    session.shot("queue-live")
    running.click()
    expect(running).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_label("State", exact=True)).to_have_value(
        "running")
    stop_job(dash, live_id)
    expect(row).to_have_count(0)
    assert page.evaluate("window.stayed") is True


def test_non_admin_sees_no_admin_views(browse, dash):
    user, _ = dash.create_user([r"job://core4\.queue\.helper\.job\.example"
                                r"\.DummyJob/r"])
    _id = enqueue(dash, {"sleep": 60, "run": unique()})
    try:
        session = browse()
        page = session.login(user, "password-1", path="/#/job/" + _id)
        expect(page.locator(".job-head .state")).to_have_text(
            re.compile("pending|running"))
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link")).to_have_text(
            ["Queue", "Start a job", "Services", "Daemons"])
        for action in ("kill", "restart", "remove"):
            expect(page.locator("#job-" + action)).to_be_disabled()
        expect(page.locator("#hint-kill")).to_have_text(
            "You may not execute this job.")
        session.shot("nonadmin-job")
        page.goto("/#/start")
        expect(page.get_by_text("There are no jobs you may start")
               ).to_be_visible()
        page.goto("/#/roles")
        expect(page.get_by_role("heading", name="Not permitted")
               ).to_be_visible()
        page.goto("/#/daemons")
        expect(page.locator("#maint-global")).to_have_text(re.compile(
            "Claims are running"))
        expect(page.get_by_role("button", name="Pause all jobs")
               ).to_have_count(0)
        session.shot("nonadmin-daemons")
    finally:
        stop_job(dash, _id)


def test_daemons_and_maintenance(browse, dash, dash_worker):
    session = browse()
    page = session.login(path="/#/daemons")
    table = page.get_by_role("table")
    worker = table.locator('tr[data-kind="worker"]')
    expect(worker).to_contain_text("dashworker@")
    expect(worker).to_contain_text(str(dash_worker.pid))
    expect(worker).to_contain_text(re.compile(r"\d+\.\d s ago"))
    expect(table.locator('tr[data-kind="app"]')).to_contain_text(dash.url)
    session.shot("daemons")
    toggle = page.get_by_role("button", name="Pause all jobs")
    toggle.click()
    expect(page.locator("#maint-global")).to_have_text(re.compile("paused"))
    assert dash.request("GET", API + "/system", token=dash.admin).json()[
        "data"]["maintenance"]["global"] is True
    resume_all = page.get_by_role("button", name="Resume all jobs")
    expect(resume_all).to_be_focused()
    resume_all.press("Enter")
    expect(page.locator("#maint-global")).to_have_text(re.compile("running"))
    page.get_by_label("Pause a project").fill("someproject")
    page.get_by_role("button", name="Pause project").click()
    resume = page.get_by_role("button", name="Resume someproject")
    expect(resume).to_be_visible()
    session.shot("daemons-maintenance")
    resume.click()
    expect(resume).to_have_count(0)
    assert dash.request("GET", API + "/system", token=dash.admin).json()[
        "data"]["maintenance"] == {"global": False, "projects": []}


def test_users_and_roles(browse, dash):
    session = browse()
    page = session.login(path="/#/roles")
    expect(page.get_by_role("heading", name="Users and roles", exact=True)
           ).to_be_visible()
    expect(page.get_by_role("link", name="Edit admin")).to_be_visible()
    role = unique("role")
    page.get_by_role("link", name="New user or role").click()
    page.get_by_label("Role (a set of permissions)").check()
    expect(page.get_by_label("Email")).to_be_hidden()
    page.get_by_label("Name", exact=True).fill(role)
    page.get_by_label("Permissions (one per line)").fill(
        "job://core4\\.queue/r")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("link", name="Edit " + role)).to_be_visible()
    # a user including the role
    user = unique("user")
    page.get_by_role("link", name="New user or role").click()
    page.get_by_label("Name", exact=True).fill(user)
    page.get_by_label("Email").fill(user + "@example.org")
    page.get_by_label("Password").fill("a-long-password-1")
    page.get_by_label(role).check()
    session.shot("role-new-user")
    page.get_by_role("button", name="Create").click()
    row = page.get_by_role("row").filter(has=page.get_by_role(
        "link", name="Edit " + user))
    expect(row).to_contain_text(role)
    session.shot("roles")
    # edit with the etag read; a stale etag is refused
    page.get_by_role("link", name="Edit " + role).click()
    expect(page.get_by_role("heading", name="Edit " + role)).to_be_visible()
    doc = dash.db.sys_role.find_one({"name": role})
    dash.db.sys_role.update_one({"_id": doc["_id"]},
                                {"$set": {"etag": "changed-elsewhere"}})
    page.get_by_label("Real name").fill("Readers")
    session.expected.append("409")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("changed meanwhile")
    page.reload()
    page.get_by_label("Real name").fill("Readers")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row").filter(has=page.get_by_role(
        "link", name="Edit " + role))).to_contain_text("Readers")
    # delete the user, then the role it included
    for name in (user, role):
        page.get_by_role("link", name="Edit " + name).click()
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button",
                                               name="Delete").click()
        expect(page).to_have_url(re.compile("#/roles$"))
        expect(page.get_by_role("link", name="Edit admin")).to_be_visible()
        expect(page.get_by_role("link", name="Edit " + name)
               ).to_have_count(0)
    assert dash.db.sys_role.count_documents({"name": {"$in": [
        user, role]}}) == 0


def test_narrow_screen(browse, dash):
    _id = enqueue(dash, {"sleep": 60, "run": unique()})
    try:
        session = browse(width=390, height=844)
        page = session.login(path="/#/queue")
        expect(page.locator('tr[data-id="%s"]' % _id)).to_be_visible()
        wrap = page.get_by_role("region", name=re.compile("Job table"))
        assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")
        assert no_page_overflow(page)
        session.shot("narrow-queue")
        # keyboard: the first Tab reaches the skip link, which moves the
        # focus to the content
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")
               ).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        for path, heading, name in (
                ("/#/job/" + _id, re.compile("Job"), "narrow-job"),
                ("/#/start", "Start a job", "narrow-start"),
                ("/#/daemons", "Daemons", "narrow-daemons"),
                ("/#/roles", "Users and roles", "narrow-roles")):
            page.goto(path)
            expect(page.get_by_role("heading", level=1, name=heading)
                   ).to_be_visible()
            expect(page.locator("main[aria-busy]")).to_have_count(0)
            assert no_page_overflow(page), path
            session.shot(name)
    finally:
        stop_job(dash, _id)


def test_static_serving(dash):
    index = requests.get(dash.url + "/", timeout=10)
    assert index.status_code == 200
    assert index.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["Content-Security-Policy"]
    assert index.headers["Cache-Control"] == "no-cache"
    version = re.search(r"/_dashboard/([0-9a-f]{12})/js/app\.js",
                        index.text).group(1)
    again = requests.get(dash.url + "/", timeout=10, headers={
        "If-None-Match": index.headers["Etag"]})
    assert again.status_code == 304
    for path, kind in (("js/app.js", "text/javascript"),
                       ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        asset = requests.get("%s/_dashboard/%s/%s" % (dash.url, version,
                                                       path), timeout=10)
        assert asset.status_code == 200, path
        assert asset.headers["Content-Type"].startswith(kind)
        assert "immutable" in asset.headers["Cache-Control"]
    stale = requests.get(dash.url + "/_dashboard/000000000000/style.css",
                         timeout=10)
    assert stale.status_code == 200
    assert stale.headers["Cache-Control"] == "no-cache"
    for path in ("/_dashboard/%s/../handler.py" % version,
                 "/_dashboard/%s/%%2e%%2e/handler.py" % version,
                 "/_dashboard/%s/..%%2fcontainer.py" % version,
                 "/_dashboard/%s//etc/passwd" % version,
                 "/_dashboard/%s/index.html" % version,
                 "/_dashboard/%s/nothing.js" % version,
                 "/no/such/page", "/index.html"):
        response = requests.get(dash.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.json()["code"] == 404, path
    posted = requests.post(dash.url + "/", timeout=10)
    assert posted.status_code == 405
    assert posted.json()["code"] == 405
    assert requests.get(dash.url + "/_dashboard/session", timeout=10).json()[
        "data"] == {"user": None}
    stream = requests.get(dash.url + "/_dashboard/stream/queue", timeout=10)
    assert stream.status_code == 401
    bad = requests.get(dash.url + "/_dashboard/stream/queue", timeout=10,
                       params={"state": "nope"}, headers={
                           "Authorization": "Bearer " + dash.admin})
    assert bad.status_code == 400
    assert "unknown state" in bad.json()["message"]
    # the API is not shadowed by the dashboard at /
    assert dash.request("GET", API + "/profile", token=dash.admin
                        ).json()["data"]["name"] == "admin"


def first_event(server, token, **params):
    """The first ``queue`` event of the queue stream for ``token``."""
    with requests.get(server.url + "/_dashboard/stream/queue", params=params,
                      headers={"Authorization": "Bearer " + token},
                      stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        name = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name == "queue":
                return json.loads(line[len("data: "):])
    raise AssertionError("no queue event")


def test_queue_stream_masks_jobs_the_user_may_not_read(dash, dash_worker):
    _id = enqueue(dash, {"sleep": 60, "run": unique()})
    try:
        _, token = dash.create_user([r"job://nothing\.here/r"])
        data = first_event(dash, token, state="pending,running",
                           sort="-enqueued.at")
        assert data["total"] >= 1
        # the time of the event: ISO 8601 in UTC, now
        at = datetime.datetime.fromisoformat(data["at"])
        assert at.utcoffset() == datetime.timedelta(0)
        assert abs((datetime.datetime.now(datetime.timezone.utc) - at
                    ).total_seconds()) < 60
        assert data["state"]["pending"] + data["state"]["running"] >= 1
        job = [doc for doc in data["jobs"] if doc["_id"] == _id][0]
        assert job["name"] == "UnauthorizedJob"
        assert job["masked"] is True and job["args"] is None
        mine = first_event(dash, dash.admin, state="pending,running",
                           name="core4.queue.helper.job.example.Dummy")
        job = [doc for doc in mine["jobs"] if doc["_id"] == _id][0]
        assert job["name"] == DUMMY_NAME
        assert job["args"]["sleep"] == 60
        assert mine["page"] == 0 and mine["per_page"] == 25
        assert mine["count"] == len(mine["jobs"]) <= mine["total_count"]
    finally:
        stop_job(dash, _id)
