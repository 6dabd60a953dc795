#!/usr/bin/env python
"""The compare page's metric chart of a 1M-point series (issue 13, part B): goal <= 500 ms
from navigation to the chart drawn, in headless Chromium against a real ``mlvc server``.

Data is generated at run time: run ``big`` logs one key with 1,000,000 points (a noisy
decay with a spike and a NaN), run ``small`` the same key with 2,400 points (the baseline:
what the page draws when no sampling is needed). For each, ``--repeat`` times in a fresh
browser context (logged in first, static files cached as a returning user has them):

- nav->drawn   navigation start to the page's ``mlvc-charts-drawn`` mark (every chart drawn),
               on the first visit of the compare page (its modules and uPlot fetched and
               compiled) and on a second one (the same, warm)
- req->drawn   the ``/api/v1/series`` request's start to that mark (fetch + parse + draw)

and, outside the browser, the series endpoint itself: the server's query + sampling time
(the answer's ``seconds``), the request's wall time, and the payload size; plus the raw 1M
points fetched without sampling (``POST /api/v1/query`` JSON) as the other baseline.

First viewers (a fresh server each that has drawn only the small run's chart, so its
modules are imported and the index open; nothing of the big run cached): the whole series
sampled from its
level (stored at ingest, series_levels) beside the same request made to read every point
(a window of +-1e18 holding them all: what every first viewer paid before levels), a zoom
(a window of 1% of the steps, read at full resolution from ``metrics``), and what storing
the level cost the ingest (``level_sql`` over the run's points, timed on its own).
Medians of ``--repeat`` runs. Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from uikit import launch_chromium, login, start_ui_server  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench_ui_charts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_repo(root: Path, big: int) -> None:
    import mlvc
    from mlvc import Repo

    root.mkdir(parents=True)
    repo = Repo.init(root)
    t0 = 1_700_000_000.0
    for name, n in (("big", big), ("small", 2400)):  # small: under the limit, drawn whole
        with mlvc.start_run(name=name, repo=repo) as run:
            for i in range(n):
                v = math.exp(-i / (n / 5)) + 0.05 * math.sin(i * 0.37)
                run.log_metric("loss", v, step=i, timestamp=t0 + i * 0.01)
            run.log_metric("loss", 40.0, step=n // 3, timestamp=t0 + n // 3 * 0.01)  # a spike
            run.log_metric("loss", math.nan, step=n, timestamp=t0 + n * 0.01)


def http(server, path: str, body: dict | None = None) -> tuple[float, bytes]:
    req = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {server.tokens['read']}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        data = r.read()
    return time.perf_counter() - t, data


def browser_times(browser, server, run: str, repeat: int):
    """(first visit nav->drawn, second visit nav->drawn, req->drawn), in ms."""
    first, nav, req = [], [], []
    for _ in range(repeat):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        login(page, server, "read", "/")  # the session cookie, and the app's files cached
        page.wait_for_selector("#app >> text=Runs")
        for visit in range(2):
            page.goto(f"{server.url}/compare?runs={run}&metrics=loss")
            page.wait_for_selector("#charts[data-drawn=true]", timeout=60_000)
            marks = page.evaluate(
                """() => {
                    const drawn = performance.getEntriesByName('mlvc-charts-drawn')[0].startTime;
                    const s = performance.getEntriesByType('resource')
                        .filter((e) => e.name.includes('/api/v1/series') && e.name.includes('key='))[0];
                    return [drawn, drawn - s.startTime];
            }"""
            )
            (first if visit == 0 else nav).append(marks[0])
            req.append(marks[1])
        context.close()
    return first, nav, req


def ingest_level_cost(root: Path) -> float:
    """Seconds ``level_sql`` takes over every point of the repository (what the ingest of
    these runs spent storing their levels), median of 3."""
    from mlvc import Repo
    from mlvc.index.series import level_sql

    repo = Repo(root)
    times = []
    with repo.index.connect_readonly() as con:
        for _ in range(3):
            t = time.perf_counter()
            con.sql(f"SELECT count(*) FROM ({level_sql('metrics')})").fetchall()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cold", type=int, default=3, help="first viewers (a server restart each)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-ui-charts-") as tmp:
        root = Path(tmp) / "proj"
        log(f"generating {args.points:,} + 2,500 points")
        t = time.perf_counter()
        make_repo(root, args.points)
        log(f"generated in {time.perf_counter() - t:.1f} s")
        server = start_ui_server(root)
        try:
            rows = {}
            with sync_playwright() as p:  # a first viewer: the server has sampled nothing yet
                browser = launch_chromium(p)
                cold = []
                for k in range(args.cold):
                    if k:
                        server.stop()
                        server.start()  # a new process: its series cache is empty
                    cold += browser_times(browser, server, "big", 1)[0]
                browser.close()
            log(f"big, first viewer: nav->drawn {statistics.median(cold):.0f} ms")
            first_viewer = {"level": [], "points": [], "zoom": []}
            lo, hi = args.points * 2 // 5, args.points * 2 // 5 + args.points // 100
            asks = {"level": "", "points": "&x_min=-1e18&x_max=1e18",
                    "zoom": f"&x_min={lo}&x_max={hi}"}  # fmt: skip
            for k in range(args.cold):
                server.stop()
                server.start()
                # a server that has drawn another chart (its modules imported, the index
                # open), first asked for the big series; each order in turn
                http(server, "/api/v1/series?run=small&key=loss")
                for name, extra in sorted(asks.items(), reverse=bool(k % 2)):
                    wall, data = http(server, f"/api/v1/series?run=big&key=loss&limit=2500{extra}")
                    first_viewer[name].append((wall, json.loads(data)["seconds"]))
            log("first viewers: " + ", ".join(
                f"{k} {statistics.median(w for w, _ in v) * 1000:.0f} ms"
                for k, v in first_viewer.items()))  # fmt: skip
            level_cost = ingest_level_cost(root)
            server.stop()
            server.start()
            http(server, "/api/v1/series?run=small")  # the index opened once (no key: no series)
            for run in ("small", "big"):
                walls, secs, size = [], [], 0
                for _ in range(args.repeat):
                    wall, data = http(server, f"/api/v1/series?run={run}&key=loss&limit=2500")
                    answer = json.loads(data)
                    walls.append(wall)
                    secs.append(answer["seconds"])
                    size = len(data)
                    points = len(answer["series"][0]["step"])
                # the first request samples; the others are answered from the server's cache
                rows[run] = {"wall": walls[1:], "server": secs[1:], "bytes": size,
                             "points": points, "cold_wall": walls[0], "cold_server": secs[0]}  # fmt: skip
                log(f"{run}: endpoint median {statistics.median(walls) * 1000:.0f} ms")
            raw_walls, raw_size = [], 0
            for _ in range(min(3, args.repeat)):
                sql = "SELECT step, epoch_us(timestamp) AS t, value FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.name = 'big'"
                wall, data = http(server, "/api/v1/query", {"sql": sql})
                raw_walls.append(wall)
                raw_size = len(data)
            log(f"raw query median {statistics.median(raw_walls):.2f} s")
            with sync_playwright() as p:
                browser = launch_chromium(p)
                for run in ("small", "big"):
                    first, nav, req = browser_times(browser, server, run, args.repeat)
                    rows[run].update(first=first, nav=nav, req=req)
                    log(f"{run}: nav->drawn median {statistics.median(nav):.0f} ms")
                browser.close()
        finally:
            server.stop()

    med = statistics.median
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"### UI charts: a {args.points:,}-point series on the compare page\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average {' '.join(load)}; medians of {args.repeat} runs.\n")  # fmt: skip
    print("| series | points drawn | nav->drawn ms, first visit | nav->drawn ms | "
          "req->drawn ms | endpoint ms (first request) | server query+sampling ms "
          "(first request) | payload KiB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run, label in (("small", "2,400 points (baseline)"), ("big", f"{args.points:,} points")):
        r = rows[run]
        print(f"| {label} | {r['points']:,} | {med(r['first']):.0f} | {med(r['nav']):.0f} | "
              f"{med(r['req']):.0f} | "
              f"{med(r['wall']) * 1000:.0f} ({r['cold_wall'] * 1000:.0f}) | "
              f"{med(r['server']) * 1000:.1f} ({r['cold_server'] * 1000:.0f}) | "
              f"{r['bytes'] / 1024:.0f} |")  # fmt: skip
    print(f"\nFirst viewer of the {args.points:,}-point chart (a fresh server each, nothing "
          f"sampled yet; first visit of the page): nav->drawn median {med(cold):.0f} ms "
          f"(all: {', '.join(f'{c:.0f}' for c in cold)}). The other browser figures are "
          "later viewers: the server answers them from its series cache.")  # fmt: skip
    ratio = med(rows["big"]["nav"]) / med(rows["small"]["nav"])
    print(f"\n{args.points:,} vs 2,400-point baseline, nav->drawn: {ratio:.2f}x. "
          f"Raw {args.points:,} points without sampling (POST /api/v1/query, JSON): "
          f"{med(raw_walls):.2f} s and {raw_size / 2**20:.1f} MiB before any drawing; "
          f"goal nav->drawn <= 500 ms: "
          f"{'met' if med(rows['big']['nav']) <= 500 else 'NOT met'}.")  # fmt: skip
    print(f"\nFirst viewers of the {args.points:,}-point series, endpoint wall ms (server "
          f"ms), a fresh server each, {args.cold} runs:\n")  # fmt: skip
    print("| request | wall ms | server ms |\n|---|---:|---:|")
    labels = {"level": "whole series, sampled from its level (this)",
              "points": "the same, reading every point (baseline: before levels)",
              "zoom": "zoom: a window of 1% of the steps, from the points"}  # fmt: skip
    for name, got in first_viewer.items():
        print(f"| {labels[name]} | {med(w for w, _ in got) * 1000:.0f} | "
              f"{med(s for _, s in got) * 1000:.0f} |")  # fmt: skip
    print(
        f"\nStoring the level at ingest (level_sql over the {args.points:,} + 2,400 points, "
        f"both axes): {level_cost * 1000:.0f} ms."
    )


if __name__ == "__main__":
    main()
