"""The ``live/`` folder as a whole: its entries, reapers' claims, pins, and what gc keeps
and fsck checks of it (the format: mlvc.runs.staging)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.ids import ObjectId
from ...core.layout import Layout
from .run import (
    _CLAIM,
    _HEX64,
    _OLD_CLAIM,
    META,
    PIN,
    REAPING,
    RECORDED,
    SERIES,
    UNSTAGED,
    StagedRun,
    _owner,
    _strings,
    _write_durably,
    pid_alive,
)

if TYPE_CHECKING:
    from ...store.odb import ObjectStore


def folders(layout: Layout) -> list[Path]:
    """Every entry of ``live/``, sorted (staged runs, claims, pins, leftovers)."""
    try:
        return sorted(layout.live.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def kind_of(path: Path) -> str:
    """What an entry of ``live/`` is: ``run``, ``claim``, ``unstaged``, ``pin`` or ``other``
    (temporary files)."""
    name = path.name
    if name.startswith(UNSTAGED):
        return "unstaged"
    if name.startswith(REAPING):
        return "claim" if parse_claim(name) else "other"
    if name.startswith(PIN):
        return "pin"
    return "other" if name.startswith(".") else "run"


def parse_claim(name: str) -> tuple[str, int, str] | None:
    """(key, reaper pid, reaper start time or '') of a claim's folder name."""
    m = _OLD_CLAIM.fullmatch(name) or _CLAIM.fullmatch(name)
    if m is None:
        return None
    return m["key"], int(m["pid"]), m.groupdict().get("start") or ""


@contextmanager
def pin(layout: Layout, ids: list[ObjectId | None]) -> Iterator[None]:
    """Name objects as gc roots for as long as the block runs (``live/.pin-*``), for a
    writer that will name them later, outside the lock (``mlvc run -j``'s shared inputs).
    Write it inside ``writing``; a pin whose process is gone is removed by gc."""
    folder = layout.live / f"{PIN}{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    meta = {**_owner(), "ids": [i.hex for i in ids if i is not None]}
    _write_durably(folder / META, json.dumps(meta).encode())
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def roots(layout: Layout) -> set[ObjectId]:
    """Every id that a staged run, a claimed run or a pin names (any id in its meta.json,
    and the run noted as stored). Pins whose process is gone are removed here."""
    out: set[ObjectId] = set()
    for path in folders(layout):
        if not (path / META).is_file():
            if kind_of(path) == "pin" and not _pin_folder_alive(path.name):
                shutil.rmtree(path, ignore_errors=True)  # its writer died before naming ids
            continue
        staged = StagedRun.load(path)
        if staged is None:
            continue  # damaged (fsck says so); writes are atomic, so never half-written
        meta = staged.meta
        if kind_of(path) == "pin" and not _pin_alive(meta):
            shutil.rmtree(path, ignore_errors=True)
            continue
        ids = (t.strip() for t in _strings(meta))
        out.update(ObjectId.parse(t) for t in ids if _HEX64.fullmatch(t))
        try:  # a staged run stored but not yet published (its recorder died in between)
            recorded = (path / RECORDED).read_text(errors="replace")
        except OSError:
            recorded = ""
        out.update(ObjectId.parse(h) for h in _HEX64.findall(recorded))
    return out


def _pin_alive(meta: dict) -> bool:
    pid = meta.get("pid")
    if type(pid) is not int:
        return False  # not a pin mlvc wrote
    return pid_alive(pid, meta.get("proc_start") or "")


def _pin_folder_alive(name: str) -> bool:
    """Whether the process named in a pin folder's name (``.pin-<pid>-<random>``) runs: the
    test for a pin killed between its mkdir and its meta.json, which names no ids yet."""
    pid = name[len(PIN) :].split("-", 1)[0]
    return pid.isdigit() and pid_alive(int(pid), "")


def check(layout: Layout, store: ObjectStore) -> list[str]:
    """Problems of the staged runs (fsck): a meta.json that cannot be read, an object it
    names that is missing, a metric block missing or damaged."""
    out = []
    for path in folders(layout):
        if kind_of(path) != "run" or not path.is_dir():
            continue
        where = f"live run {path.name}"
        try:
            meta = json.loads((path / META).read_bytes())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            meta = {}  # being created: nothing staged yet, unless metric blocks are there
            if StagedRun(path).has_series():
                out.append(f"{where}: meta.json is missing but metric blocks are staged")
        except (OSError, ValueError) as e:
            out.append(f"{where}: meta.json is damaged ({str(e)[:80]})")
            meta = {}
        inputs = meta.get("inputs") if isinstance(meta.get("inputs"), dict) else {}
        named = [inputs.get(k) for k in ("code", "data", "env")]
        arts = meta.get("artifacts") if isinstance(meta.get("artifacts"), dict) else {}
        named += [v[1] for v in arts.values() if isinstance(v, list) and len(v) == 3]
        for h in named:
            if isinstance(h, str) and _HEX64.fullmatch(h) and not store.has(ObjectId.parse(h)):
                out.append(f"{where} names object {h}, which is missing")
        out.extend(f"{where}: {m}" for m in _check_blocks(path / SERIES))
    return out


def _check_blocks(folder: Path) -> list[str]:
    blocks = sorted(folder.glob("*.arrow")) if folder.is_dir() else []
    if not blocks:
        return []
    import pyarrow as pa
    import pyarrow.ipc as ipc

    out = []
    numbers = sorted(int(b.stem) for b in blocks if b.stem.isdigit())
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers)) if numbers else []
    out.extend(f"metric block {n:08d}.arrow is missing" for n in missing)
    for b in blocks:
        try:
            with pa.memory_map(str(b)) as source:
                ipc.open_file(source).read_all()
        except (OSError, pa.ArrowException) as e:
            out.append(f"metric block {b.name} is damaged ({str(e)[:80]})")
    return out
