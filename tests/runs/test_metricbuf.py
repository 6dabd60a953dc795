"""The metric buffer behind ``LiveRun.log_metric``: the C buffer (mlvc._metricbuf) and the
pure-Python one (MLVC_PURE=1) accept, refuse and record exactly the same points."""

from __future__ import annotations

import inspect
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlvc
from mlvc.core import speedups
from mlvc.errors import UsageError
from mlvc.runs.metricbuf import PyMetricBuffer, new_buffer

INT_MAX = 2**63 - 1
BIN = Path(sys.executable).parent


def test_the_extension_is_built_and_used():
    """setup.py builds it with optional=True, which hides a failed build: fail here instead."""
    assert speedups.extension("mlvc._metricbuf") is not None, "mlvc._metricbuf was not built"
    assert type(new_buffer()).__module__ == "mlvc._metricbuf"
    assert isinstance(new_buffer(pure=True), PyMetricBuffer)


@pytest.fixture(params=["c", "pure"])
def path(request, monkeypatch) -> str:
    """Each test that takes it runs on the C buffer and on the pure-Python one."""
    monkeypatch.setattr(speedups, "PURE", request.param == "pure")
    return request.param


def _rows(taken) -> list[tuple]:
    """take()'s columns as rows (key, step, ns, value), lists and bytes alike."""
    if taken is None:
        return []
    names, codes, steps, times, values = taken
    if isinstance(values, bytes):
        steps, times = (np.frombuffer(c, np.int64).tolist() for c in (steps, times))
        values = np.frombuffer(values, np.float64).tolist()
        if not isinstance(codes, int):
            codes = np.frombuffer(codes, np.int32).tolist()
    if isinstance(codes, int):
        codes = [codes] * len(values)
    return [(names[c], s, t, v) for c, s, t, v in zip(codes, steps, times, values, strict=True)]


def _outcome(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except (UsageError, TypeError, RuntimeError, ValueError) as e:
        return type(e).__name__, str(e)
    return None


# -- the same outcome for every call ---------------------------------------------------------

KEYS = [
    "loss",
    "Loss",
    "acc",
    "a/b.c-d_1",
    "",
    "1bad",
    "bad key",
    "x" * 300,
    "\udcff",
    "é",
    b"loss",
    1.5,
]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [True, False, None, "3.5", "nan", "high", b"1", 10**400, np.float32(0.5), np.int64(7)]
    ),
)
STEPS = st.one_of(
    st.none(),
    st.sampled_from([INT_MAX - 1, INT_MAX, -(2**63), True, 1.0, 2.5, "3", np.int64(4)]),
    st.integers(min_value=-(2**64), max_value=2**64),
)
STAMPS = st.one_of(
    st.none(),
    st.floats(min_value=-1e10, max_value=1e10),
    st.sampled_from([10**10, -(10**10), 9223372036, 9223372037, 5e-7, 1.5e-6, "1.5", 9.2e9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**40), max_value=2**40),
)
KEY = st.one_of(st.sampled_from(["loss", "acc"]), st.sampled_from(KEYS))  # mostly known keys
CALL = st.one_of(
    st.tuples(st.just("metric"), KEY, VALUES, STEPS, STAMPS),
    st.tuples(
        st.just("metrics"),
        st.dictionaries(KEY, VALUES, max_size=3),
        STEPS,
        STAMPS,
    ),
    st.tuples(st.just("take")),
)


@settings(max_examples=300)
@given(st.lists(CALL, min_size=5, max_size=60))
def test_both_buffers_accept_refuse_and_record_the_same(calls):
    """The invariant: one sequence of calls gives the same errors (type and message) and the
    same points (times compared to the millisecond where a call left them to the clock)."""
    bufs = [new_buffer(), new_buffer(pure=True)]
    assert type(bufs[0]) is not type(bufs[1])
    rows: list[list] = [[], []]
    clock = []  # which rows took the clock's time
    for call in calls:
        if call[0] == "take":
            for i, b in enumerate(bufs):
                rows[i] += _rows(b.take())
            continue
        held = len(bufs[0])
        if call[0] == "metric":
            _, key, value, step, stamp = call
            got = [_outcome(b.log_metric, key, value, step=step, timestamp=stamp) for b in bufs]
        else:
            _, metrics, step, stamp = call
            got = [_outcome(b.log_metrics, metrics, step, stamp) for b in bufs]
        assert got[0] == got[1], call
        assert len(bufs[0]) == len(bufs[1])
        clock += [stamp is None] * (len(bufs[0]) - held)
    for i, b in enumerate(bufs):
        rows[i] += _rows(b.take())
        assert b.take() is None and len(b) == 0
    assert bufs[0].names == bufs[1].names
    assert len(rows[0]) == len(rows[1])
    for a, p, now in zip(rows[0], rows[1], clock, strict=False):
        assert a[:2] == p[:2]
        assert a[3] == p[3] or (math.isnan(a[3]) and math.isnan(p[3]))
        assert abs(a[2] - p[2]) < 10**9 if now else a[2] == p[2]


def test_timestamps_round_half_to_even_to_the_microsecond_on_both_paths():
    for stamp, ns in [
        (5e-7, 0),
        (1.5e-6, 2000),
        (2.5e-6, 2000),
        (1764547200.123, 1764547200123000000),
    ]:
        for b in (new_buffer(), new_buffer(pure=True)):
            b.log_metric("t", 1.0, timestamp=stamp)
            assert _rows(b.take())[0][2] == ns, (type(b), stamp)


def test_wrong_arguments_raise_type_error_on_both_paths(path):
    b = new_buffer(pure=path == "pure")
    for args, kwargs in [
        ((), {}),
        (("loss",), {}),
        (("loss", 1.0, 1, 2.0, 5), {}),
        (("loss", 1.0), {"stepp": 1}),
        (("loss", 1.0), {"key": "x"}),
        (("loss",), {"value": 1.0, "step": 1, "timestamp": 1.0, "x": 2}),
        (([1], 1.0), {}),  # an unhashable key
    ]:
        with pytest.raises(TypeError):
            b.log_metric(*args, **kwargs)
    b.log_metric(key="k", value=2.0, step=3, timestamp=4)  # every argument by name
    with pytest.raises(TypeError):
        b.log_metrics()
    with pytest.raises(TypeError):
        b.log_metrics({"a": 1.0}, 1, 2, 3)
    with pytest.raises(AttributeError):
        b.log_metrics([("a", 1.0)])  # no .items()
    b.log_metrics(metrics={"m": 1.0}, step=7)
    assert [r[:2] for r in _rows(b.take())] == [("k", 3), ("m", 7)]


def test_both_paths_show_log_metric_s_signature(path):
    b = new_buffer(pure=path == "pure")
    for fn, names in (
        (b.log_metric, "key value step timestamp"),
        (b.log_metrics, "metrics step timestamp"),
    ):
        sig = inspect.signature(fn)
        assert list(sig.parameters) == names.split()
        assert [p.default for p in sig.parameters.values()][-2:] == [None, None]


def test_log_metrics_takes_any_mapping_and_keeps_points_before_a_refused_one(path):
    b = new_buffer(pure=path == "pure")

    class Items:
        def items(self):
            return iter([("a", 1.0), ("b", "bad"), ("c", 3.0)])

    with pytest.raises(UsageError, match="'b'"):
        b.log_metrics(Items())
    assert [r[0] for r in _rows(b.take())] == ["a"]
    d = {"x": 1.0, "y": 2.0}

    class Grow(float):  # a value whose conversion adds a key to the dict being logged
        def __float__(self):
            d["z"] = 0.0
            return 1.0

    d["w"] = Grow()
    with pytest.raises(RuntimeError, match="changed size"):
        b.log_metrics(d)


def test_a_default_step_past_the_64_bit_range_is_refused(path):
    b = new_buffer(pure=path == "pure")
    b.log_metric("s", 1.0, step=INT_MAX - 1)
    with pytest.raises(UsageError, match="not a 64-bit integer"):
        b.log_metric("s", 2.0)
    with pytest.raises(UsageError, match="not a 64-bit integer"):
        b.log_metric("s", 2.0, step=INT_MAX)
    assert [r[1] for r in _rows(b.take())] == [INT_MAX - 1]


# -- through a live run ----------------------------------------------------------------------


def _series(repo, run_id: str) -> list[tuple]:
    sql = f"SELECT key, step, timestamp, value FROM metrics WHERE run_id = '{run_id}' ORDER BY key, step"
    return [tuple(r.values()) for r in repo.query(sql).to_pylist()]


def test_a_run_records_the_same_series_on_both_paths(repo, monkeypatch):
    """The same calls through mlvc.start_run, once per path: equal series in the index."""
    got = {}
    for pure in (False, True):
        monkeypatch.setattr(speedups, "PURE", pure)
        with mlvc.start_run(name=f"pure-{pure}", repo=repo) as run:
            assert (type(run.log_metric).__name__ == "method") is pure
            for i in range(3000):
                run.log_metric("loss", 1 / (i + 1), timestamp=1.7e9 + i / 1000)
                if i % 3 == 0:
                    run.log_metrics({"acc": i, "lr": np.float32(0.5)}, step=i, timestamp=1.7e9)
                if i % 1000 == 999:
                    run.flush()
            with pytest.raises(UsageError, match="differs only in case"):
                run.log_metric("LOSS", 1.0)
            run.log_metric("nan", float("nan"), timestamp=1.7e9)
        got[pure] = _series(repo, run.id)
    assert len(got[False]) == 3000 + 2 * 1000 + 1
    assert got[False][:-1] == got[True][:-1] and math.isnan(got[True][-1][3])
    assert [r[1] for r in got[False] if r[0] == "loss"] == list(range(3000))


def test_mlvc_pure_in_the_environment_forces_the_python_path(project):
    code = "import mlvc; r = mlvc.start_run(name='p'); print(type(r.log_metric).__name__); r.end()"
    for env, want in (({"MLVC_PURE": "1"}, "method"), ({}, "builtin_function_or_method")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == want


def test_two_threads_logging_while_the_flusher_takes_keep_whole_points(repo, path):
    """Every point lands whole: the value encodes its key and step, and no step is lost."""
    n = 60_000
    with mlvc.start_run(name="threads", repo=repo) as run:

        def log(key: str, sign: float) -> None:
            for i in range(n):
                run.log_metric(key, sign * i, step=i)
                run.log_metric("shared", sign * i)  # default steps from both threads

        threads = [threading.Thread(target=log, args=(k, s)) for k, s in (("a", 1.0), ("b", -1.0))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            run.flush_due()
            time.sleep(0.005)
        for t in threads:
            t.join()
    rows = _series(repo, run.id)
    for key, sign in (("a", 1.0), ("b", -1.0)):
        mine = [(r[1], r[3]) for r in rows if r[0] == key]
        assert mine == [(i, sign * i) for i in range(n)]
    shared = [r[1] for r in rows if r[0] == "shared"]
    if path == "c":  # the C buffer counts each default step once, whatever the threads do
        assert shared == list(range(2 * n))
    else:  # Python's counter may give two threads one step (the index keeps one point)
        assert len(shared) >= n


LEAK_PROBE = textwrap.dedent(
    """
    import os, sys
    from mlvc.errors import UsageError
    from mlvc.runs.metricbuf import new_buffer

    b = new_buffer(pure=sys.argv[1] == "pure")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def burst(points):
        for i in range(points):
            b.log_metric("loss", i * 0.5, step=i)
            if i % 10 == 0:
                b.log_metrics({"a": i, "b": 0.5}, i, 1.7e9)
            if i % 50_000 == 0:
                b.take()
        for i in range(points // 10):
            try:
                b.log_metric("loss", "x" + str(i))
            except UsageError:
                pass
        b.take()

    burst(200_000)
    before = rss()
    burst(1_000_000)
    print(rss() - before)
    """
)


def test_a_million_calls_leak_nothing(path):
    """RSS is flat over 1M points taken every 50,000, and over 100k refused calls.

    Measured in a fresh process: inside a test worker that has run hundreds of tests, the
    allocator's fragmentation of a ~900 MB heap moved RSS by 5 MB with no leak at all. Here a
    leak of one small object a call would grow it by more than 30 MB."""
    out = subprocess.run(
        [sys.executable, "-c", LEAK_PROBE, path], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 4 * 2**20


# -- kill -9 --------------------------------------------------------------------------------

TRAINER = textwrap.dedent(
    """
    import sys, time, mlvc
    run = mlvc.start_run(name="killed")
    print("started", run.key, type(run.log_metric).__name__, flush=True)
    i = 0
    while True:
        run.log_metric("loss", i * 0.5)
        i += 1
        if i % 1000 == 0:
            time.sleep(0.001)
    """
)


def test_kill_9_mid_run_keeps_every_flushed_point(project, path):
    """A trainer killed mid-loop: what was flushed when it died is recorded, as a prefix of
    what it logged, and nothing else (the C buffer loses what the Python one loses)."""
    from mlvc.core.layout import Layout
    from mlvc.runs.staging import StagedRun

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLVC_PURE", None)
    if path == "pure":
        env["MLVC_PURE"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        words = proc.stdout.readline().split()
        assert words[0] == "started", words
        assert (words[2] == "method") is (path == "pure")
        live = Layout.of(project).live / words[1]
        deadline = time.time() + 60
        while time.time() < deadline and not any((live / "series").glob("*.arrow")):
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGSTOP)
        tasks = Path(f"/proc/{proc.pid}/task")
        while any(t.read_text().rsplit(")", 1)[1].split()[0] != "T" for t in tasks.glob("*/stat")):
            time.sleep(0.01)  # kill() returns before a thread running elsewhere has stopped
        on_disk = StagedRun(live).read_series().num_rows
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert on_disk > 0
    out = subprocess.run([str(BIN / "mlvc"), "runs"], env=env, capture_output=True, text=True)
    assert "Traceback" not in out.stderr, out.stderr
    repo = mlvc.Repo(project)
    (row,) = repo.query("SELECT id, status FROM runs WHERE name = 'killed'").to_pylist()
    assert row["status"] == "killed"
    steps = [r[1] for r in _series(repo, row["id"])]
    assert steps == list(range(on_disk))
