"""The runs table in a real browser: paging, sort, filter (errors inline), columns,
grouping, selection for compare, deep links; and the library call behind it."""

from __future__ import annotations

import pytest
from uikit import login, make_runs, shot, start_ui_server


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """450 runs (more than two pages of 200) over two experiments' worth of params."""
    root = tmp_path_factory.mktemp("many") / "proj"
    runs = [dict(message=f"run {i}", name=f"r{i:03d}", params={"lr": i / 1000, "opt": "sgd" if i % 2 else "adam"},
                 metrics={"acc": (i % 97) / 100, "loss": 1 - i / 1000}, tags={"team": f"t{i % 3}"},
                 capture_code=False) for i in range(450)]  # fmt: skip
    make_runs(root, runs)
    server = start_ui_server(root)
    yield server
    server.check()


# rows on screen, top to bottom: the grid pools its row nodes, so DOM order is not screen
# order; aria-rowindex is (the header is row 1)
IN_ORDER = (
    "[...document.querySelectorAll('.vt-row')].sort((a, b) => a.ariaRowIndex - b.ariaRowIndex)"
)


def rows(page) -> list[str]:
    return page.evaluate(f"() => {IN_ORDER}.map(r => r.textContent)")


def test_the_table_pages_sorts_and_filters_450_runs(many, page):
    login(page, many, "read")
    page.wait_for_selector(".vt-row")
    assert page.text_content("#run-count") == "450 runs"
    # only the rows in view exist
    assert 10 < page.locator(".vt-row").count() < 60
    # scroll to the bottom: the last page is fetched and shown
    page.eval_on_selector(".vt", "b => b.scrollTop = b.scrollHeight")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.vt-row')].some(r => r.textContent.includes('r000'))"
    )
    # sort by metrics.acc descending: the URL says so and the first row has the highest
    page.click(".vt-head [data-key='metrics.acc']")
    page.click(".vt-head [data-key='metrics.acc']")
    page.wait_for_url("**sort=-metrics.acc**")
    page.wait_for_function(f"() => ({IN_ORDER})[0]?.textContent.includes('0.96')")
    # a filter narrows it; a bad one shows DuckDB's error inline and no traceback
    page.fill("input[name=where]", '"params.lr" < 0.01 AND "params.opt" = \'sgd\'')
    page.press("input[name=where]", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#run-count').textContent.startsWith('5 runs')"
    )
    assert "where=" in page.url
    page.fill("input[name=where]", "no_such_column > 1")
    page.press("input[name=where]", "Enter")
    page.wait_for_selector("#filter-error:has-text('no_such_column')")
    page.fill("input[name=where]", "1=1; DROP TABLE runs")
    page.press("input[name=where]", "Enter")
    page.wait_for_selector("#filter-error:has-text('syntax error')")
    assert page.errors == []


def test_after_long_scrolls_the_rows_on_screen_are_the_right_ones(many, page):
    """Pooled rows: after jumps back and forth (pages fetched as they come into view) the
    rows on screen are consecutive, in order, once each, and no node was made per jump.
    No chart loads on its own in the table: no series asked for, no chart library."""
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    login(page, many, "read")
    page.wait_for_selector(".vt-row")
    made = page.evaluate("document.querySelector('.vt-body').childElementCount")
    page.evaluate("""async () => {
        const box = document.querySelector('.vt');
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        for (const row of [449, 3, 250, 120, 400, 17, 300]) {
            box.scrollTop = row * 28; await frame(); await frame();
        }
    }""")
    # row 300 (newest first: run r149) is at the top once its page has come
    page.wait_for_function(f"() => ({IN_ORDER})[1]?.textContent.includes('r149')")
    shown = rows(page)
    names = [int(t.split("r", 1)[1][:3]) for t in shown if "…" not in t]
    assert len(names) == len(shown) > 20 and len(set(names)) == len(names)
    assert names == list(range(names[0], names[0] - len(names), -1))  # consecutive, in order
    assert names[0] == 150  # one row above the top one is drawn too
    order = page.evaluate(f"() => {IN_ORDER}.map(r => r.ariaRowIndex)")
    assert [int(i) for i in order] == list(range(int(order[0]), int(order[0]) + len(order)))
    # the pool did not grow with the jumps: nodes are reused, never made per scroll
    assert page.evaluate("document.querySelector('.vt-body').childElementCount") <= made + 2
    # over rows already fetched, a jump makes no node at all: the pooled rows' links and
    # checkboxes are updated in place, not made again (less style and layout per frame)
    added = page.evaluate("""async () => {
        const box = document.querySelector('.vt');
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        let added = 0;
        const obs = new MutationObserver((list) => {
            for (const m of list) for (const n of m.addedNodes) if (n.nodeType === 1) added += 1;
        });
        obs.observe(box, { childList: true, subtree: true });
        for (const row of [300, 17, 250, 120, 310, 290]) {
            box.scrollTop = row * 28; await frame(); await frame();
        }
        obs.disconnect();
        return added;
    }""")
    assert added == 0
    # back at the top, the newest run is first again
    page.eval_on_selector(".vt", "b => b.scrollTop = 0")
    page.wait_for_function(f"() => ({IN_ORDER})[0]?.textContent.includes('r449')")
    assert any("/api/v1/ui/table" in u for u in asked)
    assert not [u for u in asked if "/api/v1/series" in u or "uPlot" in u or "charts.js" in u]
    assert page.errors == []


def test_deep_links_columns_grouping_and_compare(many, page):
    url = '/?where="params.lr"+<+0.004&sort=name&col=name&col=tags.team&col=metrics.loss&group=experiment'
    login(page, many, "read", url)
    page.wait_for_selector(".vt-row")
    headers = page.eval_on_selector_all(".vt-head .vt-cell", "cs => cs.map(c => c.textContent)")
    assert headers == ["", "name", "tags.team", "metrics.loss"]
    assert page.text_content(".vt-group").startswith("experiment 0 · Default · 4 runs")
    assert [r.split("t")[0] for r in rows(page)] == ["r000", "r001", "r002", "r003"]
    # the column chooser finds a column by typing and adds it
    page.click("text=Columns")
    page.fill("[aria-label='find a column']", "params.o")
    page.check(".chooser-panel input[value='params.opt']")
    page.wait_for_url("**col=params.opt**")
    page.wait_for_selector(".vt-head [data-key='params.opt']")
    # select two runs: Compare links to /compare with their ids
    boxes = page.locator(".vt-row input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    link = page.locator("#compare-link a")
    assert link.text_content() == "Compare 2 runs"
    href = link.get_attribute("href")
    assert href.startswith("/compare?runs=") and len(href.split("=")[1].split(",")) == 2
    shot(page, "runs-table")
    assert page.errors == []


def test_table_page_through_the_library(many):
    from mlvc import Repo

    repo = Repo(many.root)
    got = repo.table_page(
        where="\"tags.team\" = 't1'", order=["-params.lr"], columns=["name", "tags.team"], limit=3
    )
    assert got["total"] == 150 and [r[0] for r in got["rows"]] == ["r448", "r445", "r442"]
    assert all(r[1] == "t1" for r in got["rows"])
    from mlvc.errors import QueryError, UsageError

    with pytest.raises(UsageError, match="unknown column 'nope'"):
        repo.table_page(columns=["nope"])
    with pytest.raises(UsageError, match="unknown column"):
        repo.table_page(order=['-"; DROP TABLE runs; --'])
    with pytest.raises(QueryError, match="refused"):
        repo.table_page(where="1=1) UNION ALL (SELECT 1); CREATE TABLE x(a INT); SELECT (1")
    # a trailing comment cannot swallow the LIMIT
    assert len(repo.table_page(where="true -- the rest", limit=7)["rows"]) == 7


def test_many_chosen_columns_come_in_smaller_pages_counted_once(tmp_path, page):
    """With 211 columns chosen a page holds fewer rows (the first shows sooner), only the
    first page asks the server to count the runs, and every row is right wherever its page
    came from: the cells of the last column of the last page included."""
    runs = [dict(message=f"run {i}", name=f"w{i:03d}", capture_code=False,
                 metrics={f"m{k:03d}": i * 1000 + k for k in range(210)}) for i in range(100)]  # fmt: skip
    make_runs(tmp_path / "proj", runs)
    server = start_ui_server(tmp_path / "proj")
    try:
        asked = []
        page.on("request", lambda r: asked.append(r.url) if "/api/v1/ui/table" in r.url else None)
        cols = "&".join(["col=name", *(f"col=metrics.m{k:03d}" for k in range(210))])
        login(page, server, "read", "/?" + cols)
        page.wait_for_selector(".vt-row a[href]")
        assert page.text_content("#run-count") == "100 runs"
        page.eval_on_selector(".vt", "b => b.scrollTop = b.scrollHeight")
        page.wait_for_function(f"() => ({IN_ORDER}).some(r => r.textContent.includes('w000'))")
        page.eval_on_selector(".vt", "b => b.scrollLeft = b.scrollWidth")  # the last column
        # run w001 is the 99th row (newest first; the header is row 1): its m209 is 1209
        page.wait_for_function(
            "() => document.querySelector('.vt-row[aria-rowindex=\"100\"]')"
            "?.lastElementChild?.textContent === '1209'"
        )
        pages = [u for u in asked if "limit=0" not in u]
        assert all("limit=94" in u for u in pages), pages  # 20,000 cells / 211 columns
        assert "count=false" not in pages[0] and all("count=false" in u for u in pages[1:])
        assert len(pages) >= 2 and page.errors == []
    finally:
        server.stop()
    server.check()


def test_a_column_added_with_the_chooser_is_scrolled_into_view(many, page):
    """A column ticked in the chooser goes last; on a narrow window it was past the right
    edge (its header not even drawn), so ticking it seemed to do nothing."""
    page.set_viewport_size({"width": 800, "height": 600})
    login(page, many, "read")
    page.wait_for_selector(".vt-row a[href]")
    page.click("text=Columns")
    page.fill("[aria-label='find a column']", "team")
    page.check(".chooser-panel input[value='tags.team']")
    page.wait_for_url("**col=tags.team**")
    header = page.locator(".vt-head [data-key='tags.team']")
    header.wait_for()
    box, vt = header.bounding_box(), page.locator(".vt").bounding_box()
    assert vt["x"] <= box["x"] and box["x"] + box["width"] <= vt["x"] + vt["width"] + 1
    page.wait_for_function(f"() => ({IN_ORDER})[0]?.lastElementChild.textContent === 't2'")  # r449
    assert page.errors == []


def test_groups_are_labelled_with_their_experiments_names_at_once(tmp_path, page):
    """Grouped by experiment, each group shows its experiment's name (escaped) on the first
    paint: the names used to arrive only once the column chooser had been opened, so an
    imported MLflow experiment read "experiment 1 · 3 runs"."""
    import os

    import mlvc
    from mlvc import Repo

    root = tmp_path / "proj"
    make_runs(root, [dict(message="default run", name="d0", capture_code=False)])
    here = os.getcwd()
    os.chdir(root)
    try:
        repo = Repo(root)
        assert mlvc.set_experiment("vision <b>v2</b>", repo=repo)["experiment_id"] == "1"
        for i in range(3):
            with mlvc.start_run(name=f"v{i}", repo=repo):
                mlvc.log_metric("acc", i / 10)
    finally:
        os.chdir(here)
    server = start_ui_server(root)
    try:
        login(page, server, "read", "/?group=experiment")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.vt-group')].some("
            "g => g.textContent === 'experiment 1 · vision <b>v2</b> · 3 runs')"
        )
        assert page.locator(".vt-group b").count() == 0  # the name is text, not markup
        assert page.locator(".chooser-panel").count() == 0  # without opening the chooser
    finally:
        server.stop()
    server.check()
