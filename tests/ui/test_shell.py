"""The web UI's shell: page paths, static files, the session cookie and its CSRF guard,
`mlvc ui`, and the router in a real browser."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from uikit import free_port, login, make_runs, server_env, shot, start_ui_server

STATIC = Path(__file__).parents[2] / "mlvc" / "server" / "ui" / "static"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url, method="GET", headers=None, data=None, follow=True):
    """(status, headers, body) of one request, errors included."""
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def session_cookie(server, scope="write") -> str:
    status, headers, _ = fetch(f"{server.url}/?token={server.tokens[scope]}", follow=False)
    assert status == 303
    return headers["set-cookie"].split(";")[0]


@pytest.mark.parametrize("path", ["/", "/runs/abc", "/compare?runs=a,b", "/models", "/models/m",
                                  "/events", "/login"])  # fmt: skip
def test_every_page_path_answers_the_app_with_a_strict_csp(ui_server, path):
    status, headers, body = fetch(ui_server.url + path)
    assert status == 200 and body.startswith(b"<!doctype html>")
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "img-src 'self' data: blob:" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert b"<script>" not in body  # only the module file runs: no inline script


def test_api_paths_are_never_shadowed_by_the_ui(ui_server):
    status, headers, body = fetch(ui_server.url + "/api/v1/nothing-here")
    assert status in (401, 404) and headers["content-type"] == "application/json"
    status, _, body = fetch(ui_server.url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, _ = fetch(ui_server.url + "/runs/a/b/c")
    assert status == 404 and headers["content-type"] == "application/json"


def test_static_files_are_long_cached_under_their_hash_and_gzipped(ui_server):
    _, _, index = fetch(ui_server.url + "/")
    prefix = re.search(rb'src="(/ui/static/[0-9a-f]{16})/app.js"', index).group(1).decode()
    status, headers, body = fetch(ui_server.url + prefix + "/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert (
        "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    )
    assert body == (STATIC / "app.js").read_bytes()
    status, headers, body = fetch(
        ui_server.url + prefix + "/app.js", headers={"Accept-Encoding": "gzip"}
    )
    assert (
        headers["content-encoding"] == "gzip"
        and gzip.decompress(body) == (STATIC / "app.js").read_bytes()
    )
    status, headers, _ = fetch(ui_server.url + "/ui/static/app.js")  # unversioned: revalidated
    assert status == 200 and headers["cache-control"] == "no-cache"
    etag = headers["etag"]
    assert fetch(ui_server.url + "/ui/static/app.js", headers={"If-None-Match": etag})[0] == 304
    for bad in ("/ui/static/../app.py", "/ui/static/index.html", "/ui/static/%2e%2e/pages.py",
                "/ui/static/nope.js", prefix + "/../../app.py"):  # fmt: skip
        assert fetch(ui_server.url + bad)[0] == 404, bad


def test_a_token_in_the_address_becomes_an_httponly_strict_cookie(ui_server):
    url = f"{ui_server.url}/runs/xyz?sort=acc&token={ui_server.tokens['read']}"
    status, headers, _ = fetch(url, follow=False)
    assert status == 303 and headers["location"] == "/runs/xyz?sort=acc"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0]
    status, _, body = fetch(ui_server.url + "/api/v1/ui/session", headers={"Cookie": value})
    assert status == 200 and json.loads(body)["scope"] == "read"
    status, _, _ = fetch(ui_server.url + "/api/v1/runs", headers={"Cookie": value})
    assert status == 200
    # a made-up session and a bad token get nothing
    assert (
        fetch(ui_server.url + "/api/v1/runs", headers={"Cookie": "mlvc_session=forged"})[0] == 401
    )
    status, headers, _ = fetch(f"{ui_server.url}/models?token=mlvc_wrong", follow=False)
    assert status == 303 and headers["location"].startswith("/login?next=%2Fmodels")
    assert "set-cookie" not in headers


def test_cookie_writes_need_the_ui_header_and_a_write_token(ui_server):
    write = session_cookie(ui_server, "write")
    read = session_cookie(ui_server, "read")
    body = json.dumps({"sql": "SELECT 1"}).encode()
    base = {"Content-Type": "application/json"}
    url = ui_server.url + "/api/v1/query"  # a POST that only reads: the guard still applies
    status, _, msg = fetch(url, "POST", {**base, "Cookie": write}, body)
    assert status == 403 and b"X-Requested-With: mlvc-ui" in msg
    status, _, _ = fetch(
        url, "POST", {**base, "Cookie": write, "X-Requested-With": "mlvc-ui"}, body
    )
    assert status == 200
    # an alias move (a write) with a read session is refused for its scope
    alias = ui_server.url + "/api/v1/models/m/aliases/prod"
    status, _, msg = fetch(alias, "PUT", {**base, "Cookie": read, "X-Requested-With": "mlvc-ui"},
                           json.dumps({"version": 1}).encode())  # fmt: skip
    assert status == 403 and b"write token" in msg
    # logging in from elsewhere (no UI header) is refused; logging out ends the session
    s, _, _ = fetch(ui_server.url + "/api/v1/ui/session", "POST", base,
                    json.dumps({"token": ui_server.tokens["read"]}).encode())  # fmt: skip
    assert s == 403
    ui = {**base, "X-Requested-With": "mlvc-ui"}
    for garbage in (b"[1]", b"not json", b'{"token": 5}', b"[" * 100_000, b"x" * 10_000):
        s, _, msg = fetch(ui_server.url + "/api/v1/ui/session", "POST", ui, garbage)
        assert s in (400, 413) and b"error_code" in msg, garbage[:20]
    s, _, _ = fetch(ui_server.url + "/api/v1/ui/session", "POST", ui, b'{"token": "mlvc_x"}')
    assert s == 401
    fetch(ui_server.url + "/api/v1/ui/session", "DELETE", {"Cookie": read})
    assert fetch(ui_server.url + "/api/v1/runs", headers={"Cookie": read})[0] == 401


def test_a_revoked_token_ends_its_sessions(ui_server):
    out = ui_server.mlvc("token", "create", "--scope", "read", "--name", "short-lived", "--json")
    made = json.loads(out)
    status, headers, _ = fetch(f"{ui_server.url}/?token={made['token']}", follow=False)
    cookie = headers["set-cookie"].split(";")[0]
    assert fetch(ui_server.url + "/api/v1/runs", headers={"Cookie": cookie})[0] == 200
    ui_server.mlvc("token", "revoke", made["id"])
    assert fetch(ui_server.url + "/api/v1/runs", headers={"Cookie": cookie})[0] == 401


def test_the_assets_stay_under_250_kb_gzipped():
    total = sum(len(gzip.compress(p.read_bytes(), 9)) for p in STATIC.rglob("*") if p.is_file())
    assert 0 < total <= 250 * 1024, total


def test_el_never_parses_html_and_refuses_script_urls():
    code = (STATIC / "lib" / "dom.js").read_text()
    assert "innerHTML =" not in code and "insertAdjacentHTML" not in code
    for page in (STATIC / "pages").glob("*.js"):
        text = page.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, page.name


def test_the_router_logs_in_with_the_form_and_moves_between_pages(ui_server, page):
    page.goto(ui_server.url + "/models")
    page.wait_for_url("**/login?next=%2Fmodels")
    shot(page, "login")
    page.fill("input[name=token]", "mlvc_not-a-token")
    page.click("button[type=submit]")
    page.get_by_text("that token is not valid").wait_for()
    page.fill("input[name=token]", ui_server.tokens["read"])
    page.click("button[type=submit]")
    page.wait_for_url("**/models")
    page.get_by_text("read-user (read)").wait_for()
    page.click("#nav a[data-page=events]")
    page.get_by_role("heading", name="Events").wait_for()
    page.wait_for_selector("#events tr[data-type='commit.created']")
    page.go_back()
    page.wait_for_url("**/models")
    assert page.errors == []


def test_an_anonymous_read_server_shows_pages_without_login_and_no_write_form(tmp_path, page):
    root = tmp_path / "proj"
    make_runs(root, [dict(message="open", name="open", params={"lr": 0.1})])
    server = start_ui_server(root, "--allow-anonymous-read")
    try:
        page.goto(server.url + "/")
        page.wait_for_selector(".vt-row:has-text('open')")
        assert page.text_content("#who") == "log in"
        page.goto(server.url + "/compare?runs=a,b")
        page.get_by_role("heading", name="Compare").wait_for()
        # anonymous reads never write: a write with no credentials is refused
        status, _, _ = fetch(server.url + "/api/v1/models/m/aliases/prod", "PUT",
                             {"Content-Type": "application/json", "X-Requested-With": "mlvc-ui"},
                             b'{"version": 1}')  # fmt: skip
        assert status == 403
        login(page, server, "read", "/")
        page.get_by_text("read-user (read)").wait_for()
        assert page.errors == []
    finally:
        server.check()


def test_mlvc_ui_serves_with_a_token_of_its_own_and_refuses_a_second_server(tmp_path):
    from uikit import make_runs

    root = tmp_path / "proj"
    make_runs(root, [dict(message="one", params={"lr": 0.1})])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlvc", "ui", "--no-browser", "--port", str(port)],
                            cwd=root, env=server_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 30
        while "?token=" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line).group(0)
        assert url.startswith(f"http://127.0.0.1:{port}/")
        secret = url.split("token=")[1]
        assert (
            secret not in (root / ".mlvc" / "tokens.json").read_text()
            if (root / ".mlvc" / "tokens.json").exists()
            else True
        )
        status, headers, _ = fetch(url, follow=False)
        assert status == 303 and "mlvc_session=" in headers["set-cookie"]
        req = {"Authorization": f"Bearer {secret}"}
        assert fetch(f"http://127.0.0.1:{port}/api/v1/runs", headers=req)[0] == 200
        second = subprocess.run([sys.executable, "-m", "mlvc", "ui", "--no-browser"], cwd=root,
                                env=server_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert "already serves" in second.stderr and "web UI is at its address" in second.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    from mlvc import Repo

    assert Repo(root).fsck() == []


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_an_unknown_page_path_shows_a_browser_an_html_not_found_page(ui_server):
    hostile = '/runs/a/<script>alert(1)</script>&"x'
    status, headers, body = fetch(
        ui_server.url + urllib.parse.quote(hostile), headers={"Accept": BROWSER_ACCEPT}
    )
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-content-type-options"] == "nosniff"
    text = body.decode()
    assert "<h1>Not found</h1>" in text and '<a href="/">' in text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x" in text
    # its stylesheet is the UI's own, at the long-cached address the app uses
    css = re.search(r'href="(/ui/static/[0-9a-f]{16}/app.css)"', text).group(1)
    assert fetch(ui_server.url + css)[0] == 200
    # API clients get JSON, even when they say they accept HTML; so do non-GET requests
    for path, method in (("/api/v1/nothing", "GET"), ("/ajax-api/2.0/x", "GET"),
                         ("/ui/static/nope.js", "GET"), ("/nowhere", "POST")):  # fmt: skip
        status, headers, body = fetch(
            ui_server.url + path, method, headers={"Accept": BROWSER_ACCEPT}
        )
        assert status in (401, 404, 405) and headers["content-type"] == "application/json", path
        assert b"error_code" in body
    status, headers, _ = fetch(ui_server.url + "/nowhere", headers={"Accept": "application/json"})
    assert status == 404 and headers["content-type"] == "application/json"


def test_a_browser_on_a_mistyped_address_can_go_home(page, ui_server):
    login(page, ui_server, "read", "/")
    response = page.goto(ui_server.url + "/runz")
    assert response.status == 404
    assert page.text_content("h1") == "Not found" and "/runz" in page.text_content("main")
    page.click("text=Go to the runs table")
    page.wait_for_selector(".vt-row a[href]")
    assert page.url == ui_server.url + "/" and not page.errors


def test_a_page_left_while_loading_never_draws_over_the_next(ui_server, page):
    """Back from a run page whose data was still on its way: the late answer drew the run
    page over the events page the user had returned to (its Filter button was detached
    under the user's click; CI lost test_events_arrive_live... to it twice)."""
    login(page, ui_server, "read", "/events")
    page.wait_for_selector("#events")
    page.evaluate(
        """() => {  // the run page's answers arrive 800 ms late (the real server's answers)
          const real = window.fetch;
          window.fetch = (url, opts) => String(url).includes('/api/v1/runs/')
            ? new Promise((ok) => setTimeout(ok, 800)).then(() => real(url, opts))
            : real(url, opts);
          history.pushState({}, '', '/runs/HEAD');
          dispatchEvent(new PopStateEvent('popstate'));
          setTimeout(() => history.back(), 100);
        }"""
    )
    page.wait_for_url("**/events")
    page.wait_for_timeout(1500)  # past the run page's late answers
    assert page.locator("#events").count() == 1
    assert page.text_content("#app h1") == "Events"
