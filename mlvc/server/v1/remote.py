"""The server's repository as a remote: the bucket layout of docs/remotes.md under
``/api/v1/remote/``, so ``mlvc push/fetch/clone http(s)://host:port`` use the one code path
every remote takes (mlvc.remotes.http.ServerTransport speaks this).

    GET  /api/v1/remote?prefix=        one listing: {"files": {path: size}}
    GET  /api/v1/remote/<path>         a file; ``Range: bytes=a-b`` answers 206
    PUT  /api/v1/remote/<path>         write (write scope); nothing else (405: gc runs on the server)

The files are built from the repository, not kept as uploaded:

    mlvc-remote.json          {"format": 1}
    packs/pack-<t>.pack|.idx  the store's own packs and the index files that cover them
                              (an index may cover several packs; only packs every trusted
                              index finds whole are listed)
    packs/runs-<h>.runs       every recorded run id, one per line, sorted; ``<h>`` is the
                              BLAKE3 of that text, so the name changes only when runs do
    refs.json                 names, tags, model versions and aliases (not runs), with an
                              ETag (the BLAKE3 of its bytes); absent while there is none

A PUT of ``packs/<name>.pack`` is streamed to a temporary file, every record verified by
hash (one bad record refuses the pack, 400 naming it, nothing kept), then made durable:
a pack named by its content (what mlvc push sends) becomes one of the store's packs as it
is, with an index of its own, so the client's next listing shows the pack and index it sent
(nothing to download again, and a resumed push skips it); any other has the records the
store lacks appended by the store's pack writer. A chunk list whose chunks are not all
here yet (a push cuts packs in id order, so a big file's chunks may come in the next pack)
waits in ``.mlvc/tmp/remote-waiting/`` and is stored, verified whole, once they arrive. ``.idx`` is checked to name only stored
objects (and dropped: the server indexes its packs itself). ``.runs`` records each run whose
every object is stored here (else 400 naming the missing object) and indexes it: this
process is the index's single writer. ``refs.json`` is a compare-and-swap (``If-Match:
<ETag>``, or ``If-None-Match: *`` while there are no refs; 412 when another writer got there
first): each ref that changed is moved by the ref store's own compare-and-swap, and only to
a run or model tree whose objects are all here (409 otherwise).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from collections import OrderedDict

from blake3 import blake3

from ...core.ids import ObjectId
from ...errors import MlvcError, PackError, RefMoved, UsageError
from ...events import emit
from ...refs import registry
from ...refs.store import check_ref_name
from ..app import ApiError, endpoint, error_response, json_response
from ._common import bad, not_found, text_arg

BASE = "/api/v1/remote"
REMOTE_JSON = b'{"format": 1}\n'
MAX_PACK = 1 << 30  # a pushed pack (clients cut them at 256 MiB); streamed to disk
BLOCK = 1 << 20
ATTRIBUTE = 64  # roots walked one by one to name whose object is missing
RUN_SETS = 4  # run-set files remembered by name, so a listing's name stays readable
_PACK_FILE = re.compile(
    r"^(pack-[A-Za-z0-9_-]{1,100}\.(pack|idx)|(runs|pack)-[A-Za-z0-9_-]{1,100}\.runs)$"
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RemoteState:
    """Per server: the run-set files recently listed, and the lock refs.json CAS holds."""

    def __init__(self):
        self.run_sets: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.refs_lock = threading.Lock()

    def remember(self, name: str, body: bytes) -> None:
        with self.lock:
            self.run_sets[name] = body
            self.run_sets.move_to_end(name)
            while len(self.run_sets) > RUN_SETS:
                self.run_sets.popitem(last=False)

    def recall(self, name: str) -> bytes | None:
        with self.lock:
            return self.run_sets.get(name)


def _remote(state) -> RemoteState:
    with state.lock:
        return state.extras.setdefault("remote", RemoteState())


# -- the files, synthesized -----------------------------------------------------------------


def refs_doc(refs) -> dict[str, str]:
    """Every movable ref (not runs, not HEAD) as refs.json holds it."""
    out: dict[str, str] = {}
    for ns in ("names", "tags"):
        for n in refs.names(ns):
            oid = refs.read_or_none(f"refs/{ns}/{n}")
            if oid is not None:
                out[f"{ns}/{n}"] = oid.hex
    for model in registry.names(refs):
        for n in refs.names(f"models/{model}/versions"):
            oid = refs.read_or_none(f"refs/models/{model}/versions/{n}")
            if oid is not None and _VERSION.match(n):
                out[f"models/{model}/versions/{n}"] = oid.hex
        for alias, version in registry.aliases(refs, model).items():
            out[f"models/{model}/aliases/{alias}"] = f"ref: models/{model}/versions/{version}"
    return dict(sorted(out.items()))


def encode_refs(doc: dict[str, str]) -> bytes:
    return (json.dumps({"format": 1, "refs": doc}, sort_keys=True, indent=1) + "\n").encode()


def version_token(data: bytes) -> str:
    return blake3(data).hexdigest()[:32]


def run_set(refs) -> tuple[str, bytes] | None:
    """(file name, content) of the run-set file, or None without runs."""
    ids = sorted(oid.hex for oid in refs.run_ids())
    if not ids:
        return None
    body = ("\n".join(ids) + "\n").encode()
    return f"runs-{version_token(body)}.runs", body


def _packs(store) -> tuple[dict[str, int], dict[str, int]]:
    """({pack name: size an index covers}, {index file name: its size}) of indexes whose
    packs are all whole, so every object an index names can be fetched."""
    packs: dict[str, int] = {}
    indexes: dict[str, int] = {}
    for idx in store.indexes():
        if not all(idx.usable):
            continue
        try:
            indexes[idx.path.name] = os.path.getsize(idx.path)
        except OSError:
            continue  # merged away since it was loaded
        for name, size in zip(idx.packs, idx.sizes, strict=True):
            packs[name] = max(size, packs.get(name, 0))
    return packs, indexes


def listing(call):
    """``GET /api/v1/remote?prefix=``: every file with its size, in one answer."""
    prefix = text_arg(call.query, "prefix", required=False, empty=True) or ""
    ctx = call.state.ctx
    files = {"mlvc-remote.json": len(REMOTE_JSON)}
    doc = refs_doc(ctx.refs)
    if doc:
        files["refs.json"] = len(encode_refs(doc))
    packs, indexes = _packs(ctx.store)
    files.update({f"packs/{n}": s for n, s in {**packs, **indexes}.items()})
    runs = run_set(ctx.refs)
    if runs is not None:
        _remote(call.state).remember(*runs)
        files[f"packs/{runs[0]}"] = len(runs[1])
    return {"files": {k: v for k, v in sorted(files.items()) if k.startswith(prefix)}}


# -- reading --------------------------------------------------------------------------------


def _path(call) -> str:
    path = call.path_params.get("path", "")
    if len(path) > 300 or "\x00" in path:
        raise bad("path: too long or holds a NUL character")
    return path


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a ``Range: bytes=a-b`` header, None for the whole file."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise bad(f"Range: {header[:80]!r} is not one range `bytes=FIRST-LAST`")
    first, last = m.group(1), m.group(2)
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size)
        return max(size - n, 0), size - 1
    a = int(first)
    b = min(int(last), size - 1) if last else size - 1
    if a >= size or (last and int(last) < a):
        raise _unsatisfiable(size)
    return a, b


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(416, "INVALID_PARAMETER_VALUE", f"the range is outside the file's {size} "
                    "bytes", {"Content-Range": f"bytes */{size}"})  # fmt: skip


def _answer(call, size: int, blocks, headers: dict | None = None):
    """A whole file (200) or one range of it (206), streamed by ``blocks(first, n)``."""
    from starlette.responses import Response, StreamingResponse

    span = _range(call.headers.get("range"), size)
    headers = dict(headers or {}, **{"Accept-Ranges": "bytes"})
    status, first, n = 200, 0, size
    if span is not None:
        status, first, n = 206, span[0], span[1] - span[0] + 1
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    headers["Content-Length"] = str(n)
    if call.method == "HEAD":
        return Response(b"", status, headers, media_type="application/octet-stream")
    return StreamingResponse(blocks(first, n), status, headers,
                             media_type="application/octet-stream")  # fmt: skip


def _bytes_blocks(data: bytes):
    def blocks(first: int, n: int):
        for at in range(first, first + n, BLOCK):
            yield data[at : min(at + BLOCK, first + n)]

    return blocks


def _file_blocks(fd: int):
    def blocks(first: int, n: int):
        try:
            at, end = first, first + n
            while at < end:
                block = os.pread(fd, min(BLOCK, end - at), at)
                if not block:
                    return  # cut short under us: the client sees a short body
                yield block
                at += len(block)
        finally:
            os.close(fd)

    return blocks


def get_file(call):
    """``GET``/``HEAD /api/v1/remote/<path>``: a file of the layout, whole or one range."""
    path = _path(call)
    if path in ("", "/"):
        return listing(call)
    ctx = call.state.ctx
    if path == "mlvc-remote.json":
        return _answer(call, len(REMOTE_JSON), _bytes_blocks(REMOTE_JSON))
    if path == "refs.json":
        doc = refs_doc(ctx.refs)
        if not doc:
            raise not_found("no refs.json: this server has no names, tags or models yet")
        data = encode_refs(doc)
        etag = {"ETag": f'"{version_token(data)}"'}
        return _answer(call, len(data), _bytes_blocks(data), etag)
    name = path[len("packs/") :] if path.startswith("packs/") else ""
    if not _PACK_FILE.match(name):
        raise not_found(f"no {path[:200]} on this remote")
    if name.endswith(".runs"):
        body = _remote(call.state).recall(name)
        if body is None:
            runs = run_set(ctx.refs)
            body = runs[1] if runs is not None and runs[0] == name else None
        if body is None:
            raise not_found(f"no {path}: the set of runs changed since it was listed; list again")
        return _answer(call, len(body), _bytes_blocks(body))
    packs, indexes = _packs(ctx.store)
    size = packs.get(name, indexes.get(name))
    if size is None:
        raise not_found(f"no {path} on this remote (gone since it was listed? list again)")
    try:
        fd = os.open(ctx.store.pack_dir / name, os.O_RDONLY)
    except FileNotFoundError:
        raise not_found(
            f"no {path} on this remote (gone since it was listed? list again)"
        ) from None
    try:
        response = _answer(call, size, _file_blocks(fd))
    except BaseException:
        os.close(fd)
        raise
    if call.method == "HEAD":
        os.close(fd)
    return response


# -- writing --------------------------------------------------------------------------------


def put_handler(state):
    """``PUT /api/v1/remote/<path>``: packs streamed to a temporary file, then verified and
    received; small files (refs.json, .runs) read whole, within their limits."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    limits = state.options.limits

    async def put_file(request, principal):
        path = request.path_params.get("path", "")
        name = path[len("packs/") :] if path.startswith("packs/") else ""
        try:
            if path == "refs.json":
                data = await _read(request, limits.max_json_body)
                return await run_in_threadpool(put_refs, state, principal, request.headers, data)
            if path == "mlvc-remote.json":
                data = await _read(request, 4096)
                return put_marker(request.headers, data)
            if not _PACK_FILE.match(name):
                raise bad(f"path: {path[:200]!r} is not a file a remote holds (refs.json, "
                          "mlvc-remote.json, packs/pack-<h>.pack|.idx, packs/runs-<h>.runs)")  # fmt: skip
            if name.endswith(".runs"):
                data = await _read(request, limits.max_body)
                return await run_in_threadpool(put_runs, state, principal, name, data)
            spill = await _spill(state, request, MAX_PACK)
            try:
                work = put_pack if name.endswith(".pack") else put_index
                return await run_in_threadpool(work, state, name, spill)
            finally:
                spill.unlink(missing_ok=True)
        except ApiError as e:
            return error_response(e.status, e.code, e.message, e.headers)
        except ClientDisconnect:  # nobody reads this answer; nothing was kept
            return error_response(400, "INVALID_PARAMETER_VALUE", "the upload was cut short")

    return put_file


def _too_big(limit: int, what: str) -> ApiError:
    return ApiError(413, "REQUEST_LIMIT_EXCEEDED", f"the body is over {limit} bytes ({what})")


async def _read(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_big(limit, "the limit of this file")
    data = bytearray()
    async for block in request.stream():
        data += block
        if len(data) > limit:
            raise _too_big(limit, "the limit of this file")
    return bytes(data)


async def _spill(state, request, limit: int):
    """The body in a temporary file (removed if the upload is cut or too big)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_big(limit, "packs are cut at 256 MiB by mlvc push")
    tmp = state.ctx.layout.tmp
    tmp.mkdir(parents=True, exist_ok=True)
    spill = tmp / f"remote-put-{secrets.token_hex(8)}"
    size = 0
    try:
        with open(spill, "wb") as f:
            async for block in request.stream():
                size += len(block)
                if size > limit:
                    raise _too_big(limit, "packs are cut at 256 MiB by mlvc push")
                f.write(block)
    except BaseException:  # a client that goes away mid-upload leaves nothing
        spill.unlink(missing_ok=True)
        raise
    return spill


def put_marker(headers, data: bytes):
    """``mlvc-remote.json``: the server is a remote of format 1 already; a client creating
    it (``If-None-Match: *``) is told it exists."""
    if headers.get("if-none-match", "").strip() == "*":
        raise ApiError(412, "RESOURCE_ALREADY_EXISTS", "mlvc-remote.json exists on this server")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad("mlvc-remote.json: the body is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise bad('mlvc-remote.json: this server is a remote of format 1 ({"format": 1})')
    return json_response(200, {"format": 1})


def _waiting(state):
    """Where chunk lists wait for chunks a later pack of the same push brings."""
    return state.ctx.layout.tmp / "remote-waiting"


def put_pack(state, name: str, spill):
    from ...remotes.receive import receive_pack, settle
    from ...store.pack.merge import maybe_start as maybe_merge

    ctx = state.ctx
    try:
        got = receive_pack(ctx.store, ctx.dir, spill, name, _waiting(state), adopt=True)
    except PackError as e:
        raise bad(e.message) from None
    settled, problems = settle(ctx.store, ctx.dir, _waiting(state))
    maybe_merge(ctx.store, ctx.layout.root, ctx.settings.gc_auto)  # a pack a push, merged
    if problems:
        raise bad(f"{problems[0]} (this pack's own records verified and were stored)")
    return json_response(201, {"records": got.records, "stored": got.stored + settled,
                               "stored_bytes": got.stored_bytes,
                               "waiting": len(got.waiting)})  # fmt: skip


def put_index(state, name: str, spill):
    """An index of a pack just sent: every object it names must be stored here now (or be
    a chunk list waiting for the chunks a later pack brings)."""
    from ...remotes.receive import index_ids, is_waiting

    store = state.ctx.store
    try:
        ids = index_ids(spill, name)
    except PackError as e:
        raise bad(e.message) from None
    store.reload(force=True)
    for oid in ids:
        if not store.has(ObjectId(oid)) and not is_waiting(_waiting(state), oid):
            raise bad(f"index {name} names object {oid.hex()}, which is not stored here: "
                      "PUT the pack holding it first")  # fmt: skip
    return json_response(201, {"objects": len(ids)})


def _parse_runs(name: str, data: bytes) -> list[ObjectId]:
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise bad(f"{name}: not text (one run id of 64 hex digits per line)") from None
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not _HEX64.match(line):
            raise bad(f"{name} line {n}: {line[:80]!r} is not a run id (64 hex digits)")
        out.append(ObjectId.parse(line))
    return out


def _first_missing(store, roots) -> tuple[bytes | None, bytes | None]:
    """(an object the closure of ``roots`` lacks, one that does not verify), or Nones."""
    from ...maintenance.gc import reachable

    damaged: set = set()
    seen = reachable(store, set(roots), damaged)
    missing = next((o for o in sorted(seen) if not store.has(ObjectId(o))), None)
    return missing, next(iter(sorted(damaged)), None)


def _check_closure(store, roots, what: str) -> None:
    missing, damaged = _first_missing(store, roots)
    if missing is None and damaged is None:
        return
    whose = f"one of {len(roots)} {what}s"
    if len(roots) <= ATTRIBUTE:  # walk each root to say whose object it is (a failure only)
        for root in sorted(roots):
            m, d = _first_missing(store, [root])
            if m is not None or d is not None:
                whose, missing, damaged = f"{what} {root.hex}", m, d
                break
    if missing is not None:
        raise bad(f"{whose} needs object {ObjectId(missing).hex}, which is not stored here: "
                  "push its objects first; nothing was recorded")  # fmt: skip
    raise bad(f"{whose} needs object {ObjectId(damaged).hex}, which does not verify here; "
              "nothing was recorded")  # fmt: skip


def put_runs(state, principal, name: str, data: bytes):
    """Record each run of a run-set file whose objects are all stored here, then index them;
    all of them or none."""
    from ...refs.runlist import remember
    from ...store.typed import read_run

    ctx = state.ctx
    ids = _parse_runs(name, data)
    new = sorted({oid for oid in ids if not ctx.refs.has_run(oid)})
    ctx.store.reload(force=True)
    runs = []
    for oid in new:
        if not ctx.store.has(oid):
            raise ApiError(409, "RESOURCE_DOES_NOT_EXIST", f"{name}: run {oid.hex} is not "
                           "stored here: PUT the pack holding it first")  # fmt: skip
        try:
            runs.append((oid, read_run(ctx.store, oid)))
        except MlvcError:
            raise bad(f"{name}: object {oid.hex} is not a run") from None
    _check_closure(ctx.store, new, "run")
    ctx.store.sync()  # what a run ref names is durable before the ref
    for oid in new:
        ctx.index.journal(oid)
    with ctx.refs.batch():
        for oid in new:
            ctx.refs.add_run(oid)
    remember(ctx.layout.runlist, runs)  # the server's own `log` and run lists read no run
    if new:
        ctx.index.try_ingest()
    return json_response(201, {"runs": len(ids), "added": [o.hex for o in new]})


# -- refs.json: compare-and-swap ------------------------------------------------------------


def _check_key(key: str, value) -> tuple[str, str]:
    """(kind, value) of one refs.json entry, or 400 naming it."""
    if not isinstance(key, str) or len(key) > 1000:
        raise bad("refs: a key is not a ref name")
    parts = key.split("/")
    try:
        if len(parts) == 2 and parts[0] in ("names", "tags"):
            check_ref_name(parts[1], parts[0][:-1])
            kind = "run"
        elif len(parts) == 4 and parts[0] == "models" and parts[2] == "versions":
            registry.check_name(parts[1])
            if not _VERSION.match(parts[3]):
                raise UsageError(f"version {parts[3]!r} is not a number from 1")
            kind = "version"
        elif len(parts) == 4 and parts[0] == "models" and parts[2] == "aliases":
            registry.check_name(parts[1])
            registry.check_alias(parts[3])
            kind = "alias"
        else:
            raise UsageError("only names/, tags/, models/<m>/versions/ and models/<m>/aliases/ "
                             "refs are pushed (runs travel in .runs files, HEAD never)")  # fmt: skip
    except UsageError as e:
        raise bad(f"refs: {key[:200]!r}: {e.message}") from None
    if not isinstance(value, str):
        raise bad(f"refs: {key[:200]!r}: the value is not a string")
    if kind == "alias":
        target = value[len("ref: ") :] if value.startswith("ref: ") else ""
        tparts = target.split("/")
        if not (len(tparts) == 4 and tparts[:3] == ["models", parts[1], "versions"]
                and _VERSION.match(tparts[3])):  # fmt: skip
            raise bad(f"refs: {key[:200]!r}: an alias is `ref: models/{parts[1]}/versions/<n>`, "
                      f"not {value[:100]!r}")  # fmt: skip
    elif not _HEX64.match(value):
        raise bad(f"refs: {key[:200]!r}: {value[:100]!r} is not an object id (64 hex digits)")
    return kind, value


def parse_refs(data: bytes) -> dict[str, tuple[str, str]]:
    """A refs.json body: {key: (kind, value)}, every entry checked."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise bad("refs.json: the body is not JSON") from None
    except RecursionError:
        raise bad("refs.json: the body is nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("refs"), dict):
        raise bad('refs.json: expected {"format": 1, "refs": {...}}')
    return {k: _check_key(k, v) for k, v in doc["refs"].items()}


def _unquote(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"')


def _check_targets(ctx, new: dict, changed: list[str]) -> None:
    """Every changed ref names a run recorded here, a model tree whose objects are all here,
    or a version that exists (here or in the same document)."""
    for key, (kind, value) in new.items():  # unchanged aliases too: a version may go
        if kind == "alias" and value[len("ref: ") :] not in new:
            raise ApiError(409, "RESOURCE_DOES_NOT_EXIST", f"refs: {key} points at "
                           f"{value[len('ref: ') :]}, which refs.json does not hold")  # fmt: skip
    trees = set()
    for key in changed:
        kind, value = new[key]
        if kind == "run":
            oid = ObjectId.parse(value)
            if not ctx.refs.has_run(oid):
                raise ApiError(409, "RESOURCE_DOES_NOT_EXIST", f"refs: {key} names run "
                               f"{value}, which is not on this server: push the run first")  # fmt: skip
        elif kind == "version":
            oid = ObjectId.parse(value)
            if not ctx.store.has(oid):
                raise ApiError(409, "RESOURCE_DOES_NOT_EXIST", f"refs: {key} names model tree "
                               f"{value}, which is not stored here: push its objects first")  # fmt: skip
            trees.add(oid)
    if trees:
        _check_closure(ctx.store, trees, "model tree")


def _apply(ctx, who: str, cur: dict[str, str], new: dict, order: list[str]) -> None:
    """Move, create or delete each ref in ``order``, each by compare-and-swap against the
    value ``cur`` holds (RefMoved when another writer moved it meanwhile)."""
    refs = ctx.refs
    for key in order:
        ref = f"refs/{key}"
        before = cur.get(key)
        expected = _resolved(refs, before)
        _apply_one(refs, ref, before, expected, new.get(key), who)
        after = new[key][1] if key in new else None
        emit(ctx, "ref.updated", {"ref": ref, "old": before, "new": after, "by": who,
                                  "via": "server"})  # fmt: skip


def _apply_one(refs, ref: str, before, expected, new: tuple[str, str] | None, who: str) -> None:
    """One ref of a push: deleted (``new`` None), or set to an alias, version or run."""
    if new is None:
        _delete(refs, ref, expected, who)
        return
    kind, value = new
    if kind == "alias":
        target = "refs/" + value[len("ref: ") :]
        previous = before.rsplit("/", 1)[-1] if before else None
        message = registry._message("alias", {"version": int(target.rsplit("/", 1)[-1]),
                                              "previous": previous and int(previous)})  # fmt: skip
        refs.write(ref, None, message, who, symbolic=target, expected=expected)
    elif kind == "version":
        message = (registry._message("register", {"source": "mlvc push", "run_id": None,
                                                  "trusted": False})
                   if before is None else "push: moved by mlvc push --force")  # fmt: skip
        refs.write(ref, ObjectId.parse(value), message, who, expected=expected)
    else:
        refs.write(ref, ObjectId.parse(value), "push", who, expected=expected)


def _resolved(refs, value: str | None) -> ObjectId | None:
    if value is None:
        return None
    if value.startswith("ref: "):
        return refs.read_or_none("refs/" + value[len("ref: ") :])
    return ObjectId.parse(value)


def _delete(refs, ref: str, expected, who: str) -> None:
    if refs.read_or_none(ref) != expected:
        raise RefMoved(f"ref {ref} moved while refs.json was written")
    refs.delete(ref, "push: deleted by mlvc push", who)


def put_refs(state, principal, headers, data: bytes):
    """``PUT /api/v1/remote/refs.json``: compare-and-swap of the whole document."""
    new = parse_refs(data)
    match, none_match = headers.get("if-match"), headers.get("if-none-match")
    if match is None and (none_match or "").strip() != "*":
        raise ApiError(428, "INVALID_PARAMETER_VALUE", "refs.json is written by compare-and-"
                       "swap: send If-Match: <its ETag>, or If-None-Match: * to create it")  # fmt: skip
    ctx = state.ctx
    with _remote(state).refs_lock:
        cur = refs_doc(ctx.refs)
        token = version_token(encode_refs(cur)) if cur else None
        if (token is None) != (match is None) or (match is not None and _unquote(match) != token):
            now = f"is at {token}" if token else "does not exist"
            raise ApiError(412, "PRECONDITION_FAILED",
                           f"refs.json {now}: another push got there first; read it again")  # fmt: skip
        changed = [k for k in new if cur.get(k) != new[k][1]]
        deleted = [k for k in cur if k not in new]
        _check_targets(ctx, new, changed)
        rank = {"version": 0, "run": 1, "alias": 2}
        order = [k for k in deleted if "/aliases/" in k]
        order += sorted(changed, key=lambda k: rank[new[k][0]])
        order += [k for k in deleted if "/aliases/" not in k]
        try:
            _apply(ctx, principal.name, cur, new, order)
        except RefMoved:
            raise ApiError(412, "PRECONDITION_FAILED", "a ref moved on the server while "
                           "refs.json was written: read it again and retry") from None  # fmt: skip
        finally:
            if order:
                ctx.index.try_ingest()
        data = encode_refs(refs_doc(ctx.refs))
    token = version_token(data)
    return json_response(200, {"etag": token, "changed": changed, "deleted": deleted},
                         {"ETag": f'"{token}"'})  # fmt: skip


def routes(state) -> list:
    from starlette.routing import Route

    get = endpoint(state, get_file, "read")
    return [
        Route(BASE, endpoint(state, listing, "read"), methods=["GET"]),
        Route(BASE + "/{path:path}", get, methods=["GET", "HEAD"]),
        Route(BASE + "/{path:path}", endpoint(state, put_handler(state), "write", raw=True),
              methods=["PUT"]),
    ]  # fmt: skip
