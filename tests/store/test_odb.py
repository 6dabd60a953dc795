"""One contract suite for every ObjectStore implementation, plus corruption detection."""

import os

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlvc.core.ids import ObjectId
from mlvc.errors import CorruptObject, MissingObject
from mlvc.store.odb import CHUNK_THRESHOLD, LocalStore, MemoryStore, ObjectStore, hash_file
from mlvc.store.pack.store import PackedStore


@pytest.fixture(params=["memory", "local", "packed", "packed-flushed"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "local":
        return LocalStore(tmp_path / "objects", tmp_path / "tmp")
    s = PackedStore(tmp_path / "objects", tmp_path / "tmp")
    if request.param == "packed-flushed":
        return _Reopening(s)
    return s


class _Reopening:
    """A packed store whose every read goes through a fresh instance after a flush: what
    another process sees."""

    def __init__(self, inner: PackedStore):
        self._inner = inner

    def __getattr__(self, name):
        if name in ("add_bytes", "add_file", "sync", "flush"):
            return getattr(self._inner, name)
        self._inner.flush()
        fresh = PackedStore(self._inner.root, self._inner.tmp)
        return getattr(fresh, name)


def test_implements_protocol(store):
    assert isinstance(getattr(store, "_inner", store), ObjectStore)


def test_bytes_round_trip_and_id_is_blake3(store):
    oid = store.add_bytes(b"hello")
    assert oid == ObjectId(blake3.blake3(b"hello").digest())
    assert store.has(oid)
    assert store.read_bytes(oid) == b"hello"
    assert store.size(oid) == 5
    assert store.check(oid) == []
    assert oid in set(store.ids())


def test_empty_content(store):
    oid = store.add_bytes(b"")
    assert store.read_bytes(oid) == b""


def test_missing_object(store):
    oid = ObjectId.of(b"never stored")
    assert not store.has(oid)
    with pytest.raises(MissingObject, match=oid.hex):
        store.read_bytes(oid)


def test_adding_twice_is_idempotent(store):
    a = store.add_bytes(b"same")
    b = store.add_bytes(b"same")
    assert a == b
    assert list(store.ids()).count(a) == 1


def test_large_file_is_chunked_and_id_is_whole_file_hash(store, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(CHUNK_THRESHOLD + 300_000))
    oid = store.add_file(path)
    assert oid == hash_file(path) == ObjectId(blake3.blake3(path.read_bytes()).digest())
    assert len(store.children(oid)) > 10
    assert store.read_bytes(oid) == path.read_bytes()
    assert store.size(oid) == path.stat().st_size
    assert store.check(oid) == []


def test_text_is_compressed_and_reads_back(store, tmp_path):
    text = b"".join(b"%d,%d,label-%d\n" % (i, i * 7, i % 5) for i in range(50_000))
    path = tmp_path / "big.csv"
    path.write_bytes(text)
    oid = store.add_file(path)
    assert store.read_bytes(oid) == text and store.size(oid) == len(text)
    assert store.check(oid) == []
    stored = sum(store.stored_size(c) for c in store.children(oid)) + store.stored_size(oid)
    assert stored < len(text) / 2


def test_edited_large_file_shares_most_chunks(store, tmp_path):
    data = bytearray(os.urandom(8 << 20))
    a = tmp_path / "a.bin"
    a.write_bytes(data)
    data[4 << 20 : (4 << 20) + 10] = b"0123456789"  # a small in-place edit
    b = tmp_path / "b.bin"
    b.write_bytes(bytes(data[:100]) + b"INSERTED" + bytes(data[100:]))  # and a shift
    ca, cb = set(store.children(store.add_file(a))), set(store.children(store.add_file(b)))
    assert len(ca & cb) / len(ca) > 0.9


@given(st.binary(max_size=5000))
def test_memory_round_trip_any_bytes(data):
    s = MemoryStore()
    assert s.read_bytes(s.add_bytes(data)) == data


def _flip_byte(path, offset=-1):
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_loose_object_is_detected(tmp_path):
    store = LocalStore(tmp_path / "objects", tmp_path / "tmp")
    oid = store.add_bytes(b"precious weights")
    _flip_byte(store._path(oid))
    with pytest.raises(CorruptObject) as err:
        store.read_bytes(oid)
    assert oid.hex in str(err.value) and str(store._path(oid)) in str(err.value)
    assert err.value.expected == oid.hex
    problems = store.check(oid)
    assert len(problems) == 1 and oid.hex in problems[0]


def test_corrupt_chunk_is_detected_before_last_block(tmp_path):
    store = LocalStore(tmp_path / "objects", tmp_path / "tmp")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(CHUNK_THRESHOLD + 1000))
    oid = store.add_file(big)
    chunk = store.children(oid)[3]
    _flip_byte(store._path(chunk), 10)
    blocks = store.iter_content(oid)
    with pytest.raises(CorruptObject):
        for _ in blocks:
            pass
    assert store.check(chunk) and store.check(oid)


def test_stored_files_are_read_only(tmp_path):
    store = LocalStore(tmp_path / "objects", tmp_path / "tmp")
    oid = store.add_bytes(b"x")
    assert not os.stat(store._path(oid)).st_mode & 0o222


# -- big files: windowed chunking (odb._store_chunks) -----------------------------------------


@given(
    parts=st.lists(
        st.tuples(st.integers(1, 200_000), st.sampled_from(["random", "zeros", "text"])),
        min_size=1,
        max_size=30,
    ),
    window=st.sampled_from([1 << 18, (1 << 18) + 4097, 1 << 20]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=15, deadline=None)
def test_windowed_chunks_equal_one_pass_over_the_file(parts, window, seed, monkeypatch_module):
    """Whatever the window, a file's chunks are those of one streaming FastCDC pass, and its
    id is the BLAKE3 of all of it: the cut carried over a window's end changes nothing."""
    import random
    import tempfile

    from mlvc.store import odb

    rnd = random.Random(seed)
    data = b"".join(
        rnd.randbytes(n) if kind == "random" else bytes(n) if kind == "zeros" else
        (b"a,b,c\n%d,%d\n" % (n, seed)) * (n // 10 + 1)
        for n, kind in parts
    )  # fmt: skip
    data += rnd.randbytes(max(0, CHUNK_THRESHOLD + 1 - len(data)))  # big enough to chunk
    monkeypatch_module.setattr(odb, "WINDOW", window)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f")
        with open(path, "wb") as f:
            f.write(data)
        s = MemoryStore()
        oid = s.add_file(path)
        want = [blake3.blake3(bytes(c)).digest() for c in odb.iter_chunks(path)]
    assert bytes(oid) == blake3.blake3(data).digest()
    assert [bytes(c) for c in s.children(oid)] == want
    assert s.read_bytes(oid) == data


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_a_file_growing_while_it_is_chunked_is_read_again_or_refused(tmp_path, monkeypatch):
    """A writer appending between windows changes the file's stamp: never a mixed id."""
    from mlvc.errors import FileChanged
    from mlvc.store import odb

    path = tmp_path / "grow.bin"
    path.write_bytes(os.urandom(CHUNK_THRESHOLD * 2))
    monkeypatch.setattr(odb, "WINDOW", 1 << 20)
    real = MemoryStore._store
    grew = []

    def store_and_grow(self, oid, data, comp=None):
        with open(path, "ab") as f:  # keeps growing through every retry
            f.write(b"x" * 10)
        grew.append(1)
        return real(self, oid, data) if comp is None else real(self, oid, data, comp)

    monkeypatch.setattr(MemoryStore, "_store", store_and_grow)
    s = MemoryStore()
    with pytest.raises(FileChanged):
        s.add_file(path)
    assert len(grew) > 3 * 64  # three whole tries, each past several windows


@pytest.mark.parametrize("pipeline", ["1", "0"])
def test_kill_9_while_storing_a_big_file_leaves_a_store_fsck_passes(
    tmp_path, monkeypatch, pipeline
):
    """A commit of a big file killed at several instants: no half object is ever read, the
    repository checks clean, and the file commits afterwards (chunks written by a helper
    thread, and inline)."""
    import signal
    import subprocess
    import sys
    import time

    from mlvc import Repo

    monkeypatch.setenv("MLVC_BIG_PIPELINE", pipeline)
    root = tmp_path / "proj"
    root.mkdir()
    Repo.init(root)
    big = root / "big.bin"
    big.write_bytes(os.urandom(48 << 20))
    code = (
        "import sys; from mlvc import Repo; r = Repo(sys.argv[1]); "
        "r.commit('big', data=['big.bin'], capture_env=False)"
    )
    for delay in (0.3, 0.8, 1.5):
        p = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=root)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert Repo(root).fsck() == []
    repo = Repo(root)
    rid = repo.commit("big", data=["big.bin"], cwd=root, capture_env=False)
    assert repo.fsck() == []
    out = tmp_path / "out"
    repo.checkout(rid.hex, to=out)
    assert blake3.blake3((out / "big.bin").read_bytes()).digest() == hash_file(big)
