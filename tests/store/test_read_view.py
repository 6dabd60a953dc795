"""``read_view``: the content ``read_bytes`` gives, without its copies, verified the same way."""

from __future__ import annotations

import os

import pytest

from mlvc.core.ids import ObjectId
from mlvc.errors import CorruptObject, MissingObject
from mlvc.store.odb import CHUNK_THRESHOLD, LocalStore, MemoryStore
from mlvc.store.pack.store import PackedStore

CONTENTS = {
    "raw": os.urandom(3000),  # random: stored raw
    "compressed": b"step,value\n" + b"".join(b"%d,0.5\n" % i for i in range(5000)),
    "structured": b"\x93\xa3run\x01\x80",  # msgpack-looking: never compressed
    "empty": b"",
}


def stores(tmp_path):
    yield MemoryStore()
    yield LocalStore(tmp_path / "loose")
    yield PackedStore(tmp_path / "packed")


@pytest.mark.parametrize("name", sorted(CONTENTS))
def test_read_view_equals_read_bytes(tmp_path, name):
    for store in stores(tmp_path):
        oid = store.add_bytes(CONTENTS[name])
        store.flush()
        assert bytes(store.read_view(oid)) == store.read_bytes(oid) == CONTENTS[name]


def test_read_view_of_a_chunked_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(CHUNK_THRESHOLD + 12345))
    for store in stores(tmp_path):
        oid = store.add_file(path)
        assert bytes(store.read_view(oid)) == path.read_bytes()


@pytest.mark.parametrize("name", ["raw", "compressed"])
def test_read_view_refuses_damaged_content(tmp_path, name):
    store = LocalStore(tmp_path / "loose")
    oid = store.add_bytes(CONTENTS[name])
    path = store._path(oid)
    rec = bytearray(path.read_bytes())
    assert rec[:1] == (b"Z" if name == "compressed" else b"R")
    rec[-3] ^= 0x01  # a flipped bit near the end: the hash, or the zstd frame, catches it
    os.chmod(path, 0o644)
    path.write_bytes(bytes(rec))
    with pytest.raises(CorruptObject):
        store.read_view(oid)
    with pytest.raises(CorruptObject):
        store.read_bytes(oid)


def test_read_view_of_a_missing_object(tmp_path):
    for store in stores(tmp_path):
        with pytest.raises(MissingObject):
            store.read_view(ObjectId.of(b"never stored"))
