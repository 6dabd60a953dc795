"""Request counts at scale: many small files in about one PUT per pack, and no-op push and
pull against a remote of a million objects in a few requests and under two seconds."""

from __future__ import annotations

import os
import time

import pytest
from remote_helpers import check_remote_consistent, commit, mlvc, mlvc_json, transport_for

from mlvc import Repo
from mlvc.remotes import format as fmt
from mlvc.store.pack.index import write_index
from mlvc.store.pack.store import PACK_MAGIC


def _many_small_files(project, n: int) -> None:
    folder = project / "data" / "many"
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"f{i:06d}.txt").write_bytes(b"row %d\n" % i + os.urandom(64))
    commit(project, "many", {}, "--name", "many")


def _push_small_files(project, url, n):
    _many_small_files(project, n)
    mlvc(project, "remote", "add", "origin", url)
    sent = mlvc_json(project, "push")
    assert sent["objects"] >= n
    # one PUT per pack, plus: listing, the pack's index, runs file, marker, refs read + CAS
    assert sent["requests"] <= sent["packs"] * 2 + 5, sent
    check_remote_consistent(url)
    return sent


def test_many_small_files_go_in_about_one_put_per_pack(project, remote_url):
    sent = _push_small_files(project, remote_url, 5_000)
    assert sent["packs"] == 1


@pytest.mark.heavy
def test_200k_small_files_go_in_about_one_put_per_pack(project, remote_url):
    _push_small_files(project, remote_url, 200_000)


def _add_a_million_objects(url: str, tmp_path) -> None:
    """A pack index of 1M synthetic ids written straight to the remote (the pack it names
    holds none of them: membership is all a no-op push or pull asks of it)."""
    ids = sorted(os.urandom(32) for _ in range(1_000_000))
    pack = PACK_MAGIC
    name = fmt.content_name(pack)
    pack_file = f"pack-{name}.pack"
    folder = tmp_path / "synthetic"
    folder.mkdir()
    idx = write_index(folder, "x.idx", [(pack_file, len(pack))],
                      ((oid, pack_file, 12, 1) for oid in ids), durable=False)  # fmt: skip
    t = transport_for(url)
    t.put(fmt.pack_path(name), pack)
    t.put(fmt.idx_path(name), idx)


def test_no_op_push_and_pull_against_a_million_objects(project, tmp_path, remote_url):
    commit(project, "one", {"data/w.bin": os.urandom(100_000)}, "--name", "base")
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    _add_a_million_objects(remote_url, tmp_path)
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", remote_url, clone)  # downloads the 52 MB index once
    mlvc(project, "fetch", "-q")  # so does the pusher
    start = time.perf_counter()
    pushed = mlvc_json(project, "push")
    push_s = time.perf_counter() - start
    start = time.perf_counter()
    pulled = mlvc_json(clone, "pull")
    pull_s = time.perf_counter() - start
    assert pushed["objects"] == 0 and pushed["requests"] <= 3 and push_s < 2.0, (pushed, push_s)
    assert pulled["fetch"]["objects"] == 0 and pulled["fetch"]["requests"] <= 3, pulled
    assert pull_s < 2.0, pull_s
    print(f"no-op push {pushed['requests']} requests {push_s:.2f}s; "
          f"no-op pull {pulled['fetch']['requests']} requests {pull_s:.2f}s")  # fmt: skip
    from mlvc.remotes.state import RemoteState

    state = RemoteState.load(transport_for(remote_url), "origin", clone / ".mlvc/remotes/origin")
    assert state.object_count() > 1_000_000
    assert Repo(clone).fsck() == []


def test_many_pushes_keep_the_listing_short(project, tmp_path, remote_url):
    mlvc(project, "remote", "add", "origin", remote_url)
    runs = []
    for i in range(18):
        runs.append(commit(project, f"r{i}", {f"f{i}.txt": f"{i}\n"}, "--name", f"r{i}"))
        mlvc(project, "push", "-q")
    files = transport_for(remote_url).listing("")
    assert sum(fmt.is_idx(p) for p in files) <= 2 and sum(fmt.is_runs(p) for p in files) <= 2
    check_remote_consistent(remote_url)
    clone = tmp_path / "clone"
    got = mlvc_json(tmp_path, "clone", remote_url, clone)
    assert sorted(got["fetch"]["runs"]) == sorted(runs)
    assert mlvc_json(project, "push")["requests"] == 1  # the merged files were cached
    assert Repo(clone).fsck() == []
