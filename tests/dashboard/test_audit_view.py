"""The dashboard's Audit view in headless Chromium: an administrator sees
it in the navigation with the record of an action another admin took;
a non-admin has no such entry and is refused the page."""

import re

from playwright.sync_api import expect

from tests.api.conftest import API, unique


def test_admin_sees_the_audit_view_with_a_record(browse, dash):
    name, token = dash.create_user(["cop"])
    role = unique("audited")
    response = dash.request("POST", API + "/roles", token=token,
                            json={"name": role})
    assert response.status_code == 201, response.text
    session = browse()
    page = session.login(path="/#/queue")
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit", exact=True)
           ).to_be_visible()
    page.get_by_label("User").fill(name)
    page.get_by_role("button", name="Apply filters").click()
    row = page.get_by_role("table").locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("create_role")
    expect(row).to_contain_text("role " + role)
    expect(page.locator("#audit-page-info")).to_have_text(
        re.compile("Page 1 of 1 · 1 records"))
    assert "user=" + name in page.url
    session.shot("audit")
    page.get_by_label("Action").select_option("pause")
    page.get_by_role("button", name="Apply filters").click()
    expect(row).to_have_count(0)
    expect(page.get_by_text("No audit records match the filters.")
           ).to_be_visible()


def test_non_admin_has_no_audit_view(browse, dash):
    user, _ = dash.create_user([])
    session = browse()
    page = session.login(user, "password-1", path="/#/audit")
    expect(page.get_by_role("heading", name="Not permitted")
           ).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Audit")).to_have_count(0)
