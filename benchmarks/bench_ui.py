"""Web UI benchmark (issue 13): the runs table in headless Chromium against a real server.

Run as ``.venv/bin/python benchmarks/bench_ui.py [--quick] [--reps N] [--keep DIR]``.

1. **First paint** of the runs table (first rows visible, from navigation start) over a
   repository of 1,500 runs x 1,500 metrics (and 20 params), beside two baselines timed in
   the same repetition: the app's own shell with no data (``/login``), and a static HTML page
   of the same size as the table's rendered DOM, served by the same browser. Twice: with the
   default columns, and with 500 columns chosen (the most a page takes: name and 499
   metrics, the last 499 keys, past runs_wide's 1,000 columns, so joined per page).
2. **Scrolling 100,000 runs** top to bottom (400 jumps of 250 rows, then 300 frames of
   smooth scrolling in the middle) while a PerformanceObserver records long tasks: the
   longest main-thread task, and how many took over 50 ms / 100 ms.

The repositories are built below the CLI for speed: run objects (final metrics only, no
series) are written with the library's object writer and refs, then ingested by
``Index.sync`` (the same rows ``mlvc commit`` would give; see bench_tracking): the tall one
in one pass, the wide one 250 runs at a time. With main's runs_wide pivot (one FILTER
aggregate per key column) the wide one took ~40 min (250 runs in 295 s, 500 in 702 s at
load 12-16); a map per run read once per column builds it in 41 s (a patch for
mlvc/index/wide.py given to the lead; build it once with ``--keep``).
Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "ui"))

FIRST_ROWS = """
window.__firstRows = null;
new MutationObserver((_, obs) => {
  if (document.querySelector('.vt-row a[href]')) { window.__firstRows = performance.now(); obs.disconnect(); }
}).observe(document, {childList: true, subtree: true});
window.__longTasks = [];
window.__added = 0;  // element nodes added to the table's rows while it scrolls
document.addEventListener('DOMContentLoaded', () => new MutationObserver((list) => {
  for (const m of list) for (const n of m.addedNodes) if (n.nodeType === 1 && n.closest('.vt-body')) window.__added += 1;
}).observe(document.body, {childList: true, subtree: true}));
try {
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]); })
    .observe({type: 'longtask', buffered: true});
} catch (e) {}
"""


def build(root: Path, runs: int, params: int, metrics: int, batch: int = 250) -> float:
    """``runs`` runs with ``params`` params and ``metrics`` final metrics each; seconds.

    Ingested incrementally, ``batch`` runs at a time (journal, ref, ``Index.sync``), as
    commits would be: one ``rebuild_index`` of 1,500 x 1,500 needed 4.7 GB."""
    import random

    from mlvc import Repo
    from mlvc.core.objects import Run
    from mlvc.store.typed import write_object

    t0 = time.perf_counter()
    if root.exists():  # a build that did not finish: start again
        import shutil

        shutil.rmtree(root)
    repo = Repo.init(root)
    rnd = random.Random(13)
    base = 1_764_000_000_000_000
    for start in range(0, runs, batch):
        ids = []
        for i in range(start, min(runs, start + batch)):
            run = Run(
                name=f"run{i}",
                message=f"synthetic run {i}",
                author="bench",
                started=base + i * 1_000_000,
                ended=base + i * 1_000_000 + 30_000_000,
                params={f"p{k}": rnd.random() for k in range(params)},
                metrics={f"m{k:04d}": rnd.random() for k in range(metrics)},
                tags={"team": f"t{i % 5}"},
            )
            ids.append(write_object(repo.store, run))
        repo.store.flush()
        repo.store.sync()
        for oid in ids:
            repo.index.journal(oid)
            repo.refs.add_run(oid)
        repo.index.sync()
        print(f"  {start + len(ids)} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    (root / BUILT).write_text(f"{runs} {params} {metrics}\n")
    return time.perf_counter() - t0


BUILT = ".bench-built"  # written last by build(): "RUNS PARAMS METRICS"


def built(root: Path, runs: int, params: int, metrics: int, batch: int = 250) -> float:
    """Build the repository at ``root`` unless a finished build of the same shape is there
    (``--keep DIR`` reuses it: the 100,000-run one takes ~15 minutes); seconds spent."""
    marker = root / BUILT
    if marker.exists() and marker.read_text().split() == [str(runs), str(params), str(metrics)]:
        print(f"reusing {root} ({runs} runs)", file=sys.stderr)
        return 0.0
    return build(root, runs, params, metrics, batch)


def first_paint(browser, server, reps: int, query: str = "") -> dict:
    from uikit import login

    out = {"table": [], "shell": [], "static": []}
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    login(page, server, "read", "/login")  # the session cookie
    page.add_init_script(FIRST_ROWS)
    html = None
    for _ in range(reps):
        page.goto(server.url + "/login")
        page.wait_for_selector("form.login")
        out["shell"].append(
            page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
        )
        page.goto(server.url + "/" + query)
        page.wait_for_function("() => window.__firstRows !== null", timeout=30_000)
        out["table"].append(page.evaluate("window.__firstRows"))
        if html is None:  # the rendered table as a static page: no script, same bytes
            html = re.sub(r"<script[^>]*>.*?</script>", "", page.content(), flags=re.S)
        page.goto("data:text/html;base64," + base64.b64encode(html.encode()).decode())
        page.wait_for_load_state("load")
        out["static"].append(
            page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        )
    ctx.close()
    out["html_bytes"] = len(html.encode())
    return out


def scroll(browser, server) -> dict:
    from uikit import login

    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    login(page, server, "read", "/login")
    page.add_init_script(FIRST_ROWS)
    page.goto(server.url + "/")
    page.wait_for_function("() => window.__firstRows !== null", timeout=60_000)
    t0 = time.perf_counter()
    page.evaluate("""async () => {
      const box = document.querySelector('.vt');
      const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
      window.__t0 = performance.now();
      window.__added = 0;
      const jumps = 400;
      for (let i = 1; i <= jumps; i += 1) {
        box.scrollTop = (box.scrollHeight - box.clientHeight) * i / jumps;
        await frame(); await frame();
      }
      box.scrollTop = box.scrollHeight / 2;
      for (let i = 0; i < 300; i += 1) { box.scrollTop += 40; await frame(); }
      box.scrollTop = box.scrollHeight;
      await frame();
    }""")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.vt-row')].some(r => r.textContent.includes('run0'))",
        timeout=900_000,  # main's table queued a page request per page scrolled past: minutes
    )
    seconds = time.perf_counter() - t0
    added = page.evaluate("window.__added")
    # long tasks that started once the scrolling did (not the page's load)
    tasks = page.evaluate("window.__longTasks.filter(([s]) => s >= window.__t0).map(([, d]) => d)")
    rows_in_dom = page.locator(".vt-body > *").count()  # row nodes, pooled or not
    total = page.text_content("#run-count")
    ctx.close()
    return {"seconds": seconds, "tasks": tasks, "rows_in_dom": rows_in_dom, "count": total,
            "added": added}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="150 x 150 and 10,000 runs")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scrolls", type=int, default=3, help="scroll runs, per code")
    ap.add_argument("--keep", help="build the repositories here and keep them; a finished "
                    "build of the same shape found there is reused")  # fmt: skip
    ap.add_argument("--wide", help="RUNS,METRICS of the first-paint repository (0 skips it)")
    ap.add_argument("--tall", type=int, help="runs of the scrolling repository (0 skips it)")
    ap.add_argument("--base", help="a checkout of older mlvc (e.g. main) whose server is "
                    "measured too, alternating with this one, on the same repositories")  # fmt: skip
    args = ap.parse_args()
    os.environ.setdefault("MLVC_INDEX_SYNC", "inline")
    wide = (150, 150) if args.quick else (1500, 1500)
    if args.wide:
        wide = tuple(int(x) for x in args.wide.split(","))
    tall = 10_000 if args.quick else 100_000
    if args.tall is not None:
        tall = args.tall
    from playwright.sync_api import sync_playwright
    from uikit import launch_chromium

    codes = [("this", None)] + ([("base", str(Path(args.base).resolve()))] if args.base else [])
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-ui-", dir=os.environ.get("TMPDIR")))
    report = []
    load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with sync_playwright() as p:
        browser = launch_chromium(p)
        root = work / "wide"
        if wide[0]:
            report += wide_paint(browser, root, wide, args.reps, codes)
        root = work / "tall"
        if tall:
            report += tall_scroll(browser, root, tall, args.scrolls, codes)
        browser.close()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average {load0} before, {load} after; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    print("| code | measure | mlvc | baseline | ratio | n |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(report))


def serving(root: Path, code: str | None):
    """``mlvc server`` over ``root`` running this checkout's code, or the one at ``code``."""
    from uikit import start_ui_server

    old = os.environ.get("PYTHONPATH")
    if code:
        os.environ["PYTHONPATH"] = code  # the server's mlvc (and its static files) from there
    try:
        return start_ui_server(root)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def wide_paint(browser, root: Path, wide, reps: int, codes) -> list[str]:
    took = built(root, wide[0], 20, wide[1])
    print(f"built {wide[0]} x {wide[1]} in {took:.1f} s", file=sys.stderr)
    import urllib.parse

    last = [f"metrics.m{k:04d}" for k in range(wide[1])][-499:]
    chosen = "?" + urllib.parse.urlencode([("col", c) for c in ["name", *last]])
    out = []
    for (name, code), (cols, query) in [
        (c, q) for c in codes for q in (("default columns", ""), ("500 columns", chosen))
    ]:
        server = serving(root, code)
        try:
            fp = first_paint(browser, server, reps, query)
        finally:
            server.stop()
        med = {k: statistics.median(v) for k, v in fp.items() if isinstance(v, list)}
        print(f"{name}: first rows {med['table']:.0f} ms ({cols})", file=sys.stderr)
        out.append(
            f"| {name} | first rows visible, {wide[0]:,} runs x {wide[1]:,} metrics, {cols} | "
            f"{med['table']:.0f} ms | shell {med['shell']:.0f} ms · static HTML of the same "
            f"size ({fp['html_bytes'] / 1024:.0f} KiB) {med['static']:.0f} ms | "
            f"{med['table'] / med['shell']:.1f}x · {med['table'] / med['static']:.1f}x | "
            f"{reps} (all: {', '.join(f'{x:.0f}' for x in fp['table'])}) |"
        )
    return out


def tall_scroll(browser, root: Path, tall: int, reps: int, codes) -> list[str]:
    took = built(root, tall, 10, 10, batch=tall)
    print(f"built {tall} runs in {took:.1f} s", file=sys.stderr)
    runs = {name: [] for name, _ in codes}
    for _ in range(reps):  # the codes alternate, so both see the same moments of load
        for name, code in codes:
            server = serving(root, code)
            try:
                runs[name].append(scroll(browser, server))
            finally:
                server.stop()
            longest = max(runs[name][-1]["tasks"], default=0)
            print(f"{name}: scroll longest task {longest:.0f} ms", file=sys.stderr)
    out = []
    for name, got in runs.items():
        longest = [max(sc["tasks"], default=0) for sc in got]
        over = [sum(t > 100 for t in sc["tasks"]) for sc in got]
        out.append(
            f"| {name} | scroll {tall:,} runs top to bottom ({got[0]['count']}) | longest task "
            f"median {statistics.median(longest):.0f} ms (all: "
            f"{', '.join(f'{x:.0f}' for x in longest)}) | long tasks (>50 ms) per run: "
            f"{', '.join(str(len(sc['tasks'])) for sc in got)}; over 100 ms: "
            f"{', '.join(map(str, over))}; {got[0]['rows_in_dom']} rows in the DOM; nodes "
            f"added while scrolling: {', '.join(str(sc['added']) for sc in got)} | "
            f"{statistics.median(sc['seconds'] for sc in got):.1f} s for 400 jumps + 300 "
            f"frames | {reps} |"
        )
    return out


if __name__ == "__main__":
    main()
