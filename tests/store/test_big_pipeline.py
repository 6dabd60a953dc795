"""Big files: chunks written by a helper thread while the next ones are cut (odb._store_chunks)
and checkouts hashed behind the copy (materialize._Sink). The chunks, the ids and the pack's
content must be those of the one-thread path; a slow or failing helper must never let a
buffer be reused early, nor an error be lost."""

import errno
import itertools
import os
import threading
import time

import blake3
import pytest

from mlvc.core.ids import ObjectId
from mlvc.store import odb
from mlvc.store.odb import CHUNK_THRESHOLD, iter_chunks
from mlvc.store.pack.store import PackedStore
from mlvc.workspace.materialize import copy_object


def _mixed(n: int, seed: int) -> bytes:
    """Random bytes with zero runs (compressible chunks) and repeats (dedup in one file)."""
    import random

    rnd = random.Random(seed)
    part = rnd.randbytes(n // 4)
    return part + bytes(n // 8) + rnd.randbytes(n // 4) + part + bytes(n - n // 8 - 3 * (n // 4))


class _Toggle:
    """A switch whose answer changes between windows (tests/store/test_idle_switch.py)."""

    def __init__(self):
        self.answers = itertools.cycle([True, True, False, True, False, False])

    def spare(self) -> bool:
        return next(self.answers)


@pytest.mark.parametrize("pipeline", [True, False, "toggle"])
def test_pipelined_and_inline_stores_hold_the_same_chunks_in_file_order(
    tmp_path, monkeypatch, pipeline
):
    """Also when the path changes between windows ("toggle"): groups still queued on a slow
    helper when the switch says "one thread" are written first."""
    data = _mixed(5 * CHUNK_THRESHOLD + 12345, seed=7)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    monkeypatch.setattr(odb, "WINDOW", 1 << 20)
    monkeypatch.setattr(odb, "PIPELINE", pipeline)
    where = set()
    if pipeline == "toggle":
        monkeypatch.setattr(odb, "pipeline_switch", _Toggle)
        _slow_batches(monkeypatch, 0.005, lambda name: where.add(name.split("_")[0]))
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    want = [blake3.blake3(bytes(c)).digest() for c in iter_chunks(path)]
    assert bytes(oid) == blake3.blake3(data).digest()
    assert [bytes(c) for c in store.children(oid)] == want
    # the pack holds each new chunk once, in the order the file first has it
    order = sorted(
        (store.location(ObjectId(c))[1], c) for c in dict.fromkeys(want)
    )  # offsets in the one pack
    assert [c for _off, c in order] == list(dict.fromkeys(want))
    fresh = PackedStore(tmp_path / "objects")
    assert fresh.read_bytes(oid) == data
    assert fresh.check(oid) == []
    assert len(where) == (2 if pipeline == "toggle" else 0)  # both paths wrote groups


def test_a_slow_writer_never_sees_its_window_reused(tmp_path, monkeypatch):
    """The helper writes groups well after they were cut; the cutter must wait for them
    before refilling their buffer, or the stored chunks would hold later bytes."""
    data = os.urandom(4 * CHUNK_THRESHOLD)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    monkeypatch.setattr(odb, "WINDOW", 1 << 20)
    monkeypatch.setattr(odb, "PIPELINE", True)
    threads = set()
    _slow_batches(monkeypatch, 0.01, threads.add)
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    assert threads and all(t.startswith("mlvc-store") for t in threads)
    assert PackedStore(tmp_path / "objects").read_bytes(oid) == data  # verified per chunk


def test_a_write_error_on_the_helper_is_the_error_of_the_put(tmp_path, monkeypatch):
    """A full disk while the helper writes a group: add_file raises it (not a wrong id), and
    no helper thread is left running."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * CHUNK_THRESHOLD))
    monkeypatch.setattr(odb, "WINDOW", 1 << 20)
    monkeypatch.setattr(odb, "PIPELINE", True)
    real = PackedStore._store_batch
    calls = []

    def full(self, items, comp=None):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, items, comp)

    monkeypatch.setattr(PackedStore, "_store_batch", full)
    store = PackedStore(tmp_path / "objects")
    with pytest.raises(OSError) as e:
        store.add_file(path)
    assert e.value.errno == errno.ENOSPC
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("mlvc-store")]


@pytest.mark.parametrize("pipeline", [True, False])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_checkout_detects_a_chunk_damaged_in_the_pack(tmp_path, monkeypatch, where, pipeline):
    """A raw chunk flipped in the pack after the commit: the kernel copy propagates it, the
    hash of what was written (read back behind the copy) catches it, and copy_object fails
    rather than leave a file that passes for whole."""
    from mlvc.errors import CorruptObject

    monkeypatch.setattr(odb, "PIPELINE", pipeline)
    data = os.urandom(3 * CHUNK_THRESHOLD + 999)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    kids = store.children(oid)
    cid = kids[{"start": 0, "middle": len(kids) // 2, "end": -1}[where]]
    pack, off, _n = store.location(cid)
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.seek(off + 100)
        b = f.read(1)
        f.seek(off + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    out = tmp_path / "out.bin"
    with pytest.raises(CorruptObject):
        copy_object(PackedStore(tmp_path / "objects"), oid, out)
    clean = tmp_path / "clean"
    store2 = PackedStore(clean)
    oid2 = store2.add_file(path)
    store2.sync()
    copy_object(PackedStore(clean), oid2, out)
    assert out.read_bytes() == data


@pytest.mark.parametrize("pipeline", ["1", "toggle"])
def test_checkout_hash_runs_behind_the_copy_on_one_helper(tmp_path, monkeypatch, pipeline):
    """The hash of a checkout is computed by the helper thread, in order, and matches; when
    the path changes at every group ("toggle"), every byte is still hashed once, in order."""
    from mlvc.workspace import materialize

    monkeypatch.setattr(odb, "PIPELINE", pipeline)
    if pipeline == "toggle":
        monkeypatch.setattr(materialize, "pipeline_switch", _Toggle)
    data = _mixed(5 * CHUNK_THRESHOLD + 77, seed=3)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    seen = []
    real = materialize._hash_group

    def spy(hasher, group):
        time.sleep(0.002)  # the helper lags: a switch to this thread must wait for it
        seen.append((threading.current_thread().name, b"".join(group)))
        return real(hasher, group)

    monkeypatch.setattr(materialize, "_hash_group", spy)
    out = tmp_path / "out.bin"
    copy_object(PackedStore(tmp_path / "objects"), oid, out)
    assert out.read_bytes() == data
    assert b"".join(part for _name, part in seen) == data  # every byte once, in order
    names = {name.split("_")[0] for name, _part in seen}
    assert names == ({"mlvc-hash"} if pipeline == "1" else {"mlvc-hash", "MainThread"})


@pytest.mark.parametrize(
    ("setting", "running", "want"),
    [("1", 50, True), ("0", 1, False), ("auto", 1, True), ("auto", 50, False)],
)
def test_the_pipeline_is_used_when_a_core_is_idle_unless_forced(
    monkeypatch, setting, running, want
):
    """The first answer comes from the threads running this instant (the caller is one)."""
    from mlvc.core import cores

    monkeypatch.setattr(odb, "PIPELINE", setting)
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    monkeypatch.setattr(cores, "_stat", lambda: (100, 1000, running))
    assert odb.pipelined() is want


def _slow_batches(monkeypatch, delay: float, note) -> None:
    """Each group the store writes waits ``delay`` s first, and ``note`` gets the name of
    the thread that writes it."""
    real = PackedStore._store_batch

    def slow(self, items, comp=None):
        note(threading.current_thread().name)
        time.sleep(delay)
        return real(self, items, comp)

    monkeypatch.setattr(PackedStore, "_store_batch", slow)
