"""The events page: the server's event stream in a real browser, live, filtered, escaped."""

from __future__ import annotations

from uikit import login, make_runs, shot, start_ui_server

HOSTILE = "<img src=x onerror=alert(1)>"


def test_events_arrive_live_filtered_and_as_text(tmp_path, page):
    root = tmp_path / "proj"
    make_runs(root, [dict(message="first", name="first", params={"lr": 0.1})])
    server = start_ui_server(root)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        login(page, server, path="/events")
        page.wait_for_selector("#events tr[data-type='commit.created']")
        before = page.locator("#events tbody tr").count()
        # a run committed by another process while the page is open shows up at the top
        make_runs(root, [dict(message=HOSTILE, name="second", params={"lr": 0.2})])
        page.locator("#events tbody tr").nth(before).wait_for()
        top = page.locator("#events tbody tr").first
        assert top.get_attribute("data-type") == "commit.created"
        assert HOSTILE in top.inner_text()  # the message shows as text, and nothing ran
        top.locator("a").click()
        page.wait_for_url("**/runs/*")
        page.go_back()
        page.wait_for_selector("#events tr[data-type='commit.created']")
        shot(page, "events")
        # the type filter goes in the address and the stream only sends what matches
        page.fill("input[name=types]", "gc.*")
        page.click("text=Filter")
        page.wait_for_url("**/events?*types=gc.*")
        page.wait_for_selector("#events-status:has-text('no events yet')")
        assert page.locator("#events tbody tr").count() == 0
        assert dialogs == [] and page.errors == []
    finally:
        server.check()
