"""``StagedRun``: one staged run's folder, ``live/<key>/`` (the format: mlvc.runs.staging).

Its owner (the process the run belongs to) changes ``meta.json`` through the setters and
``save``s it whole and durably; anyone else reads it with ``load`` and the properties, which
never fail whatever the file holds. Metric points go in Arrow IPC blocks, one per flush.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.ids import ObjectId
from ...core.layout import Layout
from ...core.names import safe_relpath
from ...core.objects import TreeEntry
from ...core.params import INT_MAX
from ..record import Inputs

if TYPE_CHECKING:
    import pyarrow as pa


META = "meta.json"
SERIES = "series"
RECORDED = "recorded"  # the stored run's id, noted before any ref names it
ATTACHED = "attached"
REAPING = ".reaping-"
UNSTAGED = ".unstaged-"  # a recorded staged run being removed (left by a crash: removed later)
PIN = ".pin-"
NOTE = "mlvc.note"  # a metric block's schema metadata key (append_block)
_KEY = re.compile(r"\d{14}-[0-9a-f]{8}")
# a claim: .reaping-<key>-<pid>-<start time>, or (older mlvc) .reaping-<key>-<pid>
_CLAIM = re.compile(r"\.reaping-(?P<key>.+)-(?P<pid>\d+)-(?P<start>\d*)")
_OLD_CLAIM = re.compile(r"\.reaping-(?P<key>\d{14}-[0-9a-f]{8})-(?P<pid>\d+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def new_key() -> str:
    """A fresh live-run key: sortable by start time, unique by its random tail."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"


def is_key(text: str) -> bool:
    """Whether ``text`` has the shape of a live-run key (``run:<key>/...`` URIs)."""
    return _KEY.fullmatch(text) is not None


def proc_start(pid: int) -> str:
    """The kernel's start time of a process (guards against pid reuse), or '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: Any, start: str) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``start`` (if known)."""
    if type(pid) is not int or pid <= 0:
        return True  # cannot tell: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists
    if fields[0] in ("Z", "X", "x"):
        return False  # killed and not yet reaped by its parent: it writes nothing more
    return not start or fields[19] == start


_OWNER: dict[int, dict[str, Any]] = {}  # pid -> its owner fields (a forked child has its own)


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    owner = _OWNER.get(pid)
    if owner is None:
        owner = {"pid": pid, "proc_start": proc_start(pid), "host": socket.gethostname()}
        _OWNER[pid] = owner
    return dict(owner)


class StagedRun:
    """One staged run: its folder, and its ``meta.json`` as a map held in memory.

    The process that owns the run changes it through the setters and ``save()``s it; any
    other reads it with ``load`` and the (defensive) properties.
    """

    def __init__(self, path: Path, meta: dict | None = None, key: str | None = None):
        self.path = Path(path)
        self.meta: dict[str, Any] = meta if isinstance(meta, dict) else {}
        self.key = key or self.path.name  # a claimed run's folder is named after its claim

    def __repr__(self) -> str:
        return f"<StagedRun {self.path}>"

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        layout: Layout,
        *,
        name: str = "",
        message: str = "",
        started: int,
        argv: list[str],
        cwd: str,
        parent: str | None = None,
        inputs: Inputs | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        mlvc_run: bool = False,
        move_head: bool | None = None,
        parents: tuple[ObjectId, ...] | None = None,
        reproduces: ObjectId | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> StagedRun:
        """A new staged run owned by this process, visible to ``mlvc runs`` on return.

        ``mlvc_run``: staged by ``mlvc run``, which decides the run's outputs itself (a
        reaper records none). ``meta``: more fields of meta.json (a server's lease, its
        experiment), written with the rest in the one durable write."""
        key = new_key()
        path = layout.staged(key)
        path.mkdir(parents=True)  # its series folder comes with the first metric block
        extra_meta = meta
        meta = {**_owner(), "name": name, "message": message, "started": started}
        meta.update({"argv": list(argv), "parent": parent, "cwd": cwd})
        if params is not None:
            meta["params"] = dict(params)
        if tags is not None:
            meta["tags"] = dict(tags)
        if mlvc_run:
            meta["mlvc_run"] = True
        # what the run is recorded with, also when the reaper records it (mlvc was killed)
        if move_head is not None:
            meta["move_head"] = move_head
        if parents is not None:
            meta["parents"] = [p.hex for p in parents]
        if reproduces is not None:
            meta["reproduces"] = reproduces.hex
        if inputs is not None:
            meta["inputs"] = inputs.to_dict()
        if extra_meta:
            meta.update(extra_meta)
        run = cls(path, meta)
        run.save()
        return run

    @classmethod
    def at(cls, layout: Layout, key: str) -> StagedRun:
        """The staged run ``key`` (not read yet; see ``exists`` and ``load``)."""
        return cls(layout.staged(key))

    @classmethod
    def load(cls, path: Path, key: str | None = None) -> StagedRun | None:
        """The staged run at ``path`` with its meta.json read; None when that is missing or
        not a JSON map."""
        run = cls(path, key=key)
        meta = run.read_meta()
        if meta is None:
            return None
        run.meta = meta
        return run

    def read_meta(self) -> dict | None:
        """meta.json as it is on disk, or None when it is missing or not a JSON map."""
        try:
            meta = json.loads((self.path / META).read_text(), parse_int=_json_int)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def reload(self) -> None:
        """Read meta.json again (another process wrote into it); kept as is if unreadable."""
        meta = self.read_meta()
        if meta is not None:
            self.meta = meta

    def exists(self) -> bool:
        """Whether the folder holds a meta.json (readable or not)."""
        return (self.path / META).is_file()

    def meta_written(self) -> bool:
        return os.path.lexists(self.path / META)

    # -- writing meta.json (its owner) -----------------------------------------------------

    def save(self) -> None:
        """Write meta.json whole: temp file, fsync, rename. A reader sees the old or the new."""
        _write_durably(self.path / META, json.dumps(self.meta, sort_keys=True).encode())

    def set_inputs(self, inputs: Inputs) -> None:
        self.meta["inputs"] = inputs.to_dict()

    def set_params(self, params: Mapping[str, Any]) -> None:
        self.meta["params"] = dict(params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.meta["tags"] = dict(tags)

    def set_artifacts(self, artifacts: Mapping[str, tuple[str, str, int]]) -> None:
        """``artifacts``: path -> (kind, id hex, size) of files stored already."""
        self.meta["artifacts"] = {p: list(v) for p, v in artifacts.items()}

    def set_model(self, name: str, record: dict) -> None:
        self.meta.setdefault("models", {})[name] = record

    def set_children(self, children: list[str]) -> None:
        self.meta["children"] = list(children)

    def note_error(self, error: BaseException) -> None:
        """Keep the error a run ended with (its traceback cut to the last 4,000 characters)."""
        tb = traceback.format_exception(type(error), error, error.__traceback__)
        self.meta["error"] = {
            "type": type(error).__name__,
            "message": str(error),
            "traceback": "".join(tb)[-4000:],
        }

    def note_attached(self, name: str | None = None, status: str | None = None) -> None:
        """What the script that joined an ``mlvc run`` said (the run keeps its own name)."""
        if name:
            self.meta["attached_name"] = name
        if status:
            self.meta["attached_status"] = status

    def join(self) -> bool:
        """Claim the run for the one process that joins it (``mlvc run``); False if taken."""
        try:
            fd = os.open(self.path / ATTACHED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    # -- reading meta.json (anyone; never fails) -------------------------------------------

    name = property(lambda self: _str(self.meta.get("name")))
    message = property(lambda self: _str(self.meta.get("message")))
    cwd = property(lambda self: _str(self.meta.get("cwd")))
    pid = property(lambda self: self.meta.get("pid"))
    parent = property(lambda self: self.meta.get("parent"))
    params = property(lambda self: _map(self.meta.get("params")))
    tags = property(lambda self: _map(self.meta.get("tags")))
    models = property(lambda self: _map(self.meta.get("models")))
    inputs = property(lambda self: Inputs.from_dict(self.meta.get("inputs")))
    has_inputs = property(lambda self: "inputs" in self.meta)
    mlvc_run = property(lambda self: bool(self.meta.get("mlvc_run")))
    own_outputs = property(lambda self: self.mlvc_run or bool(self.meta.get("own_outputs")))
    extra = property(lambda self: _map(self.meta.get("extra")))  # copied into the run's extra

    @property
    def children(self) -> list:
        children = self.meta.get("children")
        return list(children) if isinstance(children, list) else []

    @property
    def error(self) -> dict | None:
        """{type, message, traceback} of the error the run ended with, if any."""
        error = self.meta.get("error")
        return error if isinstance(error, dict) and error else None

    @property
    def started(self) -> int | None:
        started = self.meta.get("started")
        return started if type(started) is int and 0 < started <= INT_MAX else None

    @property
    def move_head(self) -> bool:
        """Whether recording the run moves HEAD: as staged, else when it has no parent run."""
        value = self.meta.get("move_head")
        return value if isinstance(value, bool) else self.parent is None

    @property
    def parents(self) -> tuple[ObjectId, ...] | None:
        """Parents the run was staged with (a sweep point, a reproduction), else None."""
        value = self.meta.get("parents")
        if not isinstance(value, list):
            return None
        return tuple(i for i in (_id(v) for v in value) if i is not None)

    @property
    def reproduces(self) -> ObjectId | None:
        return _id(self.meta.get("reproduces"))

    @property
    def argv(self) -> list[str]:
        argv = self.meta.get("argv")
        return [str(a) for a in argv] if isinstance(argv, list) else []

    @property
    def artifacts(self) -> dict[str, list]:
        """path -> [kind, id hex, size], as stored (see ``artifact_entries``)."""
        return {p: list(v) for p, v in _map(self.meta.get("artifacts")).items()}

    def artifact_entries(self) -> tuple[dict[str, TreeEntry], list[str]]:
        """The staged artifacts as tree entries, and the paths that cannot be (damaged)."""
        entries, dropped = {}, []
        for path, entry in _map(self.meta.get("artifacts")).items():
            try:
                kind, oid, size = entry
                entries[safe_relpath(path)] = TreeEntry(
                    path.rsplit("/", 1)[-1], kind, ObjectId.parse(oid), size
                )
            except (TypeError, ValueError):
                dropped.append(str(path)[:200])
        return entries, dropped

    @property
    def local(self) -> bool:
        """Whether the run's process runs (or ran) on this host."""
        return self.meta.get("host") == socket.gethostname()

    def alive(self) -> bool:
        """Whether the run's process still runs (a run of another host counts as alive:
        only a reaper on its own host can tell), or its lease has not run out: a run a
        server holds for a client over the network outlives a restart of the server."""
        if not self.local:
            return True
        if pid_alive(self.meta.get("pid"), self.meta.get("proc_start") or ""):
            return True
        lease = self.meta.get("lease_until")
        return type(lease) in (int, float) and lease > time.time()

    def set_lease(self, until: float) -> None:
        """Keep the run alive until ``until`` (seconds since the epoch) even when its
        process is gone (``save`` to make it count)."""
        self.meta["lease_until"] = until

    def adopt(self) -> None:
        """Make this process the run's owner (a restarted server taking its runs back);
        ``save`` to make it count."""
        self.meta.update(_owner())

    def holds_anything(self) -> bool:
        """Whether it holds something to record (a run killed while starting does not)."""
        return bool(self.params or self.has_series() or (self.path / RECORDED).exists())

    # -- metric series ---------------------------------------------------------------------

    def block_count(self) -> int:
        return len(list((self.path / SERIES).glob("*.arrow")))

    def has_series(self) -> bool:
        return any((self.path / SERIES).glob("*.arrow"))

    def append_block(
        self, number: int, cols: list[list], names: list[str], note: dict | None = None
    ) -> None:
        """Write metric block ``number`` (temp + rename): ``cols`` are key codes into
        ``names``, steps, times (ns since the epoch) and values. ``note`` is kept in the
        block's schema metadata (``block_notes``): a server's batch id lands with its points
        in one atomic rename."""
        import pyarrow as pa
        import pyarrow.ipc as ipc

        codes, steps, times, values = (
            c if isinstance(c, pa.Array) else pa.array(c, t)  # Arrow arrays are taken as made
            for c, t in zip(cols, (pa.int32(), pa.int64(), pa.int64(), pa.float64()), strict=True)
        )
        table = pa.table(
            {
                "key": pa.DictionaryArray.from_arrays(codes, pa.array(names)),
                "step": steps,
                "timestamp": times,
                "value": values,
            }
        )
        if note:
            table = table.replace_schema_metadata({NOTE: json.dumps(note, sort_keys=True)})
        path = self.path / SERIES / f"{number:08d}.arrow"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            sink = pa.OSFile(str(tmp), "wb")
        except FileNotFoundError:  # the first block: the series folder is made now
            path.parent.mkdir(exist_ok=True)
            sink = pa.OSFile(str(tmp), "wb")
        with sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)

    def block_notes(self) -> list[dict]:
        """The notes of the metric blocks (``append_block``), oldest first; blocks without
        one, or that cannot be read, are skipped."""
        import pyarrow as pa
        import pyarrow.ipc as ipc

        out = []
        for block in sorted((self.path / SERIES).glob("*.arrow")):
            try:
                meta = ipc.open_file(pa.memory_map(str(block))).schema.metadata or {}
                note = json.loads(meta[NOTE.encode()]) if NOTE.encode() in meta else None
            except (OSError, ValueError, pa.ArrowInvalid):
                continue
            if isinstance(note, dict):
                out.append(note)
        return out

    def blocks_after(self, after: int) -> Iterator[tuple[int, pa.Table]]:
        """(number, points) of each metric block numbered after ``after``, in order; stops
        at a block it cannot read (torn by a crash, or being replaced: read it next time)."""
        import pyarrow as pa
        import pyarrow.ipc as ipc

        try:
            names = sorted(os.listdir(self.path / SERIES))
        except FileNotFoundError:
            return
        for name in names:
            stem, dot, ext = name.partition(".")
            if ext != "arrow" or not dot or not stem.isdigit() or int(stem) <= after:
                continue
            try:
                t = ipc.open_file(pa.memory_map(str(self.path / SERIES / name))).read_all()
            except (OSError, pa.ArrowInvalid):
                return
            yield int(stem), t

    def read_series(self) -> pa.Table:
        """Every flushed point as one table (key, step, timestamp µs, value); a block torn
        by a crash is skipped (everything before it is intact)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.ipc as ipc

        tables = []
        for block in sorted((self.path / SERIES).glob("*.arrow")):
            try:
                t = ipc.open_file(pa.memory_map(str(block))).read_all()
            except (OSError, pa.ArrowInvalid):
                continue
            t = t.replace_schema_metadata(None)  # notes are no part of the series
            tables.append(t.set_column(0, "key", pc.cast(t["key"], pa.string())))
        schema = pa.schema(
            [("key", pa.string()), ("step", pa.int64()), ("timestamp", pa.int64()),
             ("value", pa.float64())]
        )  # fmt: skip
        if not tables:
            return schema.empty_table()
        t = pa.concat_tables(tables)
        return t.set_column(2, "timestamp", pc.divide(t["timestamp"], 1000).cast(pa.int64()))

    # -- the stored run, unstaging -----------------------------------------------------------

    def note_stored(self, oid: ObjectId, move_head: bool) -> None:
        """Note that the run object is stored (durably, before any ref names it)."""
        body = json.dumps({"id": oid.hex, "move_head": move_head}).encode()
        _write_durably(self.path / RECORDED, body)

    def stored_note(self) -> tuple[ObjectId, bool] | None:
        """(run id, move_head) noted by ``note_stored``, or None (never stored, or damaged)."""
        try:
            note = json.loads((self.path / RECORDED).read_text())
            return ObjectId.parse(note["id"]), bool(note.get("move_head", True))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def unstage(self) -> None:
        """Remove the folder of a recorded run: first renamed out of the reaper's sight in
        one step (a half-removed folder could otherwise pass for an unrecorded run)."""
        gone = self.path.with_name(f"{UNSTAGED}{self.path.name.lstrip('.')}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, gone)
        except OSError:
            return
        shutil.rmtree(gone, ignore_errors=True)

    def remove(self) -> None:
        """Delete the folder (a run that died before holding anything)."""
        shutil.rmtree(self.path, ignore_errors=True)

    # -- claims by reapers -----------------------------------------------------------------

    def claim(self) -> StagedRun | None:
        """Take this (dead) run for this process by renaming it to a claim; None when
        another reaper's rename won."""
        me = os.getpid()
        target = self.path.parent / f"{REAPING}{self.key}-{me}-{proc_start(me)}"
        try:
            os.rename(self.path, target)
        except OSError:
            return None
        return StagedRun(target, self.meta, key=self.key)


def last_values(table: pa.Table) -> dict[str, float]:
    """The value at the highest step of each key (the latest logged among equal steps)."""
    out: dict[str, tuple[int, float]] = {}
    for k, s, v in zip(
        table["key"].to_pylist(), table["step"].to_pylist(), table["value"].to_pylist(), strict=True
    ):
        if k not in out or s >= out[k][0]:
            out[k] = (s, v)
    return {k: v for k, (s, v) in out.items()}


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_int(text: str) -> int | str:
    # Python refuses to read an int of over 4,300 digits: keep it as the text it is
    return int(text) if len(text) < 4000 else text


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _id(text: Any) -> ObjectId | None:
    try:
        return ObjectId.parse(text) if isinstance(text, str) and text else None
    except ValueError:
        return None
