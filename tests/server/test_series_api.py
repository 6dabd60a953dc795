"""GET /api/v1/series on a real `mlvc server`: sampled columns, windows, refusals."""

from __future__ import annotations

import time
import uuid

import pytest


def logged(server, name: str, points: list[tuple[str, object, int]]) -> str:
    st, started, _ = server.call("POST", "/api/v1/runs/live", {"name": name})
    assert st == 200, started
    key, t0 = started["key"], 1_700_000_000 * 10**9
    for i in range(0, len(points), 20_000):
        batch = {
            "batch_id": uuid.uuid4().hex,
            "metrics": [[k, v, s, t0 + s * 10**6] for k, v, s in points[i : i + 20_000]],
        }
        st, got, _ = server.call("POST", f"/api/v1/runs/live/{key}/batches", batch)
        assert st == 200, got
    st, ended, _ = server.call("POST", f"/api/v1/runs/live/{key}/end", {})
    assert st == 200, ended
    return ended["run_id"]


@pytest.fixture(scope="module")
def two(server):
    long = [("loss", (i % 100) / 100, i) for i in range(50_000)] + [("loss", "nan", 50_000)]
    a = logged(server, "long", long)
    b = logged(server, "short", [("loss", 1.0 - s / 10, s) for s in range(10)])
    return a, b


def test_series_come_back_as_sampled_columns(server, two):
    a, b = two
    t = time.perf_counter()
    st, got, hdrs = server.call(
        "GET", "/api/v1/series", token="read",
        query=[("run", "long"), ("run", b[:12]), ("key", "loss"), ("limit", "2500")],
    )  # fmt: skip
    assert st == 200, got
    assert time.perf_counter() - t < 10
    assert got["keys"] == ["loss"] and got["x"] == "step"
    first, second = got["series"]
    assert (first["run"], second["run"]) == (a, b)
    assert first["total"] == 50_001 and first["sampled"] and len(first["step"]) <= 2500
    assert first["step"][0] == 0 and first["step"][-1] == 50_000
    assert first["value"][-1] == "nan"  # kept, not dropped
    assert 0.99 in first["value"] and 0.0 in first["value"]  # each bucket's max and min
    assert len(first["step"]) == len(first["time"]) == len(first["value"])
    assert not second["sampled"] and second["step"] == list(range(10))
    assert second["time"][1] == 1_700_000_000.001


def test_a_zoomed_window_is_full_resolution(server, two):
    q = [("run", "long"), ("key", "loss"), ("x_min", "1000"), ("x_max", "2999.5")]
    st, got, _ = server.call("GET", "/api/v1/series", token="read", query=q)
    (s,) = got["series"]
    assert st == 200 and not s["sampled"] and s["step"] == list(range(1000, 3000))
    assert got["window"] == [1000.0, 2999.5]
    st, got, _ = server.call(
        "GET", "/api/v1/series", token="read",
        query=[("run", "long"), ("key", "loss"), ("x_min", "49990")],
    )  # fmt: skip
    assert got["series"][0]["step"][0] == 49_990 and got["window"] == [49990.0, None]


def test_concurrent_reads_all_answer(server, two):
    """A page asks for every chart at once: the server's reads share one DuckDB
    connection (cursors), and none may fail for another."""
    from concurrent.futures import ThreadPoolExecutor

    def one(n: int):
        q = [("run", "long"), ("run", "short"), ("key", "loss"), ("x_min", str(n * 100))]
        st, got, _ = server.call("GET", "/api/v1/series", token="read", query=q)
        return st, got["series"][0]["step"][0] if st == 200 else got

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(36)))
    assert answers == [(200, n * 100) for n in range(36)]
    assert "Traceback" not in server.server_log()


def test_without_keys_it_lists_the_keys(server, two):
    st, got, _ = server.call("GET", "/api/v1/series", token="read", query={"run": "long"})
    assert st == 200 and got["keys"] == ["loss"] and got["series"] == []


@pytest.mark.parametrize(
    "query, status, words",
    [
        ({}, 400, "run: missing"),
        ({"run": "long", "x": "epoch"}, 400, "x: 'epoch' is not one of"),
        ({"run": "long", "limit": "2"}, 400, "limit: 2 is out of range"),
        ({"run": "long", "x_min": "abc"}, 400, "x_min: 'abc' is not a number"),
        ({"run": "long", "x_max": "nan"}, 400, "x_max: 'nan' is not a number"),
        ({"run": "no-such-run"}, 404, "no-such-run"),
        ({"run": "long", "key": ""}, 400, "key: empty"),
    ],
)
def test_bad_requests_get_one_line_naming_the_argument(server, two, query, status, words):
    st, got, _ = server.call("GET", "/api/v1/series", token="read", query=query)
    assert st == status, got
    assert words in got["message"] and "\n" not in got["message"]


def test_it_needs_a_token(server, two):
    st, _, _ = server.call("GET", "/api/v1/series", token=None, query={"run": "long"})
    assert st == 401
