"""clone --lazy: runs and small files now, large files when first read."""

from __future__ import annotations

import os

from remote_helpers import commit, mlvc, mlvc_json

from mlvc import Repo
from mlvc.core.ids import ObjectId


def test_lazy_clone_fetches_large_files_when_read(project, tmp_path, remote_url):
    big, mid = os.urandom(6 << 20), os.urandom(2 << 20)  # chunked / one record, both lazy
    run = commit(project, "one", {"big.bin": big, "data/mid.bin": mid}, "--name", "base",
                 "-p", "lr=0.1", "-M", "acc=0.9")  # fmt: skip
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    clone = tmp_path / "clone"
    got = mlvc_json(tmp_path, "clone", "--lazy", remote_url, clone)["fetch"]
    assert got["runs"] == [run] and got["promised"] == 2
    assert got["bytes_received"] < 1 << 20  # the 8 MiB stayed on the remote
    theirs = Repo(clone)
    assert theirs.show("base")["params"] == {"lr": 0.1}  # records and trees are here
    assert theirs.fsck() == []  # promised objects count as present on the remote
    theirs.gc(grace=0)  # and gc neither fails on them nor fetches them
    mid_id = ObjectId.of(mid)
    assert theirs.store.has(mid_id) and not theirs.store.present(mid_id)
    assert b"".join(theirs.cat("base:data/mid.bin")) == mid  # `mlvc show RUN:PATH` reads it
    assert theirs.store.present(mid_id)
    out = tmp_path / "out"
    mlvc(clone, "checkout", "base", "--to", out)  # reads them: fetched, verified
    assert (out / "big.bin").read_bytes() == big
    assert (out / "data" / "mid.bin").read_bytes() == mid
    assert Repo(clone).fsck() == []


def test_lazy_clone_pulls_lazily_afterwards(project, tmp_path):
    url = "file://" + str(tmp_path / "remote")
    commit(project, "one", {"a.txt": "a"}, "--name", "base")
    mlvc(project, "remote", "add", "origin", url)
    mlvc(project, "push", "-q")
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", "--lazy", url, clone)
    commit(project, "two", {"w.bin": os.urandom(3 << 20)}, "--name", "base")
    mlvc(project, "push", "-q")
    got = mlvc_json(clone, "pull")["fetch"]
    assert got["promised"] == 1 and got["bytes_received"] < 1 << 20
    assert Repo(clone).fsck() == []
