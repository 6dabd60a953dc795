"""The switch between the one- and two-thread big-file paths (core.cores.IdleWatch): it
measures the machine now, not the one-minute load average, and a path changed in the middle
of a file must give the same chunks, ids and pack order as either path alone."""

import itertools
import os
import subprocess
import sys
import threading
import time

import blake3
import pytest

from mlvc.core import cores
from mlvc.core.ids import ObjectId
from mlvc.store import odb
from mlvc.store.odb import CHUNK_THRESHOLD, iter_chunks
from mlvc.store.pack.store import PackedStore
from mlvc.workspace import materialize
from mlvc.workspace.materialize import copy_object


def test_the_watch_follows_the_cpu_the_others_use(monkeypatch):
    """Busy ticks of the whole machine, minus this process's own CPU, per wall second."""
    samples = iter([(0, 0, 1), (200, 200, 1), (200, 400, 1), (290, 600, 1)])
    monkeypatch.setattr(cores, "_stat", lambda: next(samples))
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    monkeypatch.setattr(cores, "EVERY", 0.0)
    watch = cores.IdleWatch()
    watch.machine = 2
    assert watch.answer is True  # only the caller running at the start
    answers = []
    for _ in range(3):
        time.sleep(0.02)
        answers.append(watch.spare())
    # all busy (2 cores of others) -> no; all idle -> yes; 45% busy (0.9 core) -> no
    assert answers == [False, True, False]


def test_the_watch_waits_between_looks(monkeypatch):
    calls = []

    def stat():
        calls.append(1)
        return (0, 100 * len(calls), 1)

    monkeypatch.setattr(cores, "_stat", stat)
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    watch = cores.IdleWatch()
    for _ in range(100):
        watch.spare()
    assert len(calls) == 1  # EVERY (0.2 s) has not passed: no more reads of /proc/stat


def test_one_cpu_never_takes_a_helper(monkeypatch):
    monkeypatch.setattr(cores, "_cpus", lambda: 1)
    monkeypatch.setattr(cores, "EVERY", 0.0)
    watch = cores.IdleWatch()
    assert watch.spare() is False


def test_no_proc_stat_means_a_helper_when_there_are_two_cpus(monkeypatch):
    monkeypatch.setattr(cores, "_stat", lambda: None)
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    assert cores.IdleWatch().spare() is True


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_real_busy_processes_turn_the_helper_off(monkeypatch):
    """Three processes spinning on this machine's cores: every look says no core is free,
    whatever the load average said before they started."""
    monkeypatch.setattr(cores, "EVERY", 0.1)
    n = max(3, (os.cpu_count() or 2) + 1)
    spin = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)
    ]  # fmt: skip
    try:
        time.sleep(0.3)
        watch = cores.IdleWatch()
        looks = []
        for _ in range(3):
            time.sleep(0.15)
            looks.append(watch.spare())
        assert looks == [False, False, False]
    finally:
        for p in spin:
            p.kill()
            p.wait()


class _Toggle:
    """A switch whose answer flips at every question (the path changes every window)."""

    def __init__(self):
        self.answers = itertools.cycle([True, True, False, True, False, False])

    def spare(self) -> bool:
        return next(self.answers)


def _mixed(n: int, seed: int) -> bytes:
    import random

    rnd = random.Random(seed)
    part = rnd.randbytes(n // 4)
    return part + bytes(n // 8) + rnd.randbytes(n // 4) + part + bytes(n - n // 8 - 3 * (n // 4))


def test_a_path_changed_between_windows_keeps_chunks_ids_and_pack_order(tmp_path, monkeypatch):
    """Groups still queued on a slow helper when the switch says "one thread" are written
    first: the pack holds each new chunk once, in the order the file first has it."""
    data = _mixed(5 * CHUNK_THRESHOLD + 777, seed=11)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    monkeypatch.setattr(odb, "WINDOW", 1 << 20)
    monkeypatch.setattr(odb, "pipeline_switch", _Toggle)
    real = PackedStore._store_batch
    where = set()

    def slow(self, items, comp=None):
        where.add(threading.current_thread().name.split("_")[0])
        time.sleep(0.005)
        return real(self, items, comp)

    monkeypatch.setattr(PackedStore, "_store_batch", slow)
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    assert len(where) == 2  # both paths wrote groups
    want = [blake3.blake3(bytes(c)).digest() for c in iter_chunks(path)]
    assert bytes(oid) == blake3.blake3(data).digest()
    assert [bytes(c) for c in store.children(oid)] == want
    order = sorted((store.location(ObjectId(c))[1], c) for c in dict.fromkeys(want))
    assert [c for _off, c in order] == list(dict.fromkeys(want))
    fresh = PackedStore(tmp_path / "objects")
    assert fresh.read_bytes(oid) == data
    assert fresh.check(oid) == []


def test_a_checkout_whose_path_changes_hashes_every_byte_once_in_order(tmp_path, monkeypatch):
    data = os.urandom(3 * CHUNK_THRESHOLD + 4321)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    store = PackedStore(tmp_path / "objects")
    oid = store.add_file(path)
    store.sync()
    monkeypatch.setattr(materialize, "pipeline_switch", _Toggle)
    seen = []
    real = materialize._hash_group

    def spy(hasher, group):
        time.sleep(0.002)
        seen.append((threading.current_thread().name, b"".join(group)))
        return real(hasher, group)

    monkeypatch.setattr(materialize, "_hash_group", spy)
    out = tmp_path / "out.bin"
    copy_object(PackedStore(tmp_path / "objects"), oid, out)
    assert out.read_bytes() == data
    assert b"".join(part for _name, part in seen) == data  # every byte once, in order
    assert len({name.split("_")[0] for name, _part in seen}) == 2  # on both threads
