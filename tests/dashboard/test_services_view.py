"""The dashboard's Services view in headless Chromium: a user allowed to
run core4's services starts an HttpService serving a directory from the
view, sees it become healthy, opens it in a new tab (the app server's
proxy, logged in by the dashboard's cookie), reads a file through it and
stops it; a service that cannot start says why."""

import re

import pytest
from bson import ObjectId
from playwright.sync_api import expect

from tests.api.conftest import API, unique

HTTP = "core4.queue.helper.job.service.HttpService"
SERVICES = r"job://core4\.queue\.helper\.job\.service\..*/x"
#: milliseconds a service may take from Start to healthy on a loaded box
HEALTHY_WITHIN = 120000


@pytest.fixture
def service_user(dash):
    """A user who may start core4's services (not an admin); on teardown
    every job of theirs still in the queue is killed (frees the worker)."""
    user, token = dash.create_user([SERVICES])
    yield user
    for doc in dash.db.sys_queue.find({"enqueued.username": user},
                                      {"_id": 1}):
        dash.request("PUT", API + "/job/%s/kill" % doc["_id"],
                     token=dash.admin)


@pytest.fixture
def served(tmp_path):
    """A directory with one file to serve."""
    (tmp_path / "hello.txt").write_text("hello from a service\n")
    return str(tmp_path)


def start_from_view(page, directory):
    """Start an HttpService serving ``directory`` with the view's form;
    return the new job's id."""
    form = page.get_by_role("form", name="Start a service")
    form.get_by_label("Service", exact=True).select_option(HTTP)
    form.get_by_label("Directory to serve").fill(directory)
    form.get_by_role("button", name="Start service").click()
    started = page.locator("p.started")
    expect(started).to_contain_text("HttpService enqueued as job")
    return started.get_by_role("link").inner_text()


def test_start_open_and_stop_a_service(browse, dash, service_user, served):
    session = browse()
    page = session.login(service_user, "password-1", path="/#/queue")
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Services").click()
    expect(page.get_by_role("heading", name="Services", exact=True)
           ).to_be_visible()
    expect(page.get_by_role("heading", name="Start a service")
           ).to_be_visible()
    _id = start_from_view(page, served)
    assert ObjectId.is_valid(_id)
    row = page.locator("table.services tbody tr[data-id='%s']" % _id)
    expect(row).to_have_attribute("data-health", "healthy",
                                  timeout=HEALTHY_WITHIN)
    expect(row.get_by_role("rowheader")).to_have_text(HTTP)
    expect(row).to_contain_text(service_user)
    expect(row.locator(".health")).to_have_text(re.compile(r"\bhealthy$"))
    session.shot("services")

    opener = row.get_by_role("link", name="Open")
    expect(opener).to_have_attribute("target", "_blank")
    with session.context.expect_page() as opened:
        opener.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == "%s/service/%s/" % (dash.url, _id)
    # the directory listing of the service; its links work below the prefix
    tab.get_by_role("link", name="hello.txt").click()
    expect(tab.locator("body")).to_have_text("hello from a service")
    assert tab.url == "%s/service/%s/hello.txt" % (dash.url, _id)
    tab.close()

    row.get_by_role("button", name="Stop").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Stop service %s (%s)?" % (HTTP, _id))
    dialog.get_by_role("button", name="Stop service").click()
    expect(row).to_have_count(0, timeout=60000)
    expect(page.get_by_text("No service is running.")).to_be_visible()
    detail = dash.request("GET", API + "/job/" + _id, token=dash.admin)
    assert detail.json()["data"]["state"] == "killed"
    # and the proxy no longer reaches it
    gone = session.context.request.get(dash.url + "/service/%s/hello.txt"
                                       % _id)
    assert gone.status == 404


def test_a_service_that_cannot_start_says_why(browse, dash, service_user):
    missing = "/nonexistent/" + unique()
    session = browse()
    page = session.login(service_user, "password-1", path="/#/services")
    _id = start_from_view(page, missing)
    expect(page.get_by_role("alert").filter(has_text=_id)).to_have_text(
        re.compile(r"HttpService \(job %s\) ended error: .*%s.* does not "
                   r"exist" % (_id, re.escape(missing))),
        timeout=HEALTHY_WITHIN)
    expect(page.locator("table.services tbody tr[data-id='%s']" % _id)
           ).to_have_count(0)
