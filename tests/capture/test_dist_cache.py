"""The environment capture's distribution cache (``DistCache``): whatever is installed,
removed or edited between captures, and however fast, a capture through the cache equals a
fresh scan; a damaged cache file is ignored, never trusted."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.capture import capture_env, env
from mlvc.capture.env import DistCache, _distributions
from mlvc.core.objects import Env
from mlvc.store.typed import read_object


@contextmanager
def on_path(*folders: Path):
    saved = sys.path[:]
    sys.path[:0] = [str(f) for f in folders]
    try:
        yield
    finally:
        sys.path[:] = saved


def install(site: Path, name: str, version: str, installer: str | None = "pip", url=None):
    meta = site / f"{name}-{version}.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
    if installer is not None:
        (meta / "INSTALLER").write_text(f"{installer}\n")
    if url is not None:
        direct = {"url": url, "dir_info": {"editable": True}}
        (meta / "direct_url.json").write_text(json.dumps(direct))
    return meta


def remove(site: Path, name: str) -> None:
    for meta in site.glob(f"{name}-*.dist-info"):
        for f in meta.iterdir():
            f.unlink()
        meta.rmdir()


def cached(path: Path, tmp: Path | None = None):
    return _distributions(DistCache(path, tmp))


NAMES = st.sampled_from(["alpha", "beta", "gamma"])
VERSIONS = st.sampled_from(["1.0", "1.1", "2.0", "10.0"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("install"), st.integers(0, 1), NAMES, VERSIONS),
        st.tuples(st.just("remove"), st.integers(0, 1), NAMES, VERSIONS),
        st.tuples(st.just("version"), st.integers(0, 1), NAMES, VERSIONS),  # edit in place
        st.tuples(st.just("installer"), st.integers(0, 1), NAMES, st.sampled_from(["uv", ""])),
        st.tuples(st.just("editable"), st.integers(0, 1), NAMES, st.just("file:///src/x")),
        st.tuples(st.just("sleep"), st.just(0), NAMES, VERSIONS),
    ),
    max_size=12,
)


def apply(sites: list[Path], op: tuple) -> None:
    kind, i, name, value = op
    site = sites[i]
    metas = sorted(site.glob(f"{name}-*.dist-info"))
    if kind == "install":
        remove(site, name)
        install(site, name, value)
    elif kind == "remove":
        remove(site, name)
    elif kind == "sleep":
        time.sleep(0.02)
    elif metas and kind == "version":  # same size for 1.0/1.1/2.0: only the stat can tell
        text = (metas[0] / "METADATA").read_text().split("Version: ")[0]
        with open(metas[0] / "METADATA", "r+") as f:  # rewritten in place, same inode
            f.write(f"{text}Version: {value}\n\n")
            f.truncate()
    elif metas and kind == "installer":
        if value:
            (metas[0] / "INSTALLER").write_text(value + "\n")
        else:
            (metas[0] / "INSTALLER").unlink(missing_ok=True)
    elif metas and kind == "editable":
        direct = {"url": value, "dir_info": {"editable": True}}
        (metas[0] / "direct_url.json").write_text(json.dumps(direct))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS, batches=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_a_cached_capture_equals_a_fresh_scan_whatever_changes_between(tmp_path, ops, batches):
    run = tmp_path / os.urandom(4).hex()
    sites = [run / "site1", run / "site2"]  # the first shadows the second, as for imports
    for s in sites:
        s.mkdir(parents=True)
    install(sites[1], "alpha", "0.5")
    cache = run / "cache" / "dists"
    with on_path(*sites):
        assert cached(cache, run / "tmp") == _distributions()
        done = 0
        for size in batches:
            for op in ops[done : done + size]:
                apply(sites, op)
            done += size
            assert cached(cache, run / "tmp") == _distributions()
        assert not any((run / "tmp").iterdir())  # no temp file left behind


def test_unchanged_distributions_are_not_read_again(tmp_path, monkeypatch):
    site = tmp_path / "site"
    for i in range(5):
        install(site, f"pkg{i}", "1.0", url="file:///src" if i == 0 else None)
    time.sleep(0.05)  # older than the cache's clock: not racy
    cache = tmp_path / "dists"
    reads = []
    real = env._read_dist
    monkeypatch.setattr(env, "_read_dist", lambda *a: reads.append(a[0]) or real(*a))
    with on_path(site):
        fresh = _distributions()
        first = len(reads)
        assert cached(cache) == fresh
        reads.clear()
        stamp = cache.stat()
        assert cached(cache) == fresh
        assert reads == []  # every entry trusted
        assert cache.stat().st_mtime_ns == stamp.st_mtime_ns  # and nothing rewritten
        # one edit is one read; its mtime put back does not hide it (ctime moves)
        meta = site / "pkg3-1.0.dist-info" / "METADATA"
        before = meta.stat()
        meta.write_text(meta.read_text().replace("1.0", "2.0"))
        os.utime(meta, ns=(before.st_atime_ns, before.st_mtime_ns))
        got = cached(cache)
        assert reads == [str(site / "pkg3-1.0.dist-info")]
        assert got == _distributions() and got[0]["pkg3"] == "2.0"
    assert first >= 5


def test_racy_entries_are_read_again_until_they_age(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install(site, "pkg", "1.0")
    time.sleep(0.05)
    cache = tmp_path / "dists"
    with on_path(site):
        cached(cache)
        doc = json.loads(cache.read_bytes())
        # as if the cache had been written in the same tick as pkg's METADATA
        key = str(site / "pkg-1.0.dist-info")
        doc["clock"] = doc["dists"][key][1][0][1]  # METADATA's mtime
        cache.write_text(json.dumps(doc))
        reads = []
        real = env._read_dist
        monkeypatch.setattr(env, "_read_dist", lambda *a: reads.append(a[0]) or real(*a))
        got = cached(cache)
        assert reads == [str(site / "pkg-1.0.dist-info")]  # the others are older
        assert got == _distributions()
        reads.clear()
        assert cached(cache) == got
        assert reads == []  # written again with a clock after it: aged, trusted


def test_a_damaged_cache_is_ignored_and_replaced(tmp_path):
    site = tmp_path / "site"
    install(site, "pkg", "1.0", url="git+https://user:secret@example.com/x.git")
    cache = tmp_path / "dists"
    with on_path(site):
        fresh = _distributions()
        assert "secret" not in fresh[1]["pkg"]["url"]
        cached(cache)
        good = json.loads(cache.read_bytes())
        key = next(iter(good["dists"]))
        lying = json.loads(json.dumps(good))
        lying["dists"][key][2] = ["pkg", 7, None, "x"]  # wrong types under matching stats
        bad = [
            b"",
            b"\xff\xfe garbage",
            b"[" * 100_000,
            b'{"version": 1}',
            b'{"version": 1, "clock": "x", "folders": {}, "dists": {}}',
            b'{"version": 1, "clock": 1, "folders": [], "dists": {}}',
            json.dumps({**good, "version": 99}).encode(),
            json.dumps({**good, "folders": {k: [1] for k in good["folders"]}}).encode(),
            json.dumps({**good, "dists": {key: [None, None, None]}}).encode(),
            json.dumps(lying).encode(),
            cache.read_bytes()[:-10],
        ]
        for data in bad:
            cache.write_bytes(data)
            assert cached(cache) == fresh, data[:60]
            assert json.loads(cache.read_bytes())["version"] == DistCache.VERSION


def test_an_unwritable_cache_still_captures(tmp_path):
    site = tmp_path / "site"
    install(site, "pkg", "1.0")
    (tmp_path / "file").write_text("not a folder")
    with on_path(site):
        assert cached(tmp_path / "file" / "dists", tmp_path / "file") == _distributions()


def test_a_commit_records_the_environment_a_fresh_capture_sees(project, tmp_path):
    site = tmp_path / "site"
    install(site, "fakepkg", "1.0")
    repo = Repo(project)
    with on_path(site):
        envs = []
        for step in range(3):
            if step == 1:
                install(site, "otherpkg", "3.1", installer="uv")
            if step == 2:
                remove(site, "fakepkg")
            run = repo.commit(message=f"step {step}")
            recorded = read_object(repo.store, repo.run(run).env, Env).facts
            expected = capture_env(project)
            assert recorded["packages"] == expected["packages"]
            assert recorded["installers"] == expected["installers"]
            assert recorded["package_sources"] == expected["package_sources"]
            envs.append(recorded["packages"])
    assert envs[0]["fakepkg"] == "1.0" and "otherpkg" not in envs[0]
    assert envs[1]["otherpkg"] == "3.1"
    assert "fakepkg" not in envs[2]
    assert (project / ".mlvc" / "cache" / "dists").is_file()
    assert not any((project / ".mlvc" / "tmp").iterdir())
