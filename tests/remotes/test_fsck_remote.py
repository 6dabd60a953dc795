"""`mlvc fsck --remote NAME`: a remote checked through its transport, on a folder, on moto
S3 and on an mlvc server; each kind of damage named on one line, exit 9; orphan packs of
interrupted pushes listed and pruned only past the grace period."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from remote_helpers import commit, mlvc, remote_files, transport_for

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.remotes import format as fmt
from mlvc.remotes.state import RemoteState
from mlvc.store.pack.index import write_index
from mlvc.store.pack.store import HEAD, PACK_MAGIC


def _pushed(project, url) -> str:
    run = commit(project, "one", {"data/w.bin": os.urandom(200_000)}, "--name", "base")
    mlvc(project, "remote", "add", "origin", url)
    mlvc(project, "push", "-q")
    return run


def _fsck(project, code: int, *extra) -> dict:
    out = mlvc(project, "fsck", "--remote", "origin", *extra, "--json", code=code)
    if code:  # the report, then the error line (stderr, mixed in by CliRunner)
        out, _, error = out.rpartition("}\n")
        out += "}"
        assert "fsck found problems" in error or "problem(s) found" in error, error
    return json.loads(out)


def _one_pack(url) -> str:
    (pack,) = [p for p in remote_files(url) if fmt.is_pack(p)]
    return pack


def test_a_clean_remote_has_no_problems(project, remote_url):
    commit(project, "one", {"data/w.bin": os.urandom(200_000)}, "--name", "base")
    big = os.urandom(5 << 20)  # chunked: a chunk list and its chunks
    commit(project, "two", {"data/big.bin": big}, "--name", "base")
    mlvc(project, "tag", "base", "best")
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    files = remote_files(remote_url)
    rep = _fsck(project, 0)
    assert rep["problems"] == [] and rep["orphans"] == []
    assert rep["runs"] == 2 and rep["refs"] == 2 and rep["packs"] == 1
    indexed = RemoteState.load(transport_for(remote_url), "origin", project.parent / "c")
    assert rep["objects"] == indexed.object_count() > 50  # 5 MiB in chunks of 16-256 KiB
    assert rep["bytes_checked"] == sum(s for p, s in files.items() if fmt.is_pack(p))
    # bounded reads: 8 MiB windows, so a 5 MiB pack takes one; idx, runs, refs, marker, list
    assert rep["requests"] <= 12, rep
    out = mlvc(project, "fsck", "--remote", "origin")
    assert "ok: no problems found" in out and "2 runs, 2 refs" in out


def test_a_flipped_byte_in_a_record_is_named(project, remote_url):
    _pushed(project, remote_url)
    t = transport_for(remote_url)
    pack = _one_pack(remote_url)
    data = bytearray(t.get(pack))
    data[len(data) // 2] ^= 0x01  # inside the 200 kB file's record
    t.put(pack, bytes(data))
    rep = _fsck(project, 9)
    (line,) = rep["problems"]
    assert pack in line and "is damaged (content does not match its id)" in line
    out = mlvc(project, "fsck", "--remote", "origin", code=9)
    lines = out.splitlines()  # the problem, the summary, the error
    assert len(lines) == 3 and pack in lines[0] and lines[1].startswith("remote origin: 10 obj")


def test_a_truncated_pack_is_named(project, remote_url):
    _pushed(project, remote_url)
    t = transport_for(remote_url)
    pack = _one_pack(remote_url)
    data = t.get(pack)
    t.put(pack, data[: len(data) // 2])
    rep = _fsck(project, 9)
    assert any(f"pack {pack} is truncated: {len(data) // 2} bytes" in p for p in rep["problems"])
    assert len(rep["problems"]) == 1, rep["problems"]  # the lost objects are not listed again


def test_a_damaged_index_is_named(project, remote_url):
    run = _pushed(project, remote_url)
    t = transport_for(remote_url)
    (idx,) = [p for p in remote_files(remote_url) if fmt.is_idx(p)]
    data = bytearray(t.get(idx))
    data[40] ^= 0xFF
    t.put(idx, bytes(data))
    rep = _fsck(project, 9)
    assert f"remote origin: {idx} is damaged (its checksum does not match)" in rep["problems"]
    # what it indexed is no longer on the remote: the run is named too; the pack is not an
    # orphan (an index of its name exists) so no prune could remove it
    assert any(f"run {Repo(project).resolve(run).hex}" in p for p in rep["problems"])
    assert rep["orphans"] == []


def _run_without_its_tree(project, remote_url, tmp_path) -> tuple[ObjectId, bytes]:
    """A remote with a pack holding a run record alone (not its new data tree), its index
    and a runs file naming it: (the run's id, that runs file)."""
    _pushed(project, remote_url)
    run2 = commit(project, "two", {"data/more.bin": os.urandom(50_000)}, "--name", "second")
    repo = Repo(project)
    rid = repo.resolve(run2)
    t = transport_for(remote_url)
    _send(t, repo, [rid], tmp_path)
    runs = fmt.encode_runs([rid])
    t.put(fmt.runs_path(fmt.content_name(runs)), runs)
    return rid, runs


def test_a_run_whose_tree_is_missing_is_named(project, remote_url, tmp_path):
    rid, runs = _run_without_its_tree(project, remote_url, tmp_path)
    rep = _fsck(project, 9)
    missing = [p for p in rep["problems"] if rid.hex in p]
    assert missing and all("is missing" in p for p in missing), rep["problems"]
    assert any(p.split()[2] == "tree" for p in missing), missing
    assert all(fmt.runs_path(fmt.content_name(runs)) in p for p in missing)


def test_refs_json_naming_a_missing_object_is_named(project, remote_url):
    _pushed(project, remote_url)
    t = transport_for(remote_url)
    ghost = "ab" * 32
    t.put(fmt.REFS, fmt.encode_refs({"names/base": ghost}))
    rep = _fsck(project, 9)
    assert rep["problems"] == [
        f"remote origin: ref names/base in refs.json ({ghost}) is not on the remote"
    ]
    t.put(fmt.REFS, b"{garbled")
    rep = _fsck(project, 9)
    assert any("refs.json is not valid JSON" in p for p in rep["problems"])


def test_garbled_files_are_reported_not_crashed_on(project, remote_url):
    _pushed(project, remote_url)
    t = transport_for(remote_url)
    t.put("packs/runs-" + "0" * 32 + ".runs", b"not a run id\n")
    t.put("packs/pack-" + "1" * 32 + ".idx", b"MLVCIDX1" + os.urandom(100))
    t.put(fmt.MARKER, b"\x00\xff")
    rep = _fsck(project, 9)
    text = "\n".join(rep["problems"])
    assert "runs-0000" in text and "is damaged" in text
    assert "pack-1111" in text and "checksum" in text
    assert "mlvc-remote.json is not" in text
    assert len(rep["problems"]) == 3, text


def _send(t, repo: Repo, ids, tmp: Path) -> str:
    """A pack of these objects' records, then its index (what a push sends)."""
    body = bytearray(PACK_MAGIC)
    entries = []
    for oid in sorted(ids):
        rec = repo.ctx.store._record(ObjectId(oid))
        body += HEAD.pack(oid, len(rec))
        entries.append((bytes(oid), len(body), len(rec)))
        body += rec
    h = fmt.content_name(bytes(body))
    name = fmt.pack_path(h)[len(fmt.PACKS) :]
    t.put(fmt.pack_path(h), bytes(body))
    tmp.mkdir(parents=True, exist_ok=True)
    idx = write_index(tmp, f"{h}.idx", [(name, len(body))],
                      ((o, name, off, n) for o, off, n in entries), durable=False)  # fmt: skip
    t.put(fmt.idx_path(h), idx)
    return fmt.pack_path(h)


def test_orphan_packs_are_listed_and_pruned_only_past_grace(project, remote_url, tmp_path):
    _pushed(project, remote_url)
    t = transport_for(remote_url)
    orphan = fmt.pack_path("e" * 32)
    t.put(orphan, PACK_MAGIC + b"x" * 1000)  # an interrupted push: a pack, no index yet
    rep = _fsck(project, 0)
    assert rep["problems"] == []
    (o,) = rep["orphans"]
    assert o["pack"] == orphan and o["bytes"] == 1012 and not o["pruned"]
    assert o["age_s"] is not None and o["age_s"] < 600
    out = mlvc(project, "fsck", "--remote", "origin")
    assert f"orphan pack (interrupted push): {orphan}, 1012 bytes" in out
    # young: kept by --prune-orphans with the default grace of a day
    rep = _fsck(project, 0, "--prune-orphans")
    assert not rep["orphans"][0]["pruned"] and orphan in remote_files(remote_url)
    if remote_url.startswith("file://"):  # a day old: pruned with the default grace
        path = Path(remote_url[len("file://") :]) / orphan
        old = time.time() - 2 * 86400
        os.utime(path, (old, old))
        rep = _fsck(project, 0, "--prune-orphans")
    else:  # moto keeps its own times: past a grace of 0 seconds instead
        rep = _fsck(project, 0, "--prune-orphans", "--orphan-grace", "0")
    assert rep["orphans"][0]["pruned"] and orphan not in remote_files(remote_url)
    assert _fsck(project, 0)["orphans"] == []
    # a pushed pack is never an orphan, however old
    assert any(fmt.is_pack(p) for p in remote_files(remote_url))
    state_ok = RemoteState.load(t, "origin", tmp_path / "cache")
    assert state_ok.runs


def test_prune_orphans_needs_remote(project):
    out = mlvc(project, "fsck", "--prune-orphans", code=2)
    assert "--prune-orphans needs --remote" in out


# -- an mlvc server remote -------------------------------------------------------------------

_spec = importlib.util.spec_from_file_location(
    "server_conftest", Path(__file__).parents[1] / "server" / "conftest.py"
)
_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_server)


def test_fsck_of_a_server_remote(project, tmp_path, monkeypatch):
    server = _server.start_server(_server.new_repo(tmp_path / "srv"))
    try:
        monkeypatch.setenv("MLVC_REMOTE_TOKEN_ORIGIN", server.tokens["write"])
        commit(project, "one", {"data/w.bin": os.urandom(200_000)}, "--name", "base")
        mlvc(project, "remote", "add", "origin", server.url)
        mlvc(project, "push", "-q")
        rep = _fsck(project, 0)
        assert rep["problems"] == [] and rep["runs"] == 1 and rep["refs"] == 1
        assert rep["objects"] >= 5 and rep["bytes_checked"] > 200_000
        # a pack damaged in the server's store is named through the remote API
        packs = sorted((server.root / ".mlvc" / "objects" / "pack").glob("pack-*.pack"),
                       key=lambda p: p.stat().st_size)  # fmt: skip
        biggest = packs[-1]
        os.chmod(biggest, 0o644)
        data = bytearray(biggest.read_bytes())
        data[len(data) // 2] ^= 0x01
        biggest.write_bytes(bytes(data))
        rep = _fsck(project, 9)
        assert len(rep["problems"]) == 1 and biggest.name in rep["problems"][0]
        assert "is damaged" in rep["problems"][0]
        data[len(data) // 2] ^= 0x01  # whole again, for the server's own stop
        biggest.write_bytes(bytes(data))
    finally:
        server.stop()


def test_small_windows_read_the_same(project, remote_url, monkeypatch):
    """Records straddling the bounded reads' windows are checked the same; reads stay small."""
    from mlvc.remotes import check

    commit(project, "one", {"data/w.bin": os.urandom(200_000), "data/s.txt": "x" * 5000})
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    whole = _fsck(project, 0)
    monkeypatch.setattr(check, "WINDOW", 4096)
    small = _fsck(project, 0)
    assert small["objects"] == whole["objects"] and small["problems"] == []
    assert small["bytes_checked"] == whole["bytes_checked"]
    assert small["requests"] >= whole["requests"] + small["bytes_checked"] // 4096 - 1
    t = transport_for(remote_url)
    pack = _one_pack(remote_url)
    data = bytearray(t.get(pack))
    data[-3] ^= 0x01  # the last record
    t.put(pack, bytes(data))
    (line,) = _fsck(project, 9)["problems"]
    assert pack in line and "is damaged" in line


def test_a_push_killed_after_its_pack_leaves_an_orphan_not_damage(project, tmp_path):
    from remote_helpers import mlvc_proc

    url = "file://" + str(tmp_path / "remote")
    _pushed(project, url)
    commit(project, "two", {"data/more.bin": os.urandom(100_000)}, "--name", "base")
    proc = mlvc_proc(project, "push", "-q", env={"MLVC_FAULT": "push-pack-sent"})
    proc.communicate(timeout=60)
    assert proc.returncode == -9
    rep = _fsck(project, 0)
    assert rep["problems"] == [] and len(rep["orphans"]) == 1 and rep["runs"] == 1
    assert rep["orphans"][0]["bytes"] > 100_000
    mlvc(project, "push", "-q")  # the resumed push indexes the pack: no orphan any more
    rep = _fsck(project, 0)
    assert rep["problems"] == [] and rep["orphans"] == [] and rep["runs"] == 2


def test_no_prune_while_an_index_is_damaged(project, tmp_path):
    """A damaged merged index may be the only one covering a pack: until it is whole, no
    pack counts as prunable, however old."""
    url = "file://" + str(tmp_path / "remote")
    _pushed(project, url)
    t = transport_for(url)
    orphan = fmt.pack_path("e" * 32)
    t.put(orphan, PACK_MAGIC)
    old = time.time() - 2 * 86400
    os.utime(tmp_path / "remote" / orphan, (old, old))
    t.put(fmt.idx_path("f" * 32), b"garbage")
    rep = _fsck(project, 9, "--prune-orphans")
    assert not rep["orphans"][0]["pruned"] and "index file is damaged" in rep["orphans"][0]["kept"]
    assert orphan in remote_files(url)


def test_an_index_placing_a_record_past_the_pack_end_is_named(project, tmp_path):
    url = "file://" + str(tmp_path / "remote")
    _pushed(project, url)
    t = transport_for(url)
    pack = _one_pack(url)
    (idx,) = [p for p in remote_files(url) if fmt.is_idx(p)]
    local = tmp_path / "old.idx"
    local.write_bytes(t.get(idx))
    from mlvc.store.pack.index import PackIndex

    old = PackIndex(local)
    size = remote_files(url)[pack]
    name = pack[len(fmt.PACKS) :]
    entries = [(o, p, off, n) for o, p, off, n in old.entries()]
    o, p, off, n = entries[-1]
    entries[-1] = (o, p, off, size * 10)  # a hostile length, within a pack said whole
    new = write_index(tmp_path, "new.idx", [(name, size)], entries, durable=False)
    t.put(idx, new.read_bytes())
    problems = _fsck(project, 9)["problems"]
    assert any("past the pack's end" in x and o.hex() in x for x in problems), problems


def test_a_run_whose_tree_is_missing_is_not_fetched(project, remote_url, tmp_path):
    # the same damaged remote: a clone stops with the damage named, and publishes no run
    rid, _runs = _run_without_its_tree(project, remote_url, tmp_path)
    out = mlvc(tmp_path, "clone", remote_url, tmp_path / "copy", code=1)
    assert "lacks object" in out and "damaged" in out and "Traceback" not in out
    copy = tmp_path / "copy"
    if (copy / ".mlvc").exists():
        assert rid.hex not in mlvc(copy, "log")
        assert Repo(copy).fsck() == []
