"""What a remote holds, learned from ONE listing and its index files (never object by object).

The listing names every pack, index and runs file with its size. Index and runs files are
immutable by name (their names are their content), so each is downloaded once into the
cache ``.mlvc/remotes/<name>/`` and never read again; a no-op push or pull costs the listing
(and the refs.json read). An index is trusted only once its checksum verifies, and a pack
only when the listing shows it at least as long as its index says: a pack whose upload a
kill interrupted, or whose index was never written, is not part of the remote.

The cache also keeps the refs last seen on the remote (``tracking.json``: refs and their
version token) and, per ref, the value local and remote last agreed on (``base.json``), which
pull and push use to tell "changed here" from "changed there".
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..core.ids import ObjectId
from ..errors import MissingOnRemote, PackError, RemoteError
from ..store.pack.index import PackIndex
from . import format as fmt


@dataclass
class RemoteState:
    """A remote as one listing showed it."""

    name: str
    cache: Path
    files: dict[str, int]
    indexes: list[PackIndex] = field(default_factory=list)
    runs: set[ObjectId] = field(default_factory=set)

    @classmethod
    def load(cls, transport, name: str, cache: Path) -> RemoteState:
        """One listing, then whatever index and runs files the cache lacks. A file merged
        away between the listing and its download means listing again (rare)."""
        for attempt in range(3):
            try:
                return cls._load(transport, name, cache)
            except MissingOnRemote:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load(cls, transport, name: str, cache: Path) -> RemoteState:
        files = transport.listing("")
        state = cls(name, cache, files)
        folder = cache / "packs"
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {p for p in files if fmt.is_idx(p) or fmt.is_runs(p)}
        for stale in os.listdir(folder):  # replaced by a merged index
            if fmt.PACKS + stale not in wanted and not stale.startswith("."):
                (folder / stale).unlink(missing_ok=True)
        for path in sorted(wanted):
            local = cache / path
            if not (local.is_file() and local.stat().st_size == files[path]):
                data = transport.get(path)
                _check(name, path, data)
                cache_file(local, data)
            if fmt.is_idx(path):
                state.indexes.append(state._index(local, path))
            else:
                state.runs.update(fmt.decode_runs(name, path, local.read_bytes()))
        state.indexes.sort(key=lambda i: -i.count)
        return state

    @classmethod
    def cached(cls, name: str, cache: Path) -> RemoteState:
        """The remote as its cached index files last showed it (no request): what a lazy
        clone counts as promised."""
        folder = cache / "packs"
        files = {}
        for n in sorted(os.listdir(folder)) if folder.is_dir() else []:
            if fmt.is_idx(fmt.PACKS + n) or fmt.is_runs(fmt.PACKS + n):
                files[fmt.PACKS + n] = (folder / n).stat().st_size
        state = cls(name, cache, files)
        for path in files:
            if fmt.is_idx(path):
                try:
                    idx = PackIndex(cache / path)
                except PackError:
                    continue
                idx.usable = [fmt.is_pack_name(p) for p in idx.packs]
                state.indexes.append(idx)
        return state

    def _index(self, local: Path, path: str) -> PackIndex:
        try:
            idx = PackIndex(local)
        except PackError as e:
            local.unlink(missing_ok=True)
            raise RemoteError(f"remote {self.name}: {path} is damaged ({e}); refused") from None
        idx.usable = [
            fmt.is_pack_name(p) and self.files.get(fmt.PACKS + p, -1) >= size
            for p, size in zip(idx.packs, idx.sizes, strict=True)
        ]
        return idx

    def find(self, oid: bytes) -> tuple[str, int, int] | None:
        """(pack path, record offset, record length) of an object on the remote, or None."""
        for idx in self.indexes:
            loc = idx.find(oid)
            if loc is not None:
                return fmt.PACKS + idx.packs[loc[0]], loc[1], loc[2]
        return None

    def has(self, oid: bytes) -> bool:
        return self.find(oid) is not None

    def object_count(self) -> int:
        return sum(i.count for i in self.indexes)


def _check(name: str, path: str, data: bytes) -> None:
    """Refuse a damaged index or runs file before it enters the cache."""
    if fmt.is_runs(path):
        if len(data) > fmt.MAX_RUNS_BYTES:
            raise RemoteError(f"remote {name}: {path} has {len(data)} bytes; refused")
        fmt.decode_runs(name, path, data)
        want = path[len(fmt.PACKS) + len("runs-") : -len(".runs")]
    else:
        want = path[len(fmt.PACKS) + len("pack-") : -len(".idx")]
        import blake3

        if len(data) < 40 or blake3.blake3(data[:-32]).digest() != data[-32:]:
            raise RemoteError(
                f"remote {name}: {path} is damaged (its checksum does not match); refused"
            )
        return
    if fmt.content_name(data) != want:
        raise RemoteError(f"remote {name}: {path} does not match its name (damaged); refused")


def cache_file(path: Path, data: bytes) -> None:
    """Write a cache file whole (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- refs last seen and last agreed -------------------------------------------------------


@dataclass
class Tracking:
    """The remote's refs as last read or written, with the version token they had."""

    refs: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    known: bool = False  # False: never read (the token means nothing yet)


def load_tracking(cache: Path) -> Tracking:
    try:
        doc = json.loads((cache / "tracking.json").read_text())
        return Tracking(dict(doc["refs"]), doc.get("token"), True)
    except (OSError, ValueError, KeyError, TypeError):
        return Tracking()


def save_tracking(cache: Path, tracking: Tracking) -> None:
    data = json.dumps({"refs": tracking.refs, "token": tracking.token}, indent=1, sort_keys=True)
    cache_file(cache / "tracking.json", data.encode())


def load_base(cache: Path) -> dict[str, str]:
    try:
        doc = json.loads((cache / "base.json").read_text())
        return {k: v for k, v in doc.items() if isinstance(v, str)}
    except (OSError, ValueError, AttributeError):
        return {}


def save_base(cache: Path, base: dict[str, str]) -> None:
    cache_file(cache / "base.json", json.dumps(base, indent=1, sort_keys=True).encode())
