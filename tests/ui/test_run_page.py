"""The run page and the models registry in a real browser, over a repository with every
section (uikit.make_showcase); hostile text shows literally and runs nothing; a run's files
are served under a sandboxing CSP with a content type from an allow-list."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from test_shell import fetch
from uikit import SCRIPT, XSS, login, make_showcase, shot, start_ui_server


@pytest.fixture(scope="module")
def showcase(tmp_path_factory):
    root = tmp_path_factory.mktemp("showcase") / "proj"
    ids = make_showcase(root)
    server = start_ui_server(root)
    server.ids = ids
    yield server
    server.check()


def file_url(server, ref, path):
    q = urllib.parse.urlencode({"path": path})
    return f"{server.url}/api/v1/ui/runs/{ref}/file?{q}"


def test_the_run_page_shows_every_section_and_previews(showcase, page):
    page.on("dialog", lambda d: page.errors.append(f"dialog: {d.message}") or d.dismiss())
    login(page, showcase, "read", f"/runs/{showcase.ids['showcase']}")
    page.get_by_role("heading", name="Lineage").wait_for()
    for heading in ("Params", "Metrics", "Tags", "Code", "Data", "Environment", "Artifacts",
                    "Models", "Logs", "Lineage"):  # fmt: skip
        assert page.get_by_role("heading", name=heading).count() == 1, heading
    # metrics: last values, each linking to its chart on /compare
    chart = page.locator("#metrics a", has_text="chart").first
    assert chart.get_attribute("href").startswith(
        f"/compare?runs={showcase.ids['showcase']}&metric="
    )
    assert "0.05" in page.text_content("#metrics")  # loss at its last step: 1/20
    # the model card with its signature; the log shown; the child run in the lineage
    card = page.locator(".model-card")
    assert "echo" in card.text_content() and "x: double" in card.text_content()
    page.get_by_text("epoch 2 loss 0.3").wait_for()
    assert page.get_by_role("link", name="second").count() >= 1
    # previews: CSV head (50 of 80 rows), Parquet head, JSON, an image
    page.click("button[data-path='artifacts/out/preds.csv']")
    page.get_by_text("first 50 rows").wait_for()
    page.click("button[data-path='artifacts/out/table.parquet']")
    page.get_by_text("first 50 rows of 120").wait_for()
    page.click("button[data-path='artifacts/out/report.json']")
    page.wait_for_selector(".preview pre:has-text('\"acc\": 0.9')")
    page.click("button[data-path='artifacts/out/confusion.png']")
    page.wait_for_function(
        "() => { const i = document.querySelector('.preview img'); return i && i.complete && i.naturalWidth === 2; }"
    )
    page.click("button[data-path='artifacts/out/preds.csv']")  # the docs' picture: a table head
    page.get_by_text("first 50 rows").wait_for()
    page.locator(".preview table").first.scroll_into_view_if_needed()
    shot(page, "run-page-previews")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "run-page")
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_hostile_text_shows_literally_and_runs_nothing(showcase, page):
    page.on("dialog", lambda d: page.errors.append(f"dialog: {d.message}") or d.dismiss())
    login(page, showcase, "read", f"/runs/{showcase.ids['showcase']}")
    page.get_by_role("heading", name="Lineage").wait_for()
    body = page.text_content("main")
    assert f"showcase {XSS}" in body  # the message
    assert body.count(XSS) >= 4  # message, the param, the tag, the artifact's name
    assert SCRIPT in body  # the html param
    assert page.locator("main img[src=x]").count() == 0 and page.locator("main script").count() == 0
    page.click(f"button[data-path='artifacts/out/{XSS}.txt']")
    page.get_by_text("hostile name").wait_for()
    # the same text in the runs table and its filter
    page.goto(f"{showcase.url}/?col=message&col=params.note&col=tags.evil")
    page.wait_for_selector(".vt-row")
    assert XSS in page.text_content(".vt-body")
    assert page.locator(".vt-body img").count() == 0
    # an artifact that is an HTML page is a download, never rendered in the app's origin
    page.goto(file_url(showcase, showcase.ids["showcase"], "artifacts/out/report.json"))
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_run_files_are_served_sandboxed_with_an_allow_listed_type(showcase):
    rid = showcase.ids["showcase"]
    auth = {"Authorization": f"Bearer {showcase.tokens['read']}"}
    cases = {
        "artifacts/out/confusion.png": ("image/png", "inline"),
        "artifacts/out/preds.csv": ("text/plain; charset=utf-8", "inline"),
        "artifacts/out/page.html": ("application/octet-stream", "attachment"),
        "artifacts/models/echo/python_model.pkl": ("application/octet-stream", "attachment"),
        f"artifacts/out/{XSS}.txt": ("text/plain; charset=utf-8", "inline"),
    }
    for path, (media, disposition) in cases.items():
        status, headers, body = fetch(file_url(showcase, rid, path), headers=auth)
        assert status == 200, path
        assert headers["content-type"] == media, path
        assert headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-disposition"].startswith(disposition), path
        assert (
            '"' not in headers["content-disposition"] and "<" not in headers["content-disposition"]
        )
    status, _, body = fetch(file_url(showcase, rid, "artifacts/out/page.html"), headers=auth)
    assert SCRIPT.encode() in body  # the bytes as they are, but never as text/html
    status, _, body = fetch(file_url(showcase, rid, "artifacts/nope.txt"), headers=auth)
    assert status == 404 and "has no file" in json.loads(body)["message"]
    status, _, _ = fetch(file_url(showcase, rid, "artifacts/out/preds.csv"))
    assert status == 401
    status, _, body = fetch(
        f"{showcase.url}/api/v1/ui/runs/{rid}/preview?path=artifacts/out/preds.csv", headers=auth
    )
    got = json.loads(body)
    assert got["columns"] == ["x", "y"] and len(got["rows"]) == 50 and got["rows"][3] == ["3", "6"]


def test_the_models_registry_and_moving_an_alias(showcase, page):
    login(page, showcase, "read", "/models")
    page.wait_for_selector("#models")
    shot(page, "models")
    assert "@prod → v2" in page.text_content("#models")
    page.click("#models a:has-text('demo')")
    page.wait_for_selector("#history")
    history = page.text_content("#history")
    assert "v1 → v2" in history and "set to v1" in history
    assert page.locator("#move-alias").count() == 0  # a read session cannot move aliases
    assert "write token" in page.text_content("main")
    # a write session moves prod back to v1 from the page
    login(page, showcase, "write", "/models/demo")
    page.wait_for_selector("#move-alias")
    page.fill("#move-alias input[name=alias]", "prod")
    page.select_option("#move-alias select[name=version]", "1")
    page.click("#move-alias button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#history') && document.querySelector('#history').textContent.includes('v2 → v1')"
    )
    assert "@prod → v1" in page.text_content("#aliases")
    shot(page, "model-page")
    # a bad alias is refused with the server's one-line message
    page.fill("#move-alias input[name=alias]", "12")
    page.click("#move-alias button[type=submit]")
    page.wait_for_selector("#alias-error:not(:empty)")
    assert page.errors == []
    from mlvc import Repo
    from mlvc.models.api import alias_history

    moves = alias_history("demo", "prod", repo=Repo(showcase.root))
    assert moves[-1]["version"] == 1 and moves[-1]["by"] == "write-user"
