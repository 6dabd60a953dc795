"""Fixtures for the web UI's tests (helpers in uikit.py, which benchmarks/bench_ui.py
also uses): a real ``mlvc server`` over a generated repository and a real headless
Chromium (Debian's /usr/bin/chromium) driven by Playwright.

    ui_repo      module-scoped: a repository with the runs of uikit.SMALL
    ui_server    module-scoped: ``mlvc server`` over it (uikit.UiServer); fsck at the end
    browser      session-scoped Chromium
    page         a fresh context and page; ``page.errors`` lists uncaught errors and console
                 errors (not failed requests); closed after the test

Every test here is marked ``ui``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from uikit import CHROMIUM, SMALL, launch_chromium, make_runs, start_ui_server


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/ui/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="module")
def ui_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "proj"
    make_runs(root, SMALL)
    return root


@pytest.fixture(scope="module")
def ui_server(ui_repo):
    server = start_ui_server(ui_repo)
    yield server
    server.check()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def _console(page, message) -> None:
    # a failed request (a 401 before login, a 404 asked on purpose) is the app's to handle
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        page.errors.append(f"console: {message.text}")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: _console(pg, m))
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
