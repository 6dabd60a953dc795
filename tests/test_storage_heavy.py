"""Heavy storage checks (``pytest -m heavy``): memory with a 4 GiB file, many small files."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlvc import Repo
from mlvc.odb import hash_file

pytestmark = pytest.mark.heavy
MLVC = str(Path(sys.executable).parent / "mlvc")


def peak_rss(args, cwd) -> int:
    """Run a command; its peak resident set in bytes (ru_maxrss from wait4)."""
    p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, p.stderr.read().decode()
    p.stderr.close()
    return usage.ru_maxrss * 1024


def test_commit_and_checkout_of_a_4gib_file_stay_under_300mb(project, tmp_path):
    big = project / "data" / "huge.bin"
    block = os.urandom(16 << 20)
    with open(big, "wb") as f:
        for i in range(256):  # 4 GiB, each 16 MiB block made distinct
            f.write(i.to_bytes(8, "little") + block[8:])
    commit_rss = peak_rss([MLVC, "commit", "-q", "--data", "data"], project)
    out = tmp_path / "out"
    checkout_rss = peak_rss([MLVC, "checkout", "-q", "HEAD", "--to", str(out)], project)
    assert commit_rss < 300 << 20, f"commit peaked at {commit_rss >> 20} MiB"
    assert checkout_rss < 300 << 20, f"checkout peaked at {checkout_rss >> 20} MiB"
    assert hash_file(out / "data" / "huge.bin") == hash_file(big)


def test_100k_unchanged_files_recommit_quickly(project):
    data = project / "data" / "many"
    for i in range(100_000):
        p = data / f"d{i // 1000:03d}" / f"f{i:06d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"%d\n" % i)
    repo = Repo(project)
    repo.commit("first", data=["data"])
    start = time.perf_counter()
    repo.commit("again", data=["data"])
    took = time.perf_counter() - start
    print(f"unchanged re-commit of 100,000 files: {took:.2f} s")
    assert took < 10  # about a second on an idle machine; generous for shared CI
    assert repo.fsck() == []
