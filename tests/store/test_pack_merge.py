"""Small packs merged in the background (mlvc.store.pack.merge): every object stays readable
and the same, by this process and by one that looked before; a damaged record is never
copied; a merger killed at any step leaves a store fsck finds whole; gc's grace period is
kept; and commits start a merger by themselves once 50 small packs (MLVC_GC_AUTO) pile up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.store.pack.merge import (
    AUTO_SMALL,
    maybe_start,
    merge_small,
    mergeable,
    no_merge,
    take_lock,
)
from mlvc.store.pack.store import PackedStore

BIN = Path(sys.executable).parent


def _commits(repo: Repo, root: Path, n: int, start: int = 0) -> list:
    """``n`` commits, each with a data file of its own: a pack each, as everyday use makes."""
    ids = []
    for i in range(start, start + n):
        (root / "data" / f"part{i}.txt").write_text(f"sample {i}\n" * (i + 1))
        ids.append(repo.commit(message=f"c{i}", params={"i": i}, capture_env=False))
    return ids


def _packs(root: Path) -> list[Path]:
    return sorted((root / ".mlvc" / "objects" / "pack").glob("*.pack"))


def _contents(store) -> dict[bytes, bytes]:
    return {bytes(oid): store.read_bytes(oid) for oid in store.ids()}


def _merge(root: Path, **env: str) -> subprocess.CompletedProcess:
    """A merger in a process of its own, as a commit starts one (``main``)."""
    code = (
        "import os, sys; from mlvc.store.pack.merge import main, take_lock; from pathlib import Path;"
        f"fd = take_lock(Path({str(root)!r}) / '.mlvc/objects/pack', wait=True);"
        f"sys.exit(main({str(root)!r}, fd))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, timeout=300
    )


def test_a_merge_keeps_every_object_and_leaves_few_packs(repo, project):
    _commits(repo, project, 30)
    before = _contents(repo.store)
    assert len(_packs(project)) >= 30
    report = merge_small(repo.store, project / ".mlvc")
    assert report.merged >= 30 and report.objects >= len(before) and not report.left
    assert len(_packs(project)) == 1  # all were small: one new pack
    fresh = Repo(project)
    assert _contents(fresh.store) == before
    assert fresh.fsck() == []
    assert len(fresh.log()) == 30


def test_a_reader_that_looked_before_the_merge_reads_on(repo, project):
    """A store that loaded the indexes (and opened packs) before another process merged
    them away finds every object where it is now."""
    _commits(repo, project, 12)
    reader = PackedStore(project / ".mlvc" / "objects")
    ids = list(reader.ids())
    half = {bytes(o): reader.read_bytes(o) for o in ids[: len(ids) // 2]}  # packs held open
    old = set(_packs(project))
    r = _merge(project)
    assert r.returncode == 0, r.stderr
    assert not old & set(_packs(project))  # every pack it had looked at is gone
    for oid in ids:
        data = reader.read_bytes(oid)
        assert half.get(bytes(oid), data) == data


@pytest.mark.damages_repo
def test_a_damaged_record_is_never_copied(repo, project):
    """The pack with a record that does not hash to its id stays where it is, for fsck to
    name; the others are merged."""
    _commits(repo, project, 8)
    store = repo.store
    victim = next(o for o in store.ids() if store.read_bytes(o).startswith(b"sample 3\n"))
    path, off, n = store.location(victim)
    with open(path, "r+b") as f:
        f.seek(off + n - 2)
        f.write(b"X")
    count = len(_packs(project))
    report = merge_small(store, project / ".mlvc")
    assert report.merged == count - 1  # all but the damaged one
    assert len(_packs(project)) == 2 and path.exists()
    assert len(report.left) == 1 and victim.hex in report.left[0]
    problems = Repo(project).fsck()
    assert any(victim.hex in p for p in problems)


@pytest.mark.damages_repo
def test_packs_a_merge_left_start_no_merger_again(repo, project):
    """Small packs a merge had to leave (damaged) are not counted towards starting the next
    merger: one started for them leaves them again, and every commit started one (until
    fsck's repair). Packs a merge can take are counted again."""
    _commits(repo, project, 4)
    store = repo.store
    samples = {f"sample {i}\n".encode() for i in (0, 1, 2)}
    victims = [o for o in store.ids() if store.read_bytes(o)[:9] in samples]
    assert len(victims) == 3
    for victim in victims:  # a damaged record in each of three packs
        path, off, n = store.location(victim)
        with open(path, "r+b") as f:
            f.seek(off + n - 2)
            f.write(b"X")
    report = merge_small(store, project / ".mlvc")
    assert len(report.kept) == 3 and len(report.left) == 3
    fresh = Repo(project).store
    fresh.indexes()  # loaded, as a commit's store has them
    assert mergeable(fresh) == len(_packs(project)) - 3  # the merged pack (or the one left)
    assert not maybe_start(fresh, project, at_least=3)  # was started: 4 small packs
    _commits(Repo(project), project, 2, start=4)
    fresh = Repo(project).store
    fresh.indexes()
    assert mergeable(fresh) >= 3
    assert maybe_start(fresh, project, at_least=3)
    with no_merge(project / ".mlvc" / "objects" / "pack"):  # the merger is done
        assert len(_packs(project)) == 4  # the three left, and one of the rest
    assert len((project / ".mlvc" / "objects" / "pack" / "merge-left").read_text().split()) == 3


@pytest.mark.parametrize("point", ["merge-copied", "merge-indexed"])
def test_a_merger_killed_at_any_step_loses_nothing(repo, project, point):
    _commits(repo, project, 10)
    before = _contents(repo.store)
    r = _merge(project, MLVC_FAULT=point)
    assert r.returncode == -9
    fresh = Repo(project)
    assert _contents(fresh.store) == before  # copies at worst, never less
    notes: list = []
    assert fresh.fsck(notes=notes) == []
    assert _merge(project).returncode == 0  # the next merge finishes the job
    after = Repo(project)
    after.gc()  # removes the empty pack a merger killed before its first write leaves
    assert _contents(after.store) == before and len(_packs(project)) == 1
    assert after.fsck() == []


def test_garbage_of_old_packs_is_collected_after_a_merge(repo, project):
    """The new pack takes the merged packs' newest mtime: gc's grace period, counted from
    a pack's mtime, does not start again for the objects a merge moved (an hour old
    garbage merged a second ago was kept for another hour)."""
    from mlvc.store.locks import writing

    _commits(repo, project, 6)
    with writing(project / ".mlvc", repo.store):
        junk = repo.store.add_bytes(os.urandom(1 << 20))  # most of the merged pack
    old = time.time() - 7200
    for p in _packs(project):
        os.utime(p, (old, old))
    r = _merge(project)
    assert r.returncode == 0, r.stderr
    (merged,) = _packs(project)
    assert abs(merged.stat().st_mtime - old) < 2
    fresh = Repo(project)
    assert fresh.store.has(junk)
    report = fresh.gc()
    assert report.removed == 1 and not Repo(project).store.has(junk)


def test_commits_start_a_merger_by_themselves(repo, project, monkeypatch):
    monkeypatch.setenv("MLVC_GC_AUTO", "20")
    repo = Repo(project)  # settings are read when a repository is opened
    _commits(repo, project, 25)
    deadline = time.monotonic() + 60
    while len(_packs(project)) > 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    with no_merge(project / ".mlvc" / "objects" / "pack"):  # the merger is done
        assert len(_packs(project)) <= 10
    assert len(Repo(project).log()) == 25
    log = project / ".mlvc" / "logs" / "pack-merge.log"
    assert not log.exists(), log.read_text()


def test_no_merger_below_the_threshold_or_when_turned_off(repo, project, monkeypatch):
    monkeypatch.setenv("MLVC_GC_AUTO", "0")
    _commits(Repo(project), project, 25)
    time.sleep(0.5)
    assert len(_packs(project)) >= 25
    monkeypatch.setenv("MLVC_GC_AUTO", "100")
    _commits(Repo(project), project, 2, start=25)
    time.sleep(0.5)
    assert len(_packs(project)) >= 27


def test_fsck_waits_for_a_merge_and_a_merge_skips_while_fsck_runs(repo, project):
    """fsck looks at packs only while no merger runs (one in another process is waited
    for: a pack it removed midway would be reported missing); a merger does not start
    while fsck holds the lock."""
    import threading

    _commits(repo, project, 3)
    folder = project / ".mlvc" / "objects" / "pack"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, os; from pathlib import Path;"
         "from mlvc.store.pack.merge import take_lock;"
         f"fd = take_lock(Path({str(folder)!r}), wait=True); print('held', flush=True);"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert take_lock(folder, wait=False) is None  # a merger would not start
    found: list = []
    checker = threading.Thread(target=lambda: found.append(Repo(project).fsck()))
    checker.start()
    checker.join(1.5)
    assert checker.is_alive() and not found  # waiting for the merger
    holder.communicate("", timeout=30)
    checker.join(120)
    assert found == [[]]
    with no_merge(folder):
        assert take_lock(folder, wait=False) is None


def test_small_packs_only(repo, project):
    """A pack of AUTO_SMALL or more is left as it is."""
    (project / "data" / "big.bin").write_bytes(os.urandom(AUTO_SMALL + 4096))
    repo.commit(message="big", capture_env=False)
    _commits(repo, project, 3)
    big = max(_packs(project), key=lambda p: p.stat().st_size)
    merge_small(repo.store, project / ".mlvc")
    assert big in _packs(project) and len(_packs(project)) == 2


READER = """
import sys, time
from pathlib import Path
from mlvc import Repo
root, stop = Path(sys.argv[1]), Path(sys.argv[2])
repo, reads = Repo(root), 0
while not stop.exists():
    for run in repo.log():
        for chunk in repo.cat(f"{run['id']}:data/train.csv"):
            assert chunk.startswith(b"x,y"), chunk
        reads += 1
    assert {bytes(o) for o in repo.store.ids()}  # every id listed reads
print(reads)
"""


def test_commits_and_a_reader_while_mergers_run(repo, project, monkeypatch, tmp_path):
    """Two processes at once: commits (a merger started every 4th, their consolidations of
    indexes meeting the mergers' rewrites) and a long-lived reader of every run; nothing
    fails, every object stays readable and fsck finds the store whole."""
    monkeypatch.setenv("MLVC_GC_AUTO", "4")
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(project), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ids = _commits(Repo(project), project, 40)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert int(out) > 0
    with no_merge(project / ".mlvc" / "objects" / "pack"):
        fresh = Repo(project)
        assert [r["id"] for r in fresh.log()][:1] == [ids[-1].hex]
        for i, rid in enumerate(ids):
            text = b"".join(fresh.cat(f"{rid.hex}:data/part{i}.txt")).decode()
            assert text == f"sample {i}\n" * (i + 1)
        assert len(_packs(project)) < 20
    assert fresh.fsck() == []  # (fsck takes merge.lock itself)
    log = project / ".mlvc" / "logs" / "pack-merge.log"
    assert not log.exists(), log.read_text()  # no merger failed


def test_a_read_during_a_merge_finds_what_the_merge_moved(repo, project, monkeypatch):
    """A reader whose view predates a commit looks again (a forced look) and lists the pack
    folder just before a merger in another process moves that commit's pack: it had opened
    the old index, whose pack was gone by the time it asked, and did not list the merged
    index. It said "missing from the store" (CI: an index ingest then dropped a committed
    run, and the web UI's table of 450 runs showed 449). It looks again."""
    from mlvc.store.pack import store as store_module

    _commits(repo, project, 3)
    reader = PackedStore(project / ".mlvc" / "objects")  # a store of its own
    reader.indexes()  # its view: before the next commit
    (run,) = _commits(repo, project, 1, start=3)  # a pack of its own
    target = ObjectId.parse(str(run))
    monkeypatch.setattr(store_module, "LOOK_EVERY", 3600.0)  # only a miss makes it look
    real, merged = store_module.open_listed, []

    def listed_then_merged(folder, known=None):
        names, opened = real(folder, known)
        if not merged and any(n.endswith(".idx") for n in names):
            merged.append(_merge(project))  # the merger moves every small pack, this one too
        return names, opened

    monkeypatch.setattr(store_module, "open_listed", listed_then_merged)
    data = reader.read_bytes(target)  # a miss in its view, then the forced look
    assert merged and merged[0].returncode == 0, merged[0].stderr
    assert len(_packs(project)) == 1  # the target's pack was merged away
    assert data == Repo(project).store.read_bytes(target)
