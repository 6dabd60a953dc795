"""Issue 9 item 26: damage every kind of file under .mlvc/ and check that nothing tracebacks,
fsck names the damage, and nothing that holds data is deleted.

One small repository (three runs, one with a chunked 6 MiB file, and a live run of this
process with two metric blocks) is built once per module; each case copies it, damages one
file (flip a byte in the middle, cut it to half its size, or delete it), then runs
``fsck``, ``log``, ``status``, ``show HEAD`` and ``checkout HEAD --to X`` through the CLI.

Damage that cannot be detected by design is listed in ``UNDETECTABLE`` with the reason.
Not exercised here because it cannot be told from real content: a flip inside the author or
message text of a reflog line reads as other text (flips in its ids, time, separators or a
cut last line are caught; the middle byte of this case's reflog falls in one of those).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlvc import Repo
from mlvc.cli import main
from mlvc.errors import EXIT_CODES

KINDS = [
    "pack",
    "pack-index",
    "ref-run",
    "ref-head",
    "ref-name",
    "ref-tag",
    "reflog",
    "statcache",
    "index",
    "live-meta",
    "live-block",
]
DAMAGE = ["flip", "truncate", "delete"]

# (kind, damage) -> why fsck cannot tell
UNDETECTABLE = {
    ("statcache", "delete"): "the stat cache is a cache: without it files are re-hashed",
    ("index", "delete"): "the index is a cache: the next command rebuilds it from refs",
    ("live-block", "flip"): (
        "Arrow IPC files carry no checksum: a flipped value in a metric block reads back as "
        "another number (a flip in its framing is caught)"
    ),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The pristine repository, built once; cases copy it."""
    from mlvc.runs.live import LiveRun

    root = tmp_path_factory.mktemp("corruption") / "proj"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('training')\n")
    (root / "data" / "train.csv").write_text("x,y\n1,2\n")
    (root / "data" / "weights.bin").write_bytes(os.urandom(6 << 20))  # chunked
    old = os.getcwd()
    os.chdir(root)
    try:
        os.environ.setdefault("MLVC_AUTHOR", "Test <t@example.com>")
        repo = Repo.init(root)
        repo.commit("one", data=["data"], name="first")
        (root / "train.py").write_text("print('training 2')\n")
        repo.commit("two", data=["data"], tags={"best": ""})
        repo.commit("three", data=["data"], name="third")
        run = LiveRun.create(repo.ctx, name="in-flight", capture=False)
        run._stop.set()
        run._flusher.join()
        run.log_text("staged artifact\n", "notes.txt")
        for block in range(2):
            run.log_metric("loss", 1.0 / (block + 1), step=block)
            run.flush()
        repo.index.query("SELECT 1")  # the index exists and is current
    finally:
        os.chdir(old)
    for folder, _dirs, files in os.walk(root / ".mlvc"):
        for f in files:  # older than every grace period: nothing is spared for being young
            t = time.time() - 7200
            os.utime(os.path.join(folder, f), (t, t))
    return root


def _target(d: Path, kind: str) -> Path:
    """The file of that kind to damage."""
    if kind == "pack":
        return max((d / "objects" / "pack").glob("*.pack"), key=lambda p: p.stat().st_size)
    if kind == "pack-index":
        return next((d / "objects" / "pack").glob("*.idx"))
    if kind == "ref-run":  # the run HEAD names, so that the loss is visible
        return d / "refs" / "runs" / (d / "HEAD").read_text().strip()
    if kind == "ref-head":
        return d / "HEAD"
    if kind == "ref-name":
        return d / "refs" / "names" / "first"
    if kind == "ref-tag":
        return d / "refs" / "tags" / "best"
    if kind == "reflog":
        return d / "logs" / "HEAD"
    if kind == "statcache":
        return d / "statcache"
    if kind == "index":
        return d / "index.duckdb"
    live = next(p for p in (d / "live").iterdir() if not p.name.startswith("."))
    if kind == "live-meta":
        return live / "meta.json"
    return live / "series" / "00000001.arrow"


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
        return
    os.chmod(path, 0o644)
    size = path.stat().st_size
    if how == "truncate":
        os.truncate(path, size // 2)
        return
    at = size // 2
    if path.name == "index.duckdb":
        # the middle of a DuckDB file is often a free block, whose bytes nothing reads (a
        # flip there changes nothing): flip a byte of data the index holds instead
        at = _first_data_byte(path, "runs")
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def _first_data_byte(index: Path, table: str) -> int:
    """File offset of the first data block of ``table`` in a DuckDB file."""
    import duckdb

    con = duckdb.connect(str(index), read_only=True)
    try:
        size = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
        block, offset = con.execute(
            f"SELECT block_id, block_offset FROM pragma_storage_info('{table}') "
            "WHERE block_id >= 0 ORDER BY column_id, row_group_id LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    return 3 * 4096 + block * size + 8 + offset  # after the file's three header blocks


def _data_files(d: Path) -> set[str]:
    """Files that hold data: packs and staged runs' files."""
    out = {p.name for p in (d / "objects" / "pack").glob("*.pack")}
    out |= {str(p.relative_to(d)) for p in (d / "live").rglob("*") if p.is_file()}
    return out


def _cases():
    for kind in KINDS:
        for how in DAMAGE:
            yield pytest.param(kind, how, id=f"{kind}-{how}")


@pytest.mark.parametrize("kind,how", list(_cases()))
def test_damage_is_named_and_nothing_tracebacks(built, tmp_path, monkeypatch, kind, how):
    root = tmp_path / "proj"
    shutil.copytree(built, root, symlinks=True)
    monkeypatch.chdir(root)
    d = root / ".mlvc"
    target = _target(d, kind)
    needle = target.name
    if kind == "pack-index" and how == "delete":  # what fsck can name is the pack it indexed
        from mlvc.store.pack.index import PackIndex

        needle = PackIndex(target).packs[0]
    before = _data_files(d)
    _damage(target, how)
    runner = CliRunner()
    results = {}
    for args in (
        ["fsck"],
        ["log"],
        ["status"],
        ["show", "HEAD"],
        ["checkout", "HEAD", "--to", str(tmp_path / "out")],
        ["fsck"],
    ):
        r = runner.invoke(main, args)
        assert r.exit_code in EXIT_CODES, (args, r.exit_code, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (
            args,
            repr(r.exception),
            r.output,
        )
        assert "Traceback" not in r.output, (args, r.output)
        results.setdefault(args[0], r)
    lost = before - _data_files(d) - {str(target.relative_to(d)), target.name}
    assert not lost, f"deleted files that hold data: {sorted(lost)}"
    fsck = results["fsck"]
    if (kind, how) in UNDETECTABLE:
        return
    assert fsck.exit_code == 9 or "repaired:" in fsck.output, fsck.output
    assert needle in fsck.output, (needle, fsck.output)


def test_every_case_is_either_detected_or_explained():
    cases = {(k, h) for k in KINDS for h in DAMAGE}
    assert set(UNDETECTABLE) <= cases
