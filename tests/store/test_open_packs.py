"""Pack descriptors: a repository of more packs than the process may open files is read
whole (rebuild, fsck, query), reads in threads never see a descriptor closed under them, and
packs that gc merged away are closed, not held."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import subprocess
import sys
import threading
from pathlib import Path

from mlvc import Repo
from mlvc.store.pack.open_packs import OpenPacks

BIN = Path(sys.executable).parent
PACKS = 150


def _pack_per_commit(repo: Repo, root: Path, n: int) -> list[str]:
    """``n`` commits, each with a data file of its own: a pack each, as everyday use makes."""
    ids = []
    for i in range(n):
        (root / "data" / f"part{i}.txt").write_text(f"sample {i}\n")
        ids.append(repo.commit(message=f"c{i}", params={"i": i}, capture_env=False))
    return ids


def _packs(root: Path) -> list[Path]:
    return sorted((root / ".mlvc" / "objects" / "pack").glob("*.pack"))


def _limited(soft: int):
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def test_more_packs_than_the_open_file_limit_are_read_whole(repo, project):
    """Every pack's descriptor was kept open: at a soft limit below the pack count, a
    rebuild and fsck stopped with "Too many open files" (fsck with a traceback)."""
    _pack_per_commit(repo, project, PACKS)
    assert len(_packs(project)) >= PACKS
    env = {**os.environ, "MLVC_DAEMON": "0"}

    def mlvc(*args: str) -> str:
        r = subprocess.run(
            [str(BIN / "mlvc"), *args], cwd=project, env=env, capture_output=True, text=True,
            preexec_fn=_limited(64), timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "no problems found" in mlvc("fsck")
    assert f"index rebuilt: {PACKS} runs" in mlvc("index", "rebuild")
    count = mlvc("query", "SELECT count(*) AS n, sum(value_num) AS s FROM params WHERE key='i'")
    assert str(PACKS) in count and str(sum(range(PACKS))) in count


def test_threads_reading_many_packs_through_two_descriptors(repo, project):
    """Eight threads read objects of 40 packs at random while at most two descriptors stay
    open: every read returns its own object's bytes (a descriptor closed under a read would
    have its number reused by the next pack opened, and return that pack's bytes)."""
    _pack_per_commit(repo, project, 40)
    store = Repo(project).store
    store._packs.limit = 2
    objects = [oid for oid in store.ids()]
    truth = {oid: store.read_bytes(oid) for oid in objects}
    assert len({store.location(o)[0] for o in objects}) >= 40
    wrong: list = []

    def read(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(1500):
                oid = rng.choice(objects)
                if store.read_bytes(oid) != truth[oid]:
                    wrong.append(oid)
        except Exception as e:  # noqa: BLE001 - a closed descriptor: EBADF, said below
            wrong.append(e)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert store._packs.open_count() <= 2


def test_the_least_recently_read_pack_is_closed_first(tmp_path):
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode() * 8)
    packs = OpenPacks(tmp_path, limit=2)
    assert packs.pread("a", 2, 0) == b"aa"
    assert packs.pread("b", 1, 3) == b"b"
    assert packs.pread("a", 1, 0) == b"a"  # a is now the most recent
    assert packs.size("c") == 8  # b goes
    assert list(packs._fds) == ["a", "c"]
    (tmp_path / "a").unlink()
    assert packs.pread("a", 1, 0) == b"a"  # still open: an unlinked pack reads as it was
    packs.forget({"c", "d"})
    assert list(packs._fds) == ["c"]
    packs.close()
    assert packs.open_count() == 0


def _open_packs_of(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".pack") or target.endswith(".pack (deleted)"):
            out.append(target)
    return out


def test_a_pack_gc_merged_away_is_not_held_open(repo, project):
    """A long-running reader (a server) kept every pack it had read open: after gc merged
    the small packs into one, their disk space stayed held until it ended."""
    ids = _pack_per_commit(repo, project, 12)
    reader = Repo(project)
    for rid in ids:
        reader.show(rid)
    held = _open_packs_of(os.getpid())
    assert len(held) >= 10
    report = repo.gc(grace=0)
    assert report.packs_repacked >= 10
    for rid in ids:  # the next reads look at the folder again and find the merged pack
        reader.show(rid)
    reader.store.reload(force=True)
    assert [p for p in _open_packs_of(os.getpid()) if p.endswith("(deleted)")] == []


def test_running_out_of_descriptors_is_a_one_line_error(repo, project):
    """A command that meets the open-file limit says so in one line (the limit, and how to
    raise it), exit code 1, instead of a traceback; the repository is left as it was."""
    from click.testing import CliRunner

    from mlvc.cli import main

    before = repo.log()
    (project / "data" / "new.txt").write_text("new\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 16
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    filler = []
    try:
        with contextlib.suppress(OSError):  # every free descriptor taken
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        result = CliRunner().invoke(main, ["commit", "-m", "starved"])
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # where the first open fails decides the wording (reading the config says which file
    # it could not read); either way one line, never a traceback
    assert result.exit_code == 1, result.output
    assert result.output.startswith("mlvc: error: "), result.output
    assert "too many open files" in result.output.lower()
    assert len(result.output.strip().splitlines()) == 1
    assert repo.log() == before


def test_resources_that_ran_out_are_named_with_what_to_do():
    from mlvc.cli import _exhausted

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    files = _exhausted(OSError(errno.EMFILE, "Too many open files", "/repo/.mlvc/x"))
    assert files.startswith("too many open files (/repo/.mlvc/x)")
    assert f"may open {soft}" in files and "ulimit -n" in files
    assert "close some programs" in _exhausted(OSError(errno.ENFILE, "File table overflow"))
    for code in (errno.ENOSPC, errno.EDQUOT):
        full = _exhausted(OSError(code, "No space left on device", "/repo/data/x"))
        assert full.startswith("no space left on the device (/repo/data/x)") and "fsck" in full
    assert _exhausted(OSError(errno.ENOENT, "No such file or directory", "/x")) is None
    assert _exhausted(OSError(errno.EACCES, "Permission denied", "/x")) is None


def test_a_big_checkout_reads_on_when_gc_merges_its_packs_midway(repo, project, tmp_path):
    """A big file's copy is planned pack by pack (``chunk_views``), then mapped window by
    window. When gc merged those packs away in the middle (another process), the windows not
    yet mapped named files that were gone: the rest of the chunks are read where they are
    now, and the copy is whole."""
    from mlvc.store.odb import CHUNK_THRESHOLD

    first = os.urandom(3 * CHUNK_THRESHOLD)
    (project / "data" / "big.bin").write_bytes(first)
    repo.commit(message="first", capture_env=False)
    whole = first + os.urandom(3 * CHUNK_THRESHOLD)  # its first half deduped: two packs
    (project / "data" / "big.bin").write_bytes(whole)
    second = repo.commit(message="second", capture_env=False)
    (oid,) = (
        repo.query(
            f"SELECT object_id FROM files WHERE run_id = '{second}' AND path = 'data/big.bin'"
        )
        .column(0)
        .to_pylist()
    )
    reader = Repo(project).store
    from mlvc.core.ids import ObjectId

    size, parts = reader.chunk_views(ObjectId.parse(oid))
    assert size == len(whole)
    got = [bytes(next(parts))]
    assert repo.gc(grace=0).packs_repacked >= 2
    reader.reload(force=True)
    got += [bytes(p) for p in parts]
    assert b"".join(got) == whole


def test_sizes_are_read_after_gc_merged_their_packs_away(repo, project):
    """``size`` reads a record's head through the pack the reader last looked at: merged
    away by gc (and its descriptor closed), it raised FileNotFoundError."""
    _pack_per_commit(repo, project, 6)
    reader = Repo(project).store
    objects = list(reader.ids())
    sizes = {oid: len(reader.read_bytes(oid)) for oid in objects}
    reader._packs.close()  # as the bound closes the least recent ones
    assert repo.gc(grace=0).packs_repacked >= 6
    assert {oid: reader.size(oid) for oid in objects} == sizes


STARVED_READ = """
import json, os, resource, sys
import duckdb, pyarrow, pyarrow.compute
import mlvc.index.index, mlvc.index.ingest, mlvc.index.user_sql
from mlvc import Repo

repo = Repo(sys.argv[1])  # modules imported; no database open yet: the read must open one
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
taken = []
try:
    while True:
        taken.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for fd in taken[len(taken) - int(sys.argv[2]):]:
    os.close(fd)
try:
    n = repo.query("SELECT count(*) FROM runs").column(0)[0].as_py()
    print(json.dumps({"runs": n}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e).splitlines()[0]}))
"""


def test_a_read_out_of_descriptors_never_takes_the_index_for_damaged(repo, project):
    """DuckDB failing to open the index for want of descriptors was taken for damage: the
    read started a rebuild (which failed too, with a traceback). At every number of spare
    descriptors a read either answers or says what ran out, and the index file is the one it
    was."""
    repo.commit(message="one", capture_env=False)
    index = project / ".mlvc" / "index.duckdb"
    inode = index.stat().st_ino
    said = []
    for spare in range(16):
        out = subprocess.run(
            [sys.executable, "-c", STARVED_READ, str(project), str(spare)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        said.append(out.stdout.strip())
    assert index.stat().st_ino == inode, said
    assert not list((project / ".mlvc").glob("index.duckdb.rebuild-*")), said
    assert all('"runs": 1' in s or "open files" in s.lower() for s in said), said
    assert any("cannot open the index" in s for s in said), said  # DuckDB's own failure met


def test_the_command_says_in_one_line_at_any_open_file_limit(repo, project):
    """`mlvc query` and `mlvc commit` under every low limit from where Python starts: each
    answers or fails with one `mlvc: error:` line, never a traceback (DuckDB's "Cannot open
    file ... Too many open files" escaped from the rebuild it wrongly started)."""
    repo.commit(message="one", capture_env=False)
    env = {**os.environ, "MLVC_DAEMON": "0"}
    met = []
    for soft in range(4, 20):
        starts = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_limited(soft))
        if starts.returncode:
            continue  # the interpreter itself cannot start: nothing of mlvc ran
        (project / "data" / "n.txt").write_text(str(soft))
        for args in (["query", "SELECT count(*) FROM runs"], ["commit", "-m", f"at {soft}"]):
            r = subprocess.run(
                [str(BIN / "mlvc"), *args], cwd=project, env=env, capture_output=True,
                text=True, preexec_fn=_limited(soft), timeout=120,
            )  # fmt: skip
            if r.returncode:
                assert r.stderr.startswith("mlvc: error: ") and "Traceback" not in r.stderr, (
                    soft, args, r.stderr[-800:],
                )  # fmt: skip
                assert len(r.stderr.strip().splitlines()) == 1, (soft, args, r.stderr)
                met.append(soft)
    assert met  # some limits were too low for the commands
    assert not list((project / ".mlvc").glob("index.duckdb.rebuild-*"))
