"""The compare page in real Chromium over a real `mlvc server`: metric charts (uPlot) fed by
GET /api/v1/series, log scale and x axis, drag-zoom fetching full resolution, the params /
metrics table with "only differences", the pair's six-section diff with the code patch, and
hostile text shown literally."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from uikit import login, shot, start_ui_server

import mlvc
from mlvc import Repo

HOSTILE = "<img src=x onerror=alert(1)>"
POINTS = 6000  # over the page's 2,500-point limit: the first answer is sampled
MANY = 24


def make_compare_repo(root: Path) -> list[str]:
    """Three runs with loss/acc series (one with NaN and inf), a param and a code line
    that differ, and one param value and one code line holding HTML."""
    root.mkdir(parents=True)
    repo = Repo.init(root)
    old = os.getcwd()
    os.chdir(root)
    ids = []
    try:
        for i, (name, lr) in enumerate([("alpha", 0.1), ("beta", 0.01), ("gamma", 0.3)]):
            (root / "train.py").write_text(f"lr = {lr}\n# {HOSTILE}\nprint('train')\n")
            params = {"lr": lr, "opt": "sgd", "note": HOSTILE if i == 1 else "plain"}
            with mlvc.start_run(name=name, repo=repo, params=params) as run:
                for s in range(POINTS):
                    loss = (1 + i) / (1 + s / 100) + 0.01 * math.sin(s)
                    run.log_metric("loss", loss, step=s, timestamp=1_700_000_000 + s)
                    if s % 10 == 0:
                        run.log_metric("acc", 1 - loss / 4, step=s, timestamp=1_700_000_000 + s)
                if i == 0:
                    run.log_metric("acc", math.nan, step=POINTS, timestamp=1_700_000_000 + POINTS)
                    run.log_metric("acc", math.inf, step=POINTS + 1)
                run.set_tag("who", HOSTILE)
            ids.append(repo.resolve(name).hex)
        for i in range(MANY):  # short runs, for a compare of many
            with mlvc.start_run(name=f"sweep-{i:02d}", repo=repo, params={"lr": i / 100}) as run:
                for s in range(200):
                    run.log_metric("loss", (1 + i / 10) / (1 + s), step=s)
    finally:
        os.chdir(old)
    return ids


@pytest.fixture(scope="module")
def compare_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare") / "proj"
    ids = make_compare_repo(root)
    server = start_ui_server(root)
    server.ids = ids
    yield server
    server.check()


def series_requests(page) -> list[str]:
    got: list[str] = []
    page.on("request", lambda r: got.append(r.url) if "/api/v1/series" in r.url else None)
    return got


def open_compare(page, server, query: str):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, server, "read", f"/compare?{query}")
    page.wait_for_selector("#charts[data-drawn=true]")
    return dialogs


def test_charts_of_three_runs_with_legends_log_scale_and_x_axis(page, compare_server):
    requests = series_requests(page)
    open_compare(page, compare_server, "runs=alpha,beta,gamma")
    charts = page.locator(".cmp-chart")
    assert charts.count() == 2  # acc and loss, in key order
    assert page.locator(".cmp-chart[data-key=loss] canvas").count() == 1
    legend = page.locator(".cmp-chart[data-key=loss] .u-legend").inner_text()
    for name in ("alpha", "beta", "gamma"):
        assert name in legend
    assert page.locator(".cmp-chart[data-key=loss]").get_attribute("data-sampled") == "true"
    assert any("limit=2500" in u for u in requests)
    shot(page, "compare-charts", full_page=True)

    page.check("#log-scale")
    page.wait_for_selector("#charts[data-drawn=true]")
    assert "log=1" in page.url
    page.select_option("#x-axis", "relative")
    page.wait_for_selector("#charts[data-drawn=true]")
    assert "x=relative" in page.url and any("x=relative" in u for u in requests)
    asked = len(requests)
    page.fill("#smooth", "0.6")
    page.wait_for_url(re.compile(r"smooth=0\.6"))
    page.wait_for_selector("#charts[data-drawn=true]")
    assert len(requests) == asked  # smoothing redraws what the page has
    assert page.errors == []

    # deep link: the same choices come back from the address
    url = page.url
    page.goto(url)
    page.wait_for_selector("#charts[data-drawn=true]")
    assert page.is_checked("#log-scale") and page.input_value("#x-axis") == "relative"
    assert page.input_value("#smooth") == "0.6"


def test_drag_zoom_fetches_the_window_at_full_resolution(page, compare_server):
    requests = series_requests(page)
    open_compare(page, compare_server, "runs=alpha,beta&metrics=loss")
    box = page.locator(".cmp-chart[data-key=loss] .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    page.mouse.up()
    chart = page.locator(".cmp-chart[data-key=loss]")
    # (no wait_for_function: the page's CSP forbids evaluating strings, as it should)
    page.wait_for_selector(".cmp-chart[data-key=loss][data-window*=','][data-sampled=false]")
    zoomed = [u for u in requests if "x_min=" in u and "x_max=" in u]
    assert zoomed, requests
    assert chart.get_attribute("data-sampled") == "false"  # ~300 steps: every point
    lo, hi = (float(v) for v in chart.get_attribute("data-window").split(","))
    assert 1500 < lo < hi < 3500
    shot(page, "compare-zoomed")
    page.click("#reset-zoom")
    page.wait_for_selector(".cmp-chart[data-key=loss][data-window=''][data-sampled=true]")
    assert chart.get_attribute("data-sampled") == "true"
    assert page.errors == []


def test_params_table_only_differences_and_the_diff_with_its_patch(page, compare_server):
    dialogs = open_compare(page, compare_server, "runs=alpha,beta&metrics=loss")
    table = page.locator(".cmp-table")
    assert table.locator("tr[data-key='params.opt']").count() == 1
    page.check("#only-diff")
    assert table.locator("tr[data-key='params.opt']").count() == 0  # sgd in both
    assert table.locator("tr[data-key='params.lr']").count() == 1
    assert "only=1" in page.url
    page.wait_for_selector("#diff section[data-section=code] .patch")
    sections = page.locator("#diff section").evaluate_all("s => s.map(x => x.dataset.section)")
    assert sections == ["params", "metrics", "code", "data", "artifacts", "env"]
    patch = page.locator("#diff .patch").first
    assert patch.locator("span.del").filter(has_text="-lr = 0.1").count() == 1
    assert patch.locator("span.add").filter(has_text="+lr = 0.01").count() == 1
    # hostile text is shown as text: no element made of it, no script ran
    assert HOSTILE in table.inner_text() and HOSTILE in page.locator("#diff").inner_text()
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == [] and page.errors == []
    shot(page, "compare-diff", full_page=True)


def test_a_pair_is_chosen_among_three_runs(page, compare_server):
    open_compare(page, compare_server, "runs=alpha,beta,gamma&metrics=acc")
    page.wait_for_selector("#diff section[data-section=params]")
    page.select_option("#pair-b", "gamma")
    page.wait_for_url(re.compile(r"b=gamma"))
    page.wait_for_selector("#diff section[data-section=params] td:text('0.3')")
    assert page.errors == []


def test_an_unknown_run_is_named_on_the_page(page, compare_server):
    login(page, compare_server, "read", "/compare?runs=alpha,nosuch")
    page.wait_for_selector("[role=alert]")
    assert "nosuch" in page.locator("[role=alert]").inner_text()
    assert page.errors == []  # told on the page, not thrown


def test_many_runs_stay_usable(page, compare_server):
    names = [f"sweep-{i:02d}" for i in range(MANY)]
    requests = series_requests(page)
    open_compare(page, compare_server, f"runs={','.join(names)}&metrics=loss")
    chart = page.locator(".cmp-chart[data-key=loss]")
    assert chart.locator(".u-legend .u-series").count() == MANY + 1  # x, then each run
    legend = chart.locator(".u-legend").bounding_box()
    assert legend["height"] <= 130  # scrolls instead of growing with the runs
    assert chart.bounding_box()["width"] <= 700
    assert any("limit=833" in u for u in requests)  # fewer points per run when many share
    assert (
        len(
            set(
                chart.locator(".u-legend .u-marker").evaluate_all(
                    "ms => ms.map(m => getComputedStyle(m).borderColor)"
                )
            )
        )
        == MANY + 1
    )
    shot(page, "compare-many")
    assert page.errors == []


def test_short_runs_show_their_points_and_ticks_and_the_diff_no_stray_text(tmp_path, page):
    """Found walking the page: a run of one point drew nothing (a line needs two), the
    relative-time ticks of a run logged within milliseconds all read "0", and the diff of
    two runs began with the text "null"."""
    root = tmp_path / "proj"
    root.mkdir()
    repo = Repo.init(root)
    with mlvc.start_run(name="quick", repo=repo) as run:
        for s in range(20):
            run.log_metric("loss", 1 / (s + 1), step=s, timestamp=1_700_000_000 + s * 0.0001)
    with mlvc.start_run(name="blip", repo=repo) as run:
        run.log_metric("loss", 0.5, step=3, timestamp=1_700_000_000)
    server = start_ui_server(root)
    try:
        open_compare(page, server, "runs=quick,blip&metrics=loss&x=relative")
        chart = page.locator(".cmp-chart[data-key=loss]")
        ticks = chart.get_attribute("data-x-ticks").split()
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)  # each tick its own label
        assert any(t.startswith("0.00") and t != "0" for t in ticks)
        # the blip's one point is drawn: pixels of its colour (the second run's) on the canvas
        painted = page.evaluate("""() => {
            const probe = document.createElement('canvas').getContext('2d');
            probe.fillStyle = 'hsl(138, 65%, 38%)';
            probe.fillRect(0, 0, 1, 1);
            const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
            const c = document.querySelector('.cmp-chart[data-key=loss] canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 40) n += 1;
            }
            return n;
        }""")
        assert painted >= 9
        page.wait_for_selector("#diff section[data-section=params]")
        stray = page.evaluate("""() => {
            const w = document.createTreeWalker(document.querySelector('#app'), NodeFilter.SHOW_TEXT);
            const out = [];
            while (w.nextNode()) if (['null', 'undefined'].includes(w.currentNode.data.trim())) out.push(w.currentNode.data);
            return out;
        }""")
        assert stray == []
        assert page.errors == []
        shot(page, "compare-short-runs", full_page=True)
    finally:
        server.stop()
    assert Repo(root).fsck() == []
