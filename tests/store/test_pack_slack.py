"""A big file just over PACK_MAX stays in one pack (the slack), and packs stay bounded."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlvc.store import odb
from mlvc.store.odb import CHUNK_MAX, CHUNK_THRESHOLD
from mlvc.store.pack import store as packstore
from mlvc.store.pack.store import PackedStore

MAX = CHUNK_THRESHOLD  # PACK_MAX in these tests: 4 MiB, so its slack is 64 KiB
SLACK = MAX >> packstore.SLACK_SHIFT
# a pack is checked for rolling over before each group of a big file's chunks, so it may end
# past its limit by one group: GROUP bytes of chunks, one more chunk, and their headers
GROUP_PAST = odb.GROUP + CHUNK_MAX + (64 << 10)


def packed(tmp_path) -> PackedStore:
    return PackedStore(tmp_path / "objects", tmp_path / "tmp")


def pack_sizes(s: PackedStore) -> list[int]:
    return sorted(p.stat().st_size for p in s.pack_dir.glob("*.pack"))


@pytest.fixture
def small_packs(monkeypatch):
    monkeypatch.setattr(packstore, "PACK_MAX", MAX)


@pytest.mark.parametrize("pipeline", ["0", "1"])
def test_a_big_file_just_over_pack_max_stays_in_one_pack(
    tmp_path, monkeypatch, small_packs, pipeline
):
    monkeypatch.setattr(odb, "PIPELINE", pipeline)
    reserved = []
    real = packstore._fallocate
    if real is not None:
        monkeypatch.setattr(
            packstore, "_fallocate", lambda fd, m, off, n: reserved.append(n) or real(fd, m, off, n)
        )
    src = tmp_path / "big.bin"
    data = os.urandom(MAX + 40_000)  # with its ~70 chunks' headers, over MAX, within the slack
    src.write_bytes(data)
    s = packed(tmp_path)
    oid = s.add_file(src)
    assert len(s.writer.packs) == 1
    if real is not None:
        assert len(reserved) == 1  # the whole file reserved at once, in the one pack
    s.sync()
    (size,) = pack_sizes(s)
    assert MAX < size <= MAX + SLACK
    fresh = packed(tmp_path)
    assert fresh.read_bytes(oid) == data
    assert fresh.check(oid) == [] and fresh.check_packs() == []


def test_a_file_past_the_slack_still_opens_a_second_pack(tmp_path, small_packs):
    src = tmp_path / "big.bin"
    data = os.urandom(MAX + (1 << 20))
    src.write_bytes(data)
    s = packed(tmp_path)
    oid = s.add_file(src)
    s.sync()
    sizes = pack_sizes(s)
    assert len(sizes) == 2 and max(sizes) <= MAX + GROUP_PAST
    fresh = packed(tmp_path)
    assert fresh.read_bytes(oid) == data and fresh.check_packs() == []


def test_small_records_after_a_big_put_fill_at_most_the_slack(tmp_path, small_packs):
    """Past PACK_MAX a pack takes more only while all that is expected fits in the slack:
    small records written after a big put that ended there roll over to a new pack."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(MAX + 20_000))
    s = packed(tmp_path)
    big = s.add_file(src)
    blobs = [os.urandom(5000) + i.to_bytes(2, "big") for i in range(40)]
    oids = [s.add_bytes(b) for b in blobs]
    s.sync()
    sizes = pack_sizes(s)
    assert len(sizes) == 2 and max(sizes) <= MAX + SLACK + len(blobs[0]) + 41
    fresh = packed(tmp_path)
    assert fresh.read_bytes(big) == src.read_bytes()
    assert [fresh.read_bytes(o) for o in oids] == blobs and fresh.check_packs() == []


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.integers(0, 2 * SLACK), min_size=1, max_size=3),
    st.sampled_from(["0", "1"]),
)
def test_packs_stay_bounded_and_every_file_reads_back(tmp_path_factory, sizes, pipeline):
    """Big files around PACK_MAX, one after another in one writer: no pack grows past
    PACK_MAX + its slack + one group, and every file reads back whole and verified."""
    tmp = tmp_path_factory.mktemp("slack")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(packstore, "PACK_MAX", MAX)
        mp.setattr(odb, "PIPELINE", pipeline)
        s = packed(tmp)
        files = []
        for i, extra in enumerate(sizes):
            src = tmp / f"f{i}.bin"
            src.write_bytes(os.urandom(MAX + extra))
            files.append((s.add_file(src), src.read_bytes()))
        s.sync()
        assert max(pack_sizes(s)) <= MAX + SLACK + GROUP_PAST
        fresh = packed(tmp)
        for oid, data in files:
            assert fresh.read_bytes(oid) == data and fresh.check(oid) == []
        assert fresh.check_packs() == []
