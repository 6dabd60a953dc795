"""Batch dedup lookups in pack indexes: the C search (mlvc._packfind) and the pure-Python
one (``MLVC_PURE=1``) give the same answers as a lookup per id, on good and damaged
indexes and on hostile input, and a big put stores the same objects either way."""

import gc
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memory_peak import peak_growth

from mlvc.core import speedups
from mlvc.core.ids import ObjectId
from mlvc.store.pack.index import FANOUT, PackIndex, write_index
from mlvc.store.pack.store import PackedStore

_packfind = speedups.built("mlvc._packfind")
PATHS = [
    "pure",
    pytest.param(
        "c", marks=pytest.mark.skipif(_packfind is None, reason="mlvc._packfind is not built")
    ),
]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setattr(speedups, "PURE", request.param == "pure")
    return request.param


def fast():
    return speedups.extension("mlvc._packfind")


def make_index(folder, name, ids) -> PackIndex:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pack-x.pack").write_bytes(b"\0" * 64)
    entries = sorted((oid, "pack-x.pack", 12, 1) for oid in set(ids))
    return PackIndex(write_index(folder, name, [("pack-x.pack", 64)], entries, durable=False))


def one_by_one(idx: PackIndex, oids) -> list[tuple[int, int]]:
    """What find_many must say, from ``find`` (an id and its position: the position is
    checked by the location it gives)."""
    out = []
    for k, oid in enumerate(oids):
        if len(oid) == 32 and idx.find(oid) is not None:
            out.append(k)
    return out


ids32 = st.binary(min_size=32, max_size=32)
# ids bunched on a few first bytes, so fanout slots hold many ids and binary searches go deep
bunched = st.builds(
    lambda b, rest: bytes([b]) + rest,
    st.sampled_from([0, 1, 255]),
    st.binary(min_size=31, max_size=31),
)


@settings(max_examples=60, deadline=None)
@given(
    stored=st.lists(st.one_of(ids32, bunched), max_size=300),
    extra=st.lists(st.one_of(ids32, bunched, st.binary(max_size=40)), max_size=60),
    picks=st.lists(st.integers(0, 10_000), max_size=40),
)
def test_find_many_agrees_with_find_on_both_paths(tmp_path_factory, stored, extra, picks):
    idx = make_index(tmp_path_factory.mktemp("idx"), "pack-x.idx", stored)
    query = extra + [stored[p % len(stored)] for p in picks if stored]
    query += [ObjectId(q) for q in query if len(q) == 32][:5]  # the subclass callers pass
    want = one_by_one(idx, query)
    assert want == [k for k, q in enumerate(query) if len(q) == 32 and q in set(stored)]
    results = []
    for module in (None, _packfind) if _packfind else (None,):
        hits = idx.find_many(query, module)
        assert [k for k, _pos in hits] == want
        for k, pos in hits:  # the position is the id's own: its location is find's
            assert idx._mm[idx.ids_off + 32 * pos : idx.ids_off + 32 * pos + 32] == query[k]
            assert idx.location(pos) == idx.find(query[k])
        results.append(hits)
        assert idx.find_many(tuple(query), module) == hits
    assert all(r == results[0] for r in results)


def damaged(tmp_path, fanout: list[int]) -> PackIndex:
    """A good index whose fanout was overwritten after it was opened (the file's own check
    rejects most damage; this is what the search must survive anyway)."""
    ids = sorted(os.urandom(32) for _ in range(50))
    idx = make_index(tmp_path, "pack-x.idx", ids)
    raw = bytearray(idx._mm)
    raw[idx.ids_off - FANOUT.size : idx.ids_off] = FANOUT.pack(*fanout)
    idx._mm = bytes(raw)  # find/find_many read only through _mm
    idx.fanout = tuple(fanout)
    return idx


@pytest.mark.parametrize(
    "fanout",
    [
        [0] * 255 + [50],
        [50] * 256,
        [2**32 - 1] * 256,  # every slot past the ids
        [(255 - i) * 3 for i in range(256)],  # decreasing
        [i * 7 % 51 for i in range(256)],
    ],
)
def test_a_damaged_fanout_never_reads_past_the_ids_and_both_paths_agree(tmp_path, fanout):
    idx = damaged(tmp_path, fanout)
    query = [bytes(idx._mm[idx.ids_off + 32 * i : idx.ids_off + 32 * i + 32]) for i in range(50)]
    query += [os.urandom(32) for _ in range(50)] + [b"\xff" * 32, b"\0" * 32]
    pure = idx.find_many(query, None)
    assert all(0 <= pos < 50 for _k, pos in pure)
    if _packfind is not None:
        assert idx.find_many(query, _packfind) == pure


@pytest.mark.skipif(_packfind is None, reason="mlvc._packfind is not built")
def test_hostile_arguments_raise_instead_of_crashing(tmp_path):
    idx = make_index(tmp_path, "pack-x.idx", [os.urandom(32) for _ in range(10)])
    mm, off, n = idx._mm, idx.ids_off, idx.count
    for bad in (["x" * 32], [None], [bytearray(32)], [32], [memoryview(b"a" * 32)]):
        with pytest.raises(TypeError):
            _packfind.find(mm, off, n, bad)
        with pytest.raises(TypeError):
            idx.find_many(bad, None)
    for bad in ({os.urandom(32)}, iter([os.urandom(32)]), b"a" * 32, None):
        with pytest.raises(TypeError):
            _packfind.find(mm, off, n, bad)
        with pytest.raises(TypeError):
            idx.find_many(bad, None)
    with pytest.raises(TypeError):
        _packfind.find(12, off, n, [])
    with pytest.raises(TypeError):
        _packfind.find(mm, "0", n, [])
    with pytest.raises(TypeError):
        _packfind.find(mm, off, n)
    past = (len(mm) - off) // 32 + 1  # one id more than the buffer holds
    for o, c in ((off, past), (off, 2**62), (off, -1), (0, 0), (1023, 0), (len(mm) + 1, 0)):
        with pytest.raises(ValueError):
            _packfind.find(mm, o, c, [os.urandom(32)])
    with pytest.raises(OverflowError):
        _packfind.find(mm, 2**80, n, [])
    assert _packfind.find(b"\0" * 1024, 1024, 0, [b"\0" * 32, b"", b"z" * 33]) == []


@pytest.mark.skipif(_packfind is None, reason="mlvc._packfind is not built")
def test_no_reference_leak_over_many_calls(tmp_path):
    ids = [os.urandom(32) for _ in range(64)]
    idx = make_index(tmp_path, "pack-x.idx", ids)
    mm, off, n = idx._mm, idx.ids_off, idx.count
    query = ids[:8] + [os.urandom(32) for _ in range(8)]
    bad = [ids[0], 7]

    def rounds(times):
        for _ in range(times):
            assert len(_packfind.find(mm, off, n, query)) == 8
            try:
                _packfind.find(mm, off, n, bad)
            except TypeError:
                pass

    rounds(20_000)  # warm up: allocator pools, caches
    gc.collect()
    refs = [(o, sys.getrefcount(o)) for o in (query[0], query[-1], mm)]
    with peak_growth() as grown:  # the block's own peak (a worker's earlier one hid it)
        rounds(200_000)  # 400k calls, 1.6M hits built and dropped
        gc.collect()
    # a leaked tuple a hit would be ~100 MiB
    assert grown[0] < 16 << 20, f"the peak grew {grown[0] >> 10} KiB"
    assert [(o, sys.getrefcount(o)) for o, _ in refs] == refs


def store_with_indexes(tmp_path, name, groups) -> PackedStore:
    """A store whose objects are spread over one index per group (as many small commits
    leave them), with a few loose objects too."""
    root = tmp_path / name
    for group in groups:
        s = PackedStore(root / "objects", root / "tmp")
        for data in group:
            s.add_bytes(data)
        s.flush()
    return PackedStore(root / "objects", root / "tmp")


def test_exists_many_agrees_with_exists_and_freshens_alike(tmp_path, path):
    groups = [[os.urandom(100) for _ in range(30)] for _ in range(6)]
    s = store_with_indexes(tmp_path, "r", groups)
    loose = os.urandom(50)
    oid_loose = ObjectId.of(loose)
    dest = s._path(oid_loose)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"R" + loose)
    s.reload(force=True)
    assert len(s._order) == 6
    present = [ObjectId.of(d) for g in groups for d in g[::3]]
    query = present + [ObjectId(os.urandom(32)) for _ in range(20)] + [oid_loose]
    query = [query[(i * 7) % len(query)] for i in range(len(query))]
    got = s._exists_many(query)
    batch_fresh, batch_deduped = set(s._fresh), set(s._deduped)
    s._fresh.clear()
    s._deduped.clear()
    assert got == [s._exists(o) for o in query]
    assert sum(got) == len(present) + 1
    assert s._fresh == batch_fresh and s._deduped == batch_deduped


def test_a_pack_shorter_than_indexed_is_looked_past(tmp_path, path):
    """An id whose pack is shorter than its index says is not trusted (as _locate)."""
    data = [os.urandom(200) for _ in range(5)]
    s = store_with_indexes(tmp_path, "r", [data, [os.urandom(200)]])
    s.reload(force=True)
    first = max(s._order, key=lambda i: i.count)
    pack = s.pack_dir / first.packs[0]
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.truncate(100)
    s = PackedStore(tmp_path / "r" / "objects", tmp_path / "r" / "tmp")
    s.reload(force=True)
    query = [ObjectId.of(d) for d in data]
    assert s._exists_many(query) == [s._exists(o) for o in query] == [False] * 5


@pytest.mark.parametrize("pipeline", ["0", "1"])
def test_a_big_put_among_many_indexes_stores_the_same_on_both_paths(
    tmp_path, monkeypatch, pipeline
):
    """A big file half made of an earlier file's chunks, put into a store with 12 indexes:
    the C and the pure lookups give the same id, the same new records (the shared chunks
    deduped), and a store that checks clean."""
    from mlvc.store import odb

    monkeypatch.setattr(odb, "PIPELINE", pipeline)
    first = os.urandom(6 << 20)
    second = first[: 3 << 20] + os.urandom(4 << 20)
    (tmp_path / "a.bin").write_bytes(first)
    (tmp_path / "b.bin").write_bytes(second)
    stored = {}
    for mode in ("pure", "c") if _packfind else ("pure",):
        monkeypatch.setattr(speedups, "PURE", mode == "pure")
        groups = [[f"{mode}-{i}-{j}".encode() * 20 for j in range(5)] for i in range(11)]
        s = store_with_indexes(tmp_path, mode, groups)
        a = s.add_file(tmp_path / "a.bin")
        s.flush()
        s = PackedStore(tmp_path / mode / "objects", tmp_path / mode / "tmp")
        s.reload(force=True)
        assert len(s._order) == 12
        before = set(s.ids())
        b = s.add_file(tmp_path / "b.bin")
        s.sync()
        new = set(s.ids()) - before
        assert s.read_bytes(b) == second and s.read_bytes(a) == first
        assert s.check(b) == [] and s.check_packs() == []
        shared = set(s.children(a)) & set(s.children(b))
        assert shared and not shared & new  # the shared chunks were found, not stored again
        stored[mode] = (a, b, new)
    assert all(v == stored["pure"] for v in stored.values())


def test_find_many_on_a_real_index_of_many_ids(tmp_path, path):
    ids = [os.urandom(32) for _ in range(5000)]
    idx = make_index(tmp_path, "pack-x.idx", ids)
    query = ids[::50] + [os.urandom(32) for _ in range(100)]
    hits = idx.find_many(query, fast())
    assert [k for k, _ in hits] == list(range(100))
    assert all(
        bytes(idx._mm[idx.ids_off + 32 * p : idx.ids_off + 32 * p + 32]) == query[k]
        for k, p in hits
    )
