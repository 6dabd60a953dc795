"""An `mlvc server` as a remote: the bucket layout over /api/v1/remote, driven through
``ServerTransport`` (and raw HTTP for what a hostile client sends) against a real server
process; what a push leaves is checked through the server's own `mlvc log`, `query`,
`show`, `fsck` and /api/v1.

The server process comes from tests/server/conftest.py (``start_server``: a fresh repository
with write, read and admin tokens), loaded by path: a conftest of another folder is not
importable by name. Packs are built here from a local repository's records, as a push
builds them (sorted ids, the raw records, named by their BLAKE3).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import random
import socket
import threading
import time
from pathlib import Path

import pytest
from blake3 import blake3

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.errors import MissingOnRemote, RemoteError
from mlvc.remotes.http import ServerTransport
from mlvc.store.pack.index import PackIndex, write_index
from mlvc.store.pack.store import HEAD, PACK_MAGIC

_spec = importlib.util.spec_from_file_location(
    "server_conftest", Path(__file__).parents[1] / "server" / "conftest.py"
)
_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_server)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module; its repository has one run of its own, named ``home``."""
    root = _server.new_repo(tmp_path_factory.mktemp("server"))
    server = _server.start_server(root)
    server.mlvc("commit", "-m", "made on the server", "--name", "home")
    yield server
    server.stop()
    assert "Traceback" not in server.server_log(), server.server_log()[-5000:]
    fsck = server.mlvc("fsck", ok=False)
    assert fsck.returncode == 0, f"fsck found problems:\n{fsck.stdout}{fsck.stderr}"


def transport(srv, scope: str = "write", name: str = "origin") -> ServerTransport:
    return ServerTransport(srv.url, srv.tokens.get(scope, scope), name=name)


# -- a local repository and the packs a push would send ------------------------------------


def local_repo(tmp_path: Path, name: str, big: bool = False) -> tuple[Repo, str]:
    """A repository with one run named ``name`` (with a 5 MiB file, stored chunked, if
    ``big``); returns (repo, run id)."""
    root = tmp_path / f"client-{name}"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(f"print({name!r})\n")
    (root / "data" / "rows.csv").write_text(f"x,y\n1,{name}\n")
    if big:
        (root / "data" / "big.bin").write_bytes(random.Random(name).randbytes(5 << 20))
    repo = Repo.init(root)
    run = repo.commit(f"run {name}", name=name, data=["data"], params={"lr": 0.1},
                      metrics={"acc": 0.9}, cwd=root, capture_env=False)  # fmt: skip
    repo.ctx.store.sync()
    return repo, str(run)


def closure(repo: Repo, *roots: str) -> list[bytes]:
    from mlvc.maintenance.gc import reachable

    return sorted(reachable(repo.ctx.store, {ObjectId.parse(r) for r in roots}))


def build_pack(repo: Repo, ids: list[bytes]) -> tuple[str, bytes, list]:
    """(name, bytes, index entries) of a pack of ``ids``' raw records, in id order."""
    body = bytearray(PACK_MAGIC)
    at = []
    for oid in sorted(ids):
        rec = repo.ctx.store._get_record(ObjectId(oid))
        at.append((oid, len(body) + HEAD.size, len(rec)))
        body += HEAD.pack(oid, len(rec)) + rec
    name = f"pack-{blake3(bytes(body)).hexdigest()[:32]}.pack"
    return name, bytes(body), [(oid, name, off, n) for oid, off, n in at]


def build_index(tmp_path: Path, name: str, size: int, entries: list) -> bytes:
    folder = tmp_path / "idx"
    folder.mkdir(exist_ok=True)
    idx = name[: -len(".pack")] + ".idx"
    return write_index(folder, idx, [(name, size)], entries, durable=False).read_bytes()


def push_run(t: ServerTransport, tmp_path: Path, repo: Repo, run: str) -> str:
    """Pack, index and run set of one run, in the order a push writes them."""
    name, pack, entries = build_pack(repo, closure(repo, run))
    t.put(f"packs/{name}", pack)
    t.put(f"packs/{name[:-5]}.idx", build_index(tmp_path, name, len(pack), entries))
    t.put(f"packs/runs-{name[5:-5]}.runs", (run + "\n").encode())
    return name


def raw(srv, method: str, path: str, body: bytes | None = None, token: str | None = "write",
        headers: dict | None = None):  # fmt: skip
    status, out, got = srv.call(method, path, token=token, raw=body, headers=headers)
    return status, out, {k.lower(): v for k, v in got.items()}


def missing_on_server(srv, ids) -> set[str]:
    status, out, _h = srv.call("POST", "/api/v1/objects/missing",
                               {"ids": [ObjectId(i).hex for i in ids]}, token="read")  # fmt: skip
    assert status == 200, out
    return set(out["missing"])


def leftovers(srv) -> list[str]:
    tmp = srv.root / ".mlvc" / "tmp"
    return sorted(p.name for p in tmp.glob("remote-put-*")) if tmp.exists() else []


# -- reading: the listing, files, ranges ----------------------------------------------------


def test_the_listing_names_the_servers_packs_indexes_runs_and_refs_in_one_request(srv):
    t = transport(srv, "read")
    files = t.listing()
    assert t.requests == 1
    assert files["mlvc-remote.json"] == len(t.get("mlvc-remote.json"))
    assert json.loads(t.get("mlvc-remote.json")) == {"format": 1}
    pack_dir = srv.root / ".mlvc" / "objects" / "pack"
    idxs = [p for p in files if p.endswith(".idx")]
    assert idxs
    for path in idxs:  # each index names only packs the listing has, at their real size
        local = tmp = pack_dir / path.split("/")[1]
        assert files[path] == local.stat().st_size
        tmp = srv.root.parent / path.split("/")[1]
        tmp.write_bytes(t.get(path))
        idx = PackIndex(tmp)
        assert idx.checksum_ok()
        for pack, size in zip(idx.packs, idx.sizes, strict=True):
            assert files[f"packs/{pack}"] == size == (pack_dir / pack).stat().st_size
    runs = [p for p in files if p.endswith(".runs")]
    assert len(runs) == 1
    listed = t.get(runs[0]).decode().split()
    assert listed == sorted(listed)
    assert set(listed) == {p.name for p in (srv.root / ".mlvc" / "refs" / "runs").iterdir()}
    assert runs[0] == f"packs/runs-{blake3(t.get(runs[0])).hexdigest()[:32]}.runs"
    doc = json.loads(t.get("refs.json"))
    assert doc["format"] == 1 and doc["refs"]["names/home"] in listed
    assert not [k for k in doc["refs"] if k.startswith("runs/") or k == "HEAD"]
    assert t.listing("packs/") == {k: v for k, v in files.items() if k.startswith("packs/")}


def test_a_record_read_by_range_from_a_listed_pack_is_the_object(srv):
    t = transport(srv, "read")
    files = t.listing("packs/")
    idx_path = next(p for p in files if p.endswith(".idx"))
    local = srv.root.parent / ("r-" + idx_path.split("/")[1])
    local.write_bytes(t.get(idx_path))
    idx = PackIndex(local)
    oid, pack, off, n = next(idx.entries())
    before = t.requests
    record = t.get_range(f"packs/{pack}", off - HEAD.size, HEAD.size + n)
    assert t.requests == before + 1 and t.bytes_in >= len(record)
    assert HEAD.unpack(record[: HEAD.size]) == (oid, n)
    store = Repo(srv.root).ctx.store
    assert record[HEAD.size :] == store._get_record(ObjectId(oid))
    whole = t.get(f"packs/{pack}")
    assert whole[:12] == PACK_MAGIC and len(whole) == files[f"packs/{pack}"]
    assert t.get_range(f"packs/{pack}", 3, 100) == whole[3:103]


def test_ranges_follow_http(srv):
    t = transport(srv, "read")
    pack = next(p for p in t.listing("packs/") if p.endswith(".pack"))
    whole = t.get(pack)
    size = len(whole)
    path = f"/api/v1/remote/{pack}"
    status, body, h = raw(srv, "GET", path, token="read", headers={"Range": "bytes=-10"})
    assert (status, body, h["content-range"]) == (
        206,
        whole[-10:],
        f"bytes {size - 10}-{size - 1}/{size}",
    )
    status, body, _h = raw(srv, "GET", path, token="read", headers={"Range": "bytes=5-"})
    assert (status, body) == (206, whole[5:])
    status, body, _h = raw(srv, "GET", path, token="read", headers={"Range": f"bytes=0-{size * 2}"})
    assert (status, body) == (206, whole)  # a last byte past the end is the end
    status, body, h = raw(srv, "GET", path, token="read", headers={"Range": f"bytes={size}-"})
    assert status == 416 and h["content-range"] == f"bytes */{size}"
    for garbage in ("bytes=a-b", "lines=1-2", "bytes=1-2,5-6", "bytes=-", "bytes=9-3"):
        status, body, _h = raw(srv, "GET", path, token="read", headers={"Range": garbage})
        assert status in (400, 416), (garbage, status)
        assert "range" in body["message"].lower()
    status, body, h = raw(srv, "HEAD", path, token="read")
    assert status == 200 and int(h["content-length"]) == size and body == b""


def test_missing_files_are_missing_on_remote(srv):
    t = transport(srv, "read")
    for path in ("packs/pack-0123.pack", "packs/pack-0123.idx", "packs/runs-0123.runs",
                 "nothing.txt", "packs/../refs.json"):  # fmt: skip
        with pytest.raises(MissingOnRemote, match="no "):
            t.get(path)
    assert t.read_versioned("packs/pack-0123.idx") == (None, None)


# -- auth ----------------------------------------------------------------------------------


def test_tokens_are_required_and_scoped_and_errors_say_what_to_do(srv, tmp_path):
    with pytest.raises(RemoteError, match="401.*MLVC_REMOTE_TOKEN_ORIGIN"):
        ServerTransport(srv.url, None, name="origin").listing()
    with pytest.raises(RemoteError, match="MLVC_REMOTE_TOKEN_TEAM_A"):
        ServerTransport(srv.url, "mlvc_not-a-token", name="team-a").get("refs.json")
    reader = transport(srv, "read")
    assert reader.listing()
    with pytest.raises(RemoteError, match="403.*write token"):
        reader.put("packs/pack-aa.pack", PACK_MAGIC)
    with pytest.raises(RemoteError, match="403"):
        reader.put_if("refs.json", b"{}", None)
    for method in ("PUT",):
        assert raw(srv, method, "/api/v1/remote/refs.json", b"{}", token=None)[0] == 401
        assert raw(srv, method, "/api/v1/remote/refs.json", b"{}", token="read")[0] == 403
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        RemoteError, match=f"cannot reach the mlvc server at http://127.0.0.1:{port}"
    ):
        ServerTransport(f"http://127.0.0.1:{port}", "x").listing()
    with pytest.raises(RemoteError, match="no remote API"):
        ServerTransport(srv.url + "/elsewhere", srv.tokens["read"]).listing()


def test_delete_is_refused_and_index_deletes_are_no_ops(srv):
    t = transport(srv)
    idx = next(p for p in t.listing("packs/") if p.endswith(".idx"))
    before = t.requests
    t.delete(idx)  # the server merges its own indexes: nothing to ask
    assert t.requests == before and idx in t.listing("packs/")
    with pytest.raises(RemoteError, match="does not delete"):
        t.delete("refs.json")
    status, body, _h = raw(srv, "DELETE", f"/api/v1/remote/{idx}")
    assert status == 405
    assert idx in t.listing("packs/")


# -- writing: packs, indexes, run sets ------------------------------------------------------


def test_a_pushed_run_appears_in_the_servers_log_query_show_and_api(srv, tmp_path):
    repo, run = local_repo(tmp_path, "pushed", big=True)
    ids = closure(repo, run)
    assert missing_on_server(srv, ids)
    t = transport(srv)
    name, pack, entries = build_pack(repo, ids)
    chunked = [e for e in entries if repo.ctx.store._get_record(ObjectId(e[0]))[:1] == b"C"]
    assert chunked, "the 5 MiB file is stored as chunks: its record is a chunk list"
    t.put(f"packs/{name}", pack)
    assert missing_on_server(srv, ids) == set()
    assert t.bytes_out == len(pack)
    sent_idx = build_index(tmp_path, name, len(pack), entries)
    t.put(f"packs/{name[:-5]}.idx", sent_idx)
    assert run not in srv.mlvc("log", "--json").stdout  # objects alone are no run
    # the pack became one of the server's own, as sent: a client has nothing to download
    files = t.listing("packs/")
    assert files[f"packs/{name}"] == len(pack) and t.get(f"packs/{name[:-5]}.idx") == sent_idx
    t.put(f"packs/runs-{name[5:-5]}.runs", (run + "\n").encode())
    listed = (srv.root / ".mlvc" / "runlist").read_text().splitlines()
    assert run in [json.loads(line)[0] for line in listed]  # `log` needs not read the run
    log = json.loads(srv.mlvc("log", "--json").stdout)
    assert run in [r["id"] for r in log]
    q = srv.mlvc("query", "-f", "json", f"SELECT message FROM runs WHERE id = '{run}'").stdout
    assert "run pushed" in q
    status, out, _h = srv.call("GET", "/api/v1/runs", token="read")
    assert run in [r["id"] for r in out["runs"]]
    shown = json.loads(srv.mlvc("show", "--json", run).stdout)
    assert shown["params"]["lr"] == 0.1
    big = b"".join(Repo(srv.root).cat(f"{run}:data/big.bin"))  # read back, verified
    assert big == (repo.root / "data" / "big.bin").read_bytes()
    assert (srv.root / ".mlvc" / "refs" / "runs" / run).exists()
    runs_file = next(p for p in t.listing("packs/") if p.endswith(".runs"))
    assert run in t.get(runs_file).decode().split()
    # the same pack again stores nothing new (a resumed push)
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack)
    assert status == 201 and out["stored"] == 0 and out["records"] == len(ids)
    assert leftovers(srv) == []


def test_a_pack_with_a_flipped_byte_is_refused_whole_and_nothing_is_stored(srv, tmp_path):
    repo, run = local_repo(tmp_path, "flipped")
    ids = closure(repo, run)
    name, pack, entries = build_pack(repo, ids)
    lacking = missing_on_server(srv, ids)
    assert lacking
    # damage the last byte of a record the server lacks (a raw or compressed one)
    oid, _pack, off, n = next(e for e in entries if ObjectId(e[0]).hex in lacking
                              and pack[e[2]: e[2] + 1] != b"C")  # fmt: skip
    bad = bytearray(pack)
    bad[off + n - 1] ^= 0x01
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", bytes(bad))
    assert status == 400
    assert ObjectId(oid).hex in out["message"] and "nothing was stored" in out["message"]
    assert missing_on_server(srv, ids) == lacking
    with pytest.raises(RemoteError, match=f"400.*{ObjectId(oid).hex}"):
        transport(srv).put(f"packs/{name}", bytes(bad))
    # a record whose length runs past the end, and a pack without its header
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack[:-3])
    assert status == 400 and "past the end" in out["message"]
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", b"PK\x03\x04" + pack)
    assert status == 400 and "header" in out["message"]
    assert missing_on_server(srv, ids) == lacking
    assert leftovers(srv) == []


def pack_of(records: list[tuple[bytes, bytes]]) -> tuple[str, bytes]:
    """(name, bytes) of a pack of the given (id, record) pairs, as they are."""
    body = bytearray(PACK_MAGIC)
    for oid, rec in records:
        body += HEAD.pack(oid, len(rec)) + rec
    return f"pack-{blake3(bytes(body)).hexdigest()[:32]}.pack", bytes(body)


def chunked_file(repo: Repo, run: str) -> tuple[bytes, list[bytes]]:
    """(id of the run's chunked file, its chunk ids)."""
    store = repo.ctx.store
    listed = next(i for i in closure(repo, run) if store._get_record(ObjectId(i))[:1] == b"C")
    return listed, [bytes(c) for c in store.children(ObjectId(listed))]


def test_a_chunk_list_waits_for_the_chunks_a_later_pack_brings(srv, tmp_path):
    repo, run = local_repo(tmp_path, "chunky", big=True)
    listed, chunks = chunked_file(repo, run)
    t = transport(srv)
    # a push cuts packs in id order: the list may come before some of its chunks
    name, pack, entries = build_pack(repo, [listed, *chunks[1:]])
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack)
    assert status == 201 and out["waiting"] == 1
    assert missing_on_server(srv, [listed]) == {ObjectId(listed).hex}  # not before verified
    t.put(f"packs/{name[:-5]}.idx", build_index(tmp_path, name, len(pack), entries))
    name2, pack2, _e = build_pack(repo, [chunks[0]])
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name2}", pack2)
    assert status == 201
    assert missing_on_server(srv, [listed]) == set()
    content = b"".join(Repo(srv.root).ctx.store.iter_content(ObjectId(listed)))
    assert content == (repo.root / "data" / "big.bin").read_bytes()
    assert not list((srv.root / ".mlvc" / "tmp" / "remote-waiting").iterdir())


def test_a_chunk_list_whose_chunks_do_not_make_its_id_is_refused(srv, tmp_path):
    repo, run = local_repo(tmp_path, "liar", big=True)
    listed, chunks = chunked_file(repo, run)
    store = repo.ctx.store
    record = store._get_record(ObjectId(listed))
    fake = blake3(b"not the file").digest()
    with_chunks = [(c, store._get_record(ObjectId(c))) for c in chunks]
    # its chunks in the same pack: refused at once, nothing stored
    name, pack = pack_of([(fake, record), *with_chunks])
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack)
    assert (
        status == 400 and fake.hex() in out["message"] and "chunks put together" in out["message"]
    )
    assert missing_on_server(srv, [fake, *chunks]) == {ObjectId(i).hex for i in [fake, *chunks]}
    # its chunks in a later pack: it waits, then is dropped when they arrive
    name, pack = pack_of([(fake, record)])
    assert raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack)[0] == 201
    name, pack = pack_of(with_chunks)
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack)
    assert status == 400 and fake.hex() in out["message"] and "dropped" in out["message"]
    assert missing_on_server(srv, [fake]) == {fake.hex()}
    assert not list((srv.root / ".mlvc" / "tmp" / "remote-waiting").iterdir())
    # a list whose chunk is a chunk list itself
    name, pack = pack_of([(listed, record), (chunks[0], record)])
    status, out, _h = raw(srv, "PUT", f"/api/v1/remote/packs/{name}", pack)
    assert status == 400, out


def test_an_index_naming_objects_the_server_lacks_is_refused(srv, tmp_path):
    repo, run = local_repo(tmp_path, "indexonly")
    name, pack, entries = build_pack(repo, closure(repo, run))
    t = transport(srv)
    with pytest.raises(RemoteError, match="400.*is not stored here"):
        t.put(f"packs/{name[:-5]}.idx", build_index(tmp_path, name, len(pack), entries))
    with pytest.raises(RemoteError, match="400.*not an mlvc pack index"):
        t.put(f"packs/{name[:-5]}.idx", b"MLVCIDX1" + b"\x00" * 50)


def test_a_run_whose_objects_are_not_all_here_is_refused(srv, tmp_path):
    repo, run = local_repo(tmp_path, "partial")
    t = transport(srv)
    # only the run object: its trees and files stay behind
    name, pack, _e = build_pack(repo, [ObjectId.parse(run)])
    t.put(f"packs/{name}", pack)
    with pytest.raises(RemoteError, match=f"400.*run {run} needs object [0-9a-f]{{64}}.*"
                       "not stored here"):  # fmt: skip
        t.put("packs/runs-partial.runs", (run + "\n").encode())
    assert not (srv.root / ".mlvc" / "refs" / "runs" / run).exists()
    assert run not in srv.mlvc("log", "--json").stdout
    # a run the server never received, and a line that is no id
    other = "ab" * 32
    status, out, _h = raw(srv, "PUT", "/api/v1/remote/packs/runs-x.runs", f"{other}\n".encode())
    assert status == 409 and other in out["message"]
    status, out, _h = raw(srv, "PUT", "/api/v1/remote/packs/runs-x.runs", b"hello\n")
    assert status == 400 and "line 1" in out["message"]


def test_an_upload_cut_short_leaves_nothing(srv, tmp_path):
    repo, run = local_repo(tmp_path, "cut", big=True)
    ids = closure(repo, run)
    lacking = missing_on_server(srv, ids)
    name, pack, _e = build_pack(repo, ids)
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            f"PUT /api/v1/remote/packs/{name} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {srv.tokens['write']}\r\n"
            f"Content-Length: {len(pack)}\r\n\r\n".encode()
            + pack[: len(pack) // 2]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while leftovers(srv) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(srv) == []
    assert missing_on_server(srv, ids) == lacking


# -- refs.json: compare-and-swap ------------------------------------------------------------


def _with(doc: bytes | None, **refs: str) -> bytes:
    current = json.loads(doc)["refs"] if doc else {}
    for key, value in refs.items():
        key = key.replace("__", "/")
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    return json.dumps({"format": 1, "refs": current}).encode()


def test_refs_json_moves_a_name_by_compare_and_swap(srv, tmp_path):
    repo, run = local_repo(tmp_path, "named")
    t = transport(srv)
    push_run(t, tmp_path, repo, run)
    doc, token = t.read_versioned("refs.json")
    assert token and doc
    assert t.put_if("refs.json", _with(doc, names__champion=run, tags__best=run), token)
    won = t.last_token  # the token the write made: the next CAS may use it without a read
    assert srv.mlvc("show", "--json", "champion").stdout.count(run) >= 1
    assert json.loads(srv.mlvc("show", "--json", "best").stdout)["id"] == run
    doc2, token2 = t.read_versioned("refs.json")
    assert token2 == won != token and json.loads(doc2)["refs"]["names/champion"] == run
    # a writer holding the old token lost the race: 412, nothing moved
    home = json.loads(doc2)["refs"]["names/home"]
    assert not t.put_if("refs.json", _with(doc, names__champion=home), token)
    assert json.loads(t.get("refs.json"))["refs"]["names/champion"] == run
    # creating refs.json when it exists loses too
    assert not t.put_if("refs.json", _with(doc2), None)
    # the ref's reflog says who pushed, and the audit log has every write
    reflog = (srv.root / ".mlvc" / "logs" / "refs" / "names" / "champion").read_text()
    assert "write-user" in reflog
    audit = [
        json.loads(a) for a in (srv.root / ".mlvc" / "logs" / "audit.log").read_text().splitlines()
    ]
    writes = [(a["method"], a["status"]) for a in audit if a["path"] == "/api/v1/remote/refs.json"]
    assert ("PUT", 200) in writes and ("PUT", 412) in writes
    # an unchanged document changes nothing and keeps its token
    assert t.put_if("refs.json", doc2, token2)
    assert t.read_versioned("refs.json")[1] == token2
    # deleting a key deletes the ref (what writing a bucket's refs.json does)
    assert t.put_if("refs.json", _with(doc2, tags__best=None), token2)
    assert "tags/best" not in json.loads(t.get("refs.json"))["refs"]
    assert not (srv.root / ".mlvc" / "refs" / "tags" / "best").exists()


def test_two_writers_racing_on_one_name_get_one_winner(srv, tmp_path):
    repo, run = local_repo(tmp_path, "racer")
    push_run(transport(srv), tmp_path, repo, run)
    doc, token = transport(srv).read_versioned("refs.json")
    home = json.loads(doc)["refs"]["names/home"]
    results = []
    barrier = threading.Barrier(4)

    def write(value):
        t = transport(srv)
        barrier.wait()
        results.append((value, t.put_if("refs.json", _with(doc, names__race=value), token)))

    threads = [threading.Thread(target=write, args=(v,)) for v in (run, home, run, home)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    winners = [v for v, ok in results if ok]
    assert len(winners) == 1, results
    assert json.loads(transport(srv).get("refs.json"))["refs"]["names/race"] == winners[0]


def test_two_clients_pushing_different_runs_at_once_both_land(srv, tmp_path):
    repos = [local_repo(tmp_path, f"parallel{i}", big=i == 0) for i in range(2)]
    errors = []

    def push(i):
        repo, run = repos[i]
        t = transport(srv)
        try:
            push_run(t, tmp_path / str(i), repo, run)
            for _ in range(10):  # what mlvc push does on a lost race: read, merge, retry
                doc, token = t.read_versioned("refs.json")
                if t.put_if("refs.json", _with(doc, **{f"names__parallel{i}": run}), token):
                    return
            errors.append(f"client {i} never won")
        except Exception as e:  # the assertion below shows it
            errors.append(repr(e))

    for i in range(2):
        (tmp_path / str(i)).mkdir()
    threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    log = {r["id"] for r in json.loads(srv.mlvc("log", "--json").stdout)}
    refs = json.loads(transport(srv).get("refs.json"))["refs"]
    for i, (_repo, run) in enumerate(repos):
        assert run in log and refs[f"names/parallel{i}"] == run


def test_refs_json_may_only_name_what_the_server_holds(srv, tmp_path):
    t = transport(srv)
    doc, token = t.read_versioned("refs.json")
    absent = "cd" * 32
    with pytest.raises(RemoteError, match=f"409.*{absent}.*push the run first"):
        t.put_if("refs.json", _with(doc, names__ghost=absent), token)
    with pytest.raises(RemoteError, match="409.*not stored here"):
        t.put_if("refs.json", _with(doc, models__m__versions__1=absent), token)
    with pytest.raises(RemoteError, match="409.*does not hold"):
        t.put_if("refs.json", _with(doc, models__m__aliases__prod="ref: models/m/versions/7"),
                 token)  # fmt: skip
    assert t.read_versioned("refs.json")[1] == token  # nothing moved


def test_model_versions_and_aliases_travel_in_refs_json(srv, tmp_path):
    repo, run = local_repo(tmp_path, "modelled")
    t = transport(srv)
    push_run(t, tmp_path, repo, run)
    tree = Repo(srv.root).run(run).data.hex  # any tree whose objects are all here
    doc, token = t.read_versioned("refs.json")
    new = _with(doc, models__clf__versions__1=tree,
                models__clf__aliases__prod="ref: models/clf/versions/1")  # fmt: skip
    assert t.put_if("refs.json", new, token)
    status, out, _h = srv.call("GET", "/api/v1/models/clf", token="read")
    assert status == 200 and out["aliases"] == {"prod": 1}
    assert out["versions"][0]["trusted"] is False  # pushed pickles are not trusted here
    refs = json.loads(t.get("refs.json"))["refs"]
    assert refs["models/clf/versions/1"] == tree
    assert refs["models/clf/aliases/prod"] == "ref: models/clf/versions/1"
    # a version an alias still points at cannot go
    doc, token = t.read_versioned("refs.json")
    with pytest.raises(RemoteError, match="409.*does not hold"):
        t.put_if("refs.json", _with(doc, models__clf__versions__1=None), token)
    assert json.loads(t.get("refs.json"))["refs"]["models/clf/versions/1"] == tree


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"format": 2, "refs": {}}',
        b'{"format": 1, "refs": []}',
        b'{"format": 1, "refs": {"runs/' + b"a" * 64 + b'": "' + b"a" * 64 + b'"}}',
        b'{"format": 1, "refs": {"HEAD": "' + b"a" * 64 + b'"}}',
        b'{"format": 1, "refs": {"names/../../x": "' + b"a" * 64 + b'"}}',
        b'{"format": 1, "refs": {"names/.hidden": "' + b"a" * 64 + b'"}}',
        b'{"format": 1, "refs": {"names/ok": "zz"}}',
        b'{"format": 1, "refs": {"names/ok": 5}}',
        b'{"format": 1, "refs": {"models/m/versions/0": "' + b"a" * 64 + b'"}}',
        b'{"format": 1, "refs": {"models/m/aliases/a": "ref: models/other/versions/1"}}',
        b'{"format": 1, "refs": {"models/m/aliases/a": "ref: ../../../etc/passwd"}}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
    ],
)
def test_a_hostile_refs_json_is_a_400_naming_what_is_wrong(srv, body):
    status, out, _h = raw(srv, "PUT", "/api/v1/remote/refs.json", body,
                          headers={"If-None-Match": "*"})  # fmt: skip
    assert status == 400, out
    assert out["message"].startswith("refs")
    assert "\n" not in out["message"] and "Traceback" not in out["message"]


def test_refs_json_without_a_precondition_is_refused(srv):
    status, out, _h = raw(srv, "PUT", "/api/v1/remote/refs.json", b'{"format": 1, "refs": {}}')
    assert status == 428 and "If-Match" in out["message"]
    status, out, _h = raw(srv, "PUT", "/api/v1/remote/refs.json", b'{"format": 1, "refs": {}}',
                          headers={"If-Match": '"0000"'})  # fmt: skip
    assert status == 412


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("PUT", "packs/pack-x.pack", b"", None),
        ("PUT", "packs/pack-x.pack", random.Random(5000).randbytes(5000), None),
        ("PUT", "packs/pack-x.pack", PACK_MAGIC + HEAD.pack(b"\0" * 32, 0), None),
        ("PUT", "packs/pack-x.pack", PACK_MAGIC + HEAD.pack(b"\0" * 32, 3) + b"Zab", None),
        ("PUT", "packs/pack-x.idx", random.Random(100).randbytes(100), None),
        ("PUT", "packs/runs-x.runs", random.Random(100).randbytes(100), None),
        ("PUT", "packs/pack-x.zip", b"x", None),
        ("PUT", "packs/../../tokens.json", b"x", None),
        ("PUT", "mlvc-remote.json", b'{"format": 9}', None),
        ("PUT", "mlvc-remote.json", b'{"format": 1}', {"If-None-Match": "*"}),
        ("GET", "packs/pack-x.pack", None, {"Range": "bytes=" + "9" * 5000 + "-"}),
        ("GET", "x" * 400, None, None),
        ("GET", "", None, {"Range": "bytes=0-1"}),
    ],
)
def test_garbage_is_answered_in_the_4xx_range_never_500(srv, method, path, body, headers):
    status, out, _h = raw(srv, method, f"/api/v1/remote/{path}", body, headers=headers)
    assert 400 <= status < 500 or (status == 200 and path == ""), (status, out)
    if isinstance(out, dict) and status >= 400:
        assert "Traceback" not in out["message"]


@pytest.mark.parametrize(("path", "size"), [("refs.json", 9 << 20), ("packs/pack-x.pack", 2 << 30)])
def test_a_body_declared_too_big_is_a_413_before_it_is_sent(srv, path, size):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.putrequest("PUT", f"/api/v1/remote/{path}")
    conn.putheader("Authorization", f"Bearer {srv.tokens['write']}")
    conn.putheader("Content-Length", str(size))
    conn.putheader("If-None-Match", "*")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert "over" in json.loads(response.read())["message"]
    conn.close()
    assert leftovers(srv) == []


def test_the_marker_file_is_there_from_the_start(srv):
    t = transport(srv)
    assert not t.put_if("mlvc-remote.json", b'{"format": 1}', None)  # exists already
    t.put("mlvc-remote.json", b'{"format": 1}\n')
    assert json.loads(t.get("mlvc-remote.json")) == {"format": 1}


def test_a_keep_alive_connection_dropped_by_the_server_is_opened_again(srv):
    t = transport(srv, "read")
    t.listing()
    time.sleep(6)  # past the server's keep-alive (5 s): it closed the connection
    assert t.listing()
    assert t.requests in (2, 3)


# -- end to end: mlvc push / clone (issue 12's commands, built by the remotes core) ---------


def test_push_to_a_server_then_clone_from_it(tmp_path):
    import subprocess
    import sys

    server = _server.start_server(_server.new_repo(tmp_path / "srv"))
    try:
        _push_then_clone(server, tmp_path, subprocess, sys)
    finally:
        server.stop()
    assert "Traceback" not in server.server_log()
    assert server.mlvc("fsck").returncode == 0


def _push_then_clone(server, tmp_path, subprocess, sys):
    repo, run = local_repo(tmp_path, "e2e", big=True)
    env = _server._env(MLVC_REMOTE_TOKEN_ORIGIN=server.tokens["write"])

    def mlvc(cwd, *args):
        r = subprocess.run([sys.executable, "-m", "mlvc", *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r

    mlvc(repo.root, "remote", "add", "origin", server.url)
    mlvc(repo.root, "push", "origin")
    assert run in [r["id"] for r in json.loads(server.mlvc("log", "--json").stdout)]
    assert json.loads(server.mlvc("show", "--json", "e2e").stdout)["id"] == run
    mlvc(tmp_path, "clone", server.url, "copy")
    copy = tmp_path / "copy"
    assert json.loads(mlvc(copy, "show", "--json", "e2e").stdout)["id"] == run
    mlvc(copy, "checkout", "e2e")
    assert (copy / "data" / "big.bin").read_bytes() == (repo.root / "data" / "big.bin").read_bytes()
    assert mlvc(copy, "fsck").returncode == 0
    # a lazy clone fetches the big file by range reads when it is checked out
    mlvc(tmp_path, "clone", "--lazy", server.url, "lazy")
    mlvc(tmp_path / "lazy", "checkout", "e2e")
    big = (tmp_path / "lazy" / "data" / "big.bin").read_bytes()
    assert big == (repo.root / "data" / "big.bin").read_bytes()
    again = mlvc(repo.root, "push", "origin", "--json")  # nothing new: listing + refs.json
    assert json.loads(again.stdout)["requests"] <= 3


def _merge_after_first_listing(monkeypatch, root: Path) -> list:
    """RemoteState.load patched: the server at ``root`` merges its small packs (in a process
    of its own) right after the first listing made from now on. The merge's outcome is
    appended to the returned list."""
    import subprocess
    import sys

    from mlvc.remotes import fetch as fetch_module

    real, merges = fetch_module.RemoteState.load, []
    merge = (
        "from pathlib import Path; from mlvc.store.pack.merge import merge_small;"
        "from mlvc.store.pack.store import PackedStore;"
        f"r = merge_small(PackedStore(Path({str(root)!r}) / '.mlvc/objects'),"
        f" Path({str(root)!r}) / '.mlvc'); assert r.merged >= 5, r"
    )

    def listed_then_merged(*args, **kwargs):
        state = real(*args, **kwargs)
        if not merges:
            merges.append(subprocess.run([sys.executable, "-c", merge], env=_server._env(),
                                         capture_output=True, text=True, timeout=120))  # fmt: skip
        return state

    monkeypatch.setattr(fetch_module.RemoteState, "load", listed_then_merged)
    return merges


def _server_of_five_packs(tmp_path, big: int = 0):
    """A running server whose repository has five commits (a pack each), the i-th with
    ``part{i}.txt`` and, if ``big``, ``big{i}.bin`` of ``big`` bytes."""
    root = _server.new_repo(tmp_path / "srv")
    server = _server.start_server(root)
    for i in range(5):
        (root / f"part{i}.txt").write_text(f"part {i}\n" * (i + 1))
        if big:
            (root / f"big{i}.bin").write_bytes(bytes([i]) * big)
        server.mlvc("commit", "-m", f"c{i}", "--name", f"r{i}")
    return root, server


def test_a_fetch_reads_on_after_the_server_merged_packs(tmp_path, monkeypatch):
    """A server merges its small packs in the background; a fetch whose listing came just
    before a merge found a listed pack gone (MissingOnRemote, the fetch failed): it lists
    again and walks again."""
    import subprocess
    import sys

    from mlvc.api.sync import fetch

    root, server = _server_of_five_packs(tmp_path)
    try:
        monkeypatch.setenv("MLVC_REMOTE_TOKEN_ORIGIN", server.tokens["read"])
        local = tmp_path / "client"
        local.mkdir()
        Repo.init(local)
        subprocess.run([sys.executable, "-m", "mlvc", "remote", "add", "origin", server.url],
                       cwd=local, env=_server._env(), check=True, capture_output=True)  # fmt: skip
        merges = _merge_after_first_listing(monkeypatch, root)
        report = fetch(Repo(local), "origin")
        assert merges and merges[0].returncode == 0, merges[0].stderr
        assert len(report.runs) == 5
        got = Repo(local)
        for rid in report.runs:
            text = b"".join(got.cat(f"{rid}:part0.txt"))
            assert text == b"part 0\n"
        assert got.fsck() == []
    finally:
        server.stop()
    assert "Traceback" not in server.server_log()


def test_a_lazy_read_reads_on_after_the_server_merged_packs(tmp_path, monkeypatch):
    """A lazy clone's first read of a promised file lists the remote, then reads the pack
    that holds it; a merge on the server between the two failed the read (MissingOnRemote):
    it lists again and reads on, as a fetch does."""
    from mlvc.api.sync import clone

    root, server = _server_of_five_packs(tmp_path, big=(3 << 20) // 2)  # promised: >= 1 MiB
    try:
        monkeypatch.setenv("MLVC_REMOTE_TOKEN_ORIGIN", server.tokens["read"])
        lazy, _ = clone(server.url, tmp_path / "lazy", lazy=True)
        merges = _merge_after_first_listing(monkeypatch, root)
        assert b"".join(lazy.cat("r3:big3.bin")) == bytes([3]) * ((3 << 20) // 2)
        assert merges and merges[0].returncode == 0, merges[0].stderr
        assert b"".join(Repo(tmp_path / "lazy").cat("r4:big4.bin"))[:1] == bytes([4])
        assert Repo(tmp_path / "lazy").fsck() == []
    finally:
        server.stop()
    assert "Traceback" not in server.server_log()
