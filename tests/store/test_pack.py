"""Packs: crash safety, index merging, old loose repositories, compression round trips."""

import multiprocessing
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.errors import MissingObject
from mlvc.store import compress as zstd
from mlvc.store.odb import ZSTD, LocalStore
from mlvc.store.pack.store import MAX_INDEXES, PackedStore, PackIndex


def packed(tmp_path) -> PackedStore:
    return PackedStore(tmp_path / "objects", tmp_path / "tmp")


def _has(root: str, hexid: str) -> bool:
    return PackedStore(root).has(ObjectId.parse(hexid))


def test_objects_are_visible_to_other_processes_once_flushed(tmp_path):
    a = packed(tmp_path)
    oid = a.add_bytes(b"pending")
    assert a.has(oid) and packed(tmp_path).has(oid)  # one writer per process, shared
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert not pool.apply(_has, (str(a.root), oid.hex))
        a.flush()
        assert pool.apply(_has, (str(a.root), oid.hex))


def test_torn_pack_is_ignored_and_fsck_passes(repo, project):
    repo.commit("one", data=["data"])
    store = repo.store
    good = set(store.ids())
    # a writer killed mid-pack: bytes appended, no index written
    torn = store.pack_dir / "pack-00000000000000000000000000000000.pack"
    torn.write_bytes(b"MLVCPACK\x01\x00\x00\x00" + os.urandom(5000))
    stale = store.pack_dir / ".pack-x.idx.1234.tmp"
    stale.write_bytes(b"MLVCIDX1 half")
    fresh = Repo(project)
    assert set(fresh.store.ids()) == good
    assert fresh.fsck() == []
    assert fresh.store.check_packs() == []


@pytest.mark.damages_repo
def test_truncated_pack_or_damaged_index_is_reported(repo, project):
    repo.commit("one", data=["data"])
    idx = next(repo.store.pack_dir.glob("*.idx"))
    pack = repo.store.pack_dir / PackIndex(idx).packs[0]
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size - 10)
    problems = Repo(project).fsck()
    assert any("shorter than" in p for p in problems), problems
    # a reader no longer trusts that pack's objects
    with pytest.raises(MissingObject):
        Repo(project).run("HEAD")


@pytest.mark.damages_repo
def test_damaged_index_checksum_is_reported(repo, project):
    repo.commit("one", data=["data"])
    idx = next(repo.store.pack_dir.glob("*.idx"))
    os.chmod(idx, 0o644)
    raw = bytearray(idx.read_bytes())
    raw[-40] ^= 0xFF  # a location byte, not a size: the index still parses
    idx.write_bytes(bytes(raw))
    problems = Repo(project).store.check_packs()
    assert any("checksum" in p for p in problems), problems


def test_many_indexes_are_merged(tmp_path):
    store = packed(tmp_path)
    ids = []
    for i in range(MAX_INDEXES + 3):
        ids.append(store.add_bytes(b"object %d" % i))
        store.sync()
    assert len(list(store.pack_dir.glob("*.idx"))) <= 4
    fresh = packed(tmp_path)
    assert all(fresh.read_bytes(o) == b"object %d" % i for i, o in enumerate(ids))
    assert sorted(fresh.ids()) == sorted(ids)


def test_loose_objects_of_an_old_repository_stay_readable(tmp_path):
    old = LocalStore(tmp_path / "objects", tmp_path / "tmp")
    a = old.add_bytes(b"written before packs")
    store = packed(tmp_path)
    b = store.add_bytes(b"written after")
    assert store.read_bytes(a) == b"written before packs"
    assert set(store.ids()) == {a, b}
    assert store.add_bytes(b"written before packs") == a  # deduplicated, not repacked
    store.sync()
    assert not store.writer.pending


def test_text_records_are_compressed_weights_are_not(tmp_path):
    import numpy as np

    store = packed(tmp_path)
    text = b"".join(b"step=%d loss=%.4f\n" % (i, 1 / (i + 1)) for i in range(20_000))
    weights = np.random.default_rng(0).standard_normal(200_000).astype("float32").tobytes()
    t, w = store.add_bytes(text), store.add_bytes(weights)
    assert store._get_record(t)[:1] == ZSTD and store.stored_size(t) < len(text) / 3
    assert store._get_record(w)[:1] == b"R"
    assert store.read_bytes(t) == text and store.read_bytes(w) == weights


@given(st.binary(max_size=300_000) | st.text(max_size=20_000).map(str.encode))
def test_compress_round_trip(data):
    packed_form = zstd.compress(data)
    if packed_form is not None:
        assert len(packed_form) < len(data)
        assert zstd.decompress(packed_form, len(data)) == data


@given(st.binary(min_size=9, max_size=2000))
def test_damaged_compressed_payload_raises_value_error(junk):
    with pytest.raises(ValueError):
        zstd.decompress(junk, 1 << 20)


def _writer(root: str, n: int, seed: int) -> list[str]:
    store = PackedStore(root)
    ids = [store.add_bytes(b"%d-%d" % (seed, i) * 50).hex for i in range(n)]
    ids.append(store.add_bytes(b"shared by every writer" * 40).hex)
    store.sync()
    return ids


def test_concurrent_writers_never_share_a_pack(tmp_path):
    root = str(tmp_path / "objects")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_writer, [(root, 200, s) for s in range(4)])
    store = PackedStore(root)
    wanted = {ObjectId.parse(h) for r in results for h in r}
    assert set(store.ids()) == wanted
    assert all(store.check(o) == [] for o in wanted)
    assert len(list(store.pack_dir.glob("*.pack"))) == 4
    assert store.check_packs() == []


@pytest.mark.damages_repo
def test_corrupt_chunk_in_a_pack_never_reaches_the_checkout(repo, project, tmp_path):
    from mlvc.errors import CorruptObject
    from mlvc.store.odb import CHUNK_THRESHOLD

    big = project / "data" / "w.bin"
    big.write_bytes(os.urandom(CHUNK_THRESHOLD + 100_000))
    oid = repo.commit("big", data=["data"])
    entry = [e for e in repo.show(oid)["data"]["entries"] if e["path"].endswith("w.bin")][0]
    chunk = repo.store.children(ObjectId.parse(entry["id"]))[5]
    path, offset, length = repo.store.location(chunk)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        byte = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptObject):
        Repo(project).checkout(oid.hex, to=tmp_path / "out")
    assert not (tmp_path / "out" / "data" / "w.bin").exists()
    assert any(chunk.hex in p for p in Repo(project).fsck())


def test_packed_store_pickles_as_its_folders(tmp_path):
    import pickle

    store = packed(tmp_path)
    oid = store.add_bytes(b"sent to an index worker")
    store.sync()
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_bytes(oid) == b"sent to an index worker"


def test_a_big_file_of_repeated_blocks_stores_each_chunk_once(tmp_path):
    """Chunks are appended in groups (one vectored write each); a chunk repeated inside a
    group, across groups or already in the store is written once, and every record is where
    the index says, before and after a sync."""
    import random

    import blake3

    from mlvc.store.odb import CHUNK_THRESHOLD

    rnd = random.Random(7)
    blocks = [rnd.randbytes(300_000) for _ in range(3)]
    data = b"".join(blocks[rnd.randrange(3)] for _ in range(40)) + rnd.randbytes(CHUNK_THRESHOLD)
    path = tmp_path / "rep.bin"
    path.write_bytes(data)
    store = packed(tmp_path)
    oid = store.add_file(path)
    kids = store.children(oid)
    assert len(set(kids)) < len(kids) / 2  # the repeats dedup
    assert len(store.writer.pending) == len(set(kids)) + 1  # each chunk once, + the list
    assert store.read_bytes(oid) == data and bytes(oid) == blake3.blake3(data).digest()
    stored = sum(store.stored_size(o) for o in {*kids, oid})
    store.sync()
    (pack,) = store.pack_dir.glob("*.pack")
    assert pack.stat().st_size == 12 + stored  # the magic, then no record twice
    again = packed(tmp_path)
    assert again.add_file(path) == oid and not again.writer.pending  # all already stored
    assert again.read_bytes(oid) == data
    assert again.check(oid) == [] and again.check_packs() == []


def test_write_all_writes_more_parts_than_one_writev_takes(tmp_path):
    from mlvc.store.pack.index import IOV_MAX, write_all

    parts = [bytes([i % 251]) * (1 + i % 7) for i in range(3 * IOV_MAX + 5)]
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, [*parts, b"", memoryview(b"end")])
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(parts) + b"end"


def test_an_index_merged_away_between_listing_and_open_is_still_read(tmp_path, merge_while_listed):
    """Regression: a reader listed the index files, another process merged them (the merged
    one renamed in, then the sources removed) before the reader opened them, and the reader
    reported the newest objects missing. An index ingest then dropped a committed run."""
    writer = packed(tmp_path)
    ids = []
    for i in range(5):
        ids.append(writer.add_bytes(b"object %d" % i))
        writer.sync()
    reader = packed(tmp_path)
    reader.reload(force=True)  # it knows the first five indexes
    new = writer.add_bytes(b"the newest")
    writer.sync()
    merged = merge_while_listed(tmp_path / "objects")
    assert reader.read_bytes(new) == b"the newest"
    assert len(merged) == 2 and len(list((tmp_path / "objects" / "pack").glob("*.idx"))) == 1
    assert all(reader.read_bytes(o) == b"object %d" % i for i, o in enumerate(ids))


def test_fsck_during_a_merge_of_indexes_finds_nothing_wrong(tmp_path, merge_while_listed):
    """fsck (which runs beside commits when it cannot take the gc lock) listed an index
    that a commit then merged away, and reported it unreadable ("fix its permissions")."""
    from mlvc.store.pack.scan import repair

    store = packed(tmp_path)
    for i in range(4):
        store.add_bytes(b"object %d" % i)
        store.sync()
    merged = merge_while_listed(tmp_path / "objects", times=1)
    assert repair(store, cutoff=0.0) == ([], [])
    assert merged == [1]


def test_a_fresh_reader_asks_only_for_the_packs_it_reads(tmp_path, monkeypatch):
    """A pack a commit: asking the size of every pack an index names when it opened cost each
    new process one ``stat`` a pack (~65 ms at 2,400 runs) before its first read."""
    store = packed(tmp_path)
    ids = []
    for i in range(40):
        ids.append(store.add_bytes(f"object {i}".encode()))
        store.flush()  # a pack each, as each commit makes
    store.consolidate()  # their indexes merged into one, as commits do past MAX_INDEXES
    assert len([n for n in os.listdir(tmp_path / "objects" / "pack") if n.endswith(".idx")]) == 1
    asked = []
    getsize = os.path.getsize

    def counting(path):
        asked.append(os.fspath(path))
        return getsize(path)

    monkeypatch.setattr(os.path, "getsize", counting)
    fresh = PackedStore(tmp_path / "objects")
    assert fresh.read_bytes(ids[7]) == b"object 7"
    assert len([p for p in asked if "/pack/" in p]) <= 2
    assert [fresh.read_bytes(oid) for oid in ids] == [f"object {i}".encode() for i in range(40)]
