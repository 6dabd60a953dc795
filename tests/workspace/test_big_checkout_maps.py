"""A big checkout writes chunks from read-only maps of the packs (PackedStore.chunk_views),
hashing them as it writes: a damaged or shortened pack is refused, never a crash or a file
that passes for whole, and the maps are released as it goes (memory stays bounded)."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from mlvc.errors import MlvcError
from mlvc.store.odb import CHUNK_THRESHOLD
from mlvc.store.pack.store import PackedStore
from mlvc.workspace.materialize import copy_object


def _stored(tmp_path, data: bytes):
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    return PackedStore(tmp_path / "objects"), oid


def _the_pack(tmp_path):
    (pack,) = (tmp_path / "objects" / "pack").glob("*.pack")
    return pack


def test_a_pack_shorter_than_its_index_is_an_error_not_a_crash(tmp_path):
    """Mapping past a file's end would kill the process with SIGBUS: a shortened pack is
    found before any map and the checkout falls back to reads, which report it."""
    store, oid = _stored(tmp_path, os.urandom(3 * CHUNK_THRESHOLD))
    pack = _the_pack(tmp_path)
    os.chmod(pack, stat.S_IRUSR | stat.S_IWUSR)
    os.truncate(pack, pack.stat().st_size - 100_000)
    assert store.chunk_views(oid) is None
    out = tmp_path / "out.bin"
    with pytest.raises(MlvcError):
        copy_object(store, oid, out)


@pytest.mark.parametrize("pipeline", ["1", "0"])
def test_a_chunk_changed_in_the_pack_after_the_plan_is_caught(tmp_path, monkeypatch, pipeline):
    """The bytes hashed are the bytes written: damage made between planning the copy and
    writing it (the map sees it) fails the checkout."""
    from mlvc.errors import CorruptObject
    from mlvc.store import odb

    monkeypatch.setattr(odb, "PIPELINE", pipeline)
    data = os.urandom(2 * CHUNK_THRESHOLD + 5)
    store, oid = _stored(tmp_path, data)
    size, parts = store.chunk_views(oid)
    assert size == len(data)
    # a byte of a chunk's content (the pack's middle byte was sometimes a record header,
    # which no hash covers: CI failed once on that)
    pack, off, n = store.location(store.children(oid)[1])
    os.chmod(pack, stat.S_IRUSR | stat.S_IWUSR)
    with open(pack, "r+b") as f:
        f.seek(off + n // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    from mlvc.workspace.materialize import _Sink

    with open(tmp_path / "out.bin", "wb") as f:
        sink = _Sink(f.fileno())
        try:
            got = sink.copy(parts)
        finally:
            sink.close()
    assert got != bytes(oid)
    with pytest.raises(CorruptObject):
        copy_object(store, oid, tmp_path / "again.bin")


CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from mlvc.store.pack.store import PackedStore
    from mlvc.workspace.materialize import copy_object

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    root = Path(sys.argv[1])
    with open(root / "big.bin", "wb") as f:
        for _ in range(int(sys.argv[2])):
            f.write(os.urandom(4 << 20))
    s = PackedStore(root / "objects")
    oid = s.add_file(root / "big.bin")
    s.sync()
    os.unlink(root / "big.bin")
    before = hwm()
    copy_object(PackedStore(root / "objects"), oid, root / "out.bin")
    print(hwm() - before)
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("pipeline", ["1", "0"])
def test_the_maps_of_a_big_checkout_are_released_as_it_goes(tmp_path, pipeline):
    """A page of a map that was read counts in the RSS: a 160 MiB checkout grows the peak
    by a few windows, not by the file (mapping the whole pack would add 160 MiB)."""
    env = {**os.environ, "MLVC_BIG_PIPELINE": pipeline}
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "40"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    grew = int(p.stdout.split()[-1])
    assert grew < 72 << 20, f"peak RSS grew by {grew >> 20} MiB"
