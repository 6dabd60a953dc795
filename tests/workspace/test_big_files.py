"""Big files through checkout and commit: kernel copies verified as they go, kill -9, a data
tree stored while the code and environment are captured."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import blake3
import pytest

from mlvc import Repo
from mlvc.errors import MlvcError
from mlvc.store.odb import CHUNK_THRESHOLD


def _mixed(size: int, seed: int = 3) -> bytes:
    """Random blocks (raw chunks) and CSV-like text (compressed chunks) in turn."""
    rnd = random.Random(seed)
    parts, n = [], 0
    while n < size:
        part = rnd.randbytes(700_000) if len(parts) % 2 else b"a,b,%d\n" % n * 40_000
        parts.append(part)
        n += len(part)
    return b"".join(parts)[:size]


def test_a_big_file_of_raw_and_compressed_chunks_checks_out_whole(project, repo, tmp_path):
    data = _mixed(3 * CHUNK_THRESHOLD + 12_345)
    (project / "data" / "big.bin").write_bytes(data)
    rid = repo.commit("big", data=["data"])
    repo.checkout(rid.hex, to=tmp_path / "out")
    got = (tmp_path / "out" / "data" / "big.bin").read_bytes()
    assert got == data
    assert [p.name for p in (tmp_path / "out" / "data").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("pipeline", ["1", "0"])
def test_kill_9_during_a_big_checkout_never_leaves_a_partial_file(tmp_path, monkeypatch, pipeline):
    """Killed at several instants, a checkout leaves the file whole or absent (its temp file
    may remain, named as one); the repository checks clean and the next checkout works
    (hashed behind the copy by a helper thread, and inline)."""
    monkeypatch.setenv("MLVC_BIG_PIPELINE", pipeline)
    root = tmp_path / "proj"
    root.mkdir()
    repo = Repo.init(root)
    data = os.urandom(96 << 20)
    (root / "big.bin").write_bytes(data)
    rid = repo.commit("big", data=["big.bin"], cwd=root, capture_env=False)
    want = blake3.blake3(data).digest()
    code = (
        "import sys; from mlvc import Repo; Repo(sys.argv[1]).checkout(sys.argv[2], to=sys.argv[3])"
    )
    for i, delay in enumerate((0.4, 0.9, 1.6)):
        out = tmp_path / f"out{i}"
        p = subprocess.Popen([sys.executable, "-c", code, str(root), rid.hex, str(out)])
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        target = out / "big.bin"
        if target.exists():
            assert blake3.blake3(target.read_bytes()).digest() == want
        for left in out.glob(".*") if out.exists() else []:
            assert ".mlvc-" in left.name and left.stat().st_size <= len(data)
        assert Repo(root).fsck() == []
    repo.checkout(rid.hex, to=tmp_path / "final")
    assert blake3.blake3((tmp_path / "final" / "big.bin").read_bytes()).digest() == want


def test_a_code_capture_error_waits_for_the_data_being_stored(project, repo, monkeypatch):
    """The data tree is stored on a helper thread while the code is captured: an error in
    the code capture is raised after the helper has finished (nothing is written once the
    commit has given up), and the store checks clean."""
    from mlvc.capture import files

    (project / "data" / "big.bin").write_bytes(os.urandom(2 * CHUNK_THRESHOLD))

    def broken(*_a, **_k):
        time.sleep(0.05)
        raise MlvcError("the code listing failed")

    monkeypatch.setattr(files, "code_files", broken)
    monkeypatch.setattr("mlvc.capture.code_files", broken)
    with pytest.raises(MlvcError, match="code listing failed"):
        repo.commit("boom", data=["data"])
    assert not [t for t in threading.enumerate() if t.name.startswith("mlvc-data")]
    assert repo.fsck() == []


def test_a_data_error_on_the_helper_thread_is_the_commit_error(project, repo, monkeypatch):
    """A big data file that fails half way through (an I/O error on the helper thread) fails
    the commit with the one-line error naming it, and the store checks clean."""
    import errno

    from mlvc.store.pack.store import PackedStore

    bad = project / "data" / "disk.bin"
    bad.write_bytes(os.urandom(2 * CHUNK_THRESHOLD))

    def failing(self, f):
        raise OSError(errno.EIO, "Input/output error", f.name)

    monkeypatch.setattr(PackedStore, "_store_chunks", failing)
    with pytest.raises(MlvcError, match="disk.bin"):
        repo.commit("io error", data=["data"])
    assert not [t for t in threading.enumerate() if t.name.startswith("mlvc-data")]
