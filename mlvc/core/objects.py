"""Object kinds and their one canonical byte form.

Terms:
    blob   the raw content of a file; its id is ``blake3(content)``, so it equals ``b3sum``.
    tree   a directory listing sorted by name: (name, kind, id, size) per entry.
    env    the software environment a run ran in (interpreter, platform, packages, ...).
    run    the commit: parents, metadata, params, metrics, and ids of its trees and env.

Structured kinds encode as msgpack ``[kind, format_version, body]`` with every map's keys
sorted, so equal values always give equal bytes and equal ids. Encoding and decoding are pure.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack

from .ids import DIGEST_SIZE, ObjectId

FORMAT_VERSION = 1
MAX_OBJECT_BYTES = 256 * 1024 * 1024  # structured objects bigger than this are refused

FILE, EXEC, SYMLINK, DIR = "file", "exec", "symlink", "dir"
ENTRY_KINDS = (FILE, EXEC, SYMLINK, DIR)

Scalar = int | float | bool | str | None


class DecodeError(ValueError):
    """The bytes are not a valid encoding of the expected kind."""


# -- canonical msgpack -----------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """Sorted-key maps, lists for tuples, raw bytes for ids; rejects what has no fixed form."""
    t = type(value)  # exact-type fast path: trees of 100k entries encode here
    if t is str or t is int or t is float or t is bool or t is bytes or value is None:
        return value
    if t is ObjectId:
        return bytes(value)
    if t is list or t is tuple:
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        items = sorted(value.items())
        for k, _ in items:
            if not isinstance(k, str):
                raise TypeError(f"map keys must be strings, got {k!r}")
        return {k: _canonical(v) for k, v in items}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, ObjectId):
        return bytes(value)
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} in an mlvc object")


def pack(value: Any) -> bytes:
    return msgpack.packb(_canonical(value), use_bin_type=True)


def unpack(data: bytes) -> Any:
    if len(data) > MAX_OBJECT_BYTES:
        raise DecodeError(f"object of {len(data)} bytes exceeds the {MAX_OBJECT_BYTES} limit")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=False)
    except Exception as e:  # msgpack raises a zoo of types on bad input
        raise DecodeError(f"not valid msgpack: {e}") from None


# -- kinds -----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class TreeEntry:
    name: str
    kind: str
    id: ObjectId
    size: int

    def __post_init__(self):
        check_entry_name(self.name)
        if self.kind not in ENTRY_KINDS:
            raise DecodeError(f"unknown tree entry kind {self.kind!r}")
        if not isinstance(self.id, ObjectId):
            object.__setattr__(self, "id", ObjectId(self.id))
        if type(self.size) is not int or self.size < 0:
            raise DecodeError(f"bad size {self.size!r} for tree entry {self.name!r}")


def check_entry_name(name: str) -> None:
    """Refuse names that could escape a directory (empty, '.', '..', '/' or NUL inside) and
    the reserved names of ``is_reserved_name``, which checkout must never create."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise DecodeError(f"unsafe tree entry name {name!r}")
    if is_reserved_name(name):
        raise DecodeError(f"reserved tree entry name {name!r} (git's or mlvc's own folder)")


RESERVED_NAMES = frozenset({".git", ".mlvc", "git~1", "mlvc~1"})
# Code points HFS+ (macOS) drops when it compares names, as git's verify_path lists them.
_IGNORABLE = dict.fromkeys(
    [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)


def is_reserved_name(name: str) -> bool:
    """Whether a file name is, or on some filesystem becomes, ``.git`` or ``.mlvc``.

    A checkout that creates one could plant a git hook or rewrite the store. Compared as
    case-insensitive filesystems (macOS, Windows) do: case folded, HFS+ ignorable code points
    dropped, trailing dots and spaces (Windows) and an NTFS stream suffix (``::$DATA``) cut,
    8.3 short names (``GIT~1``) included, like git's own check.
    """
    if name.isascii() and "git" not in (low := name.lower()) and "mlvc" not in low:
        return False  # the common case, without the folding below
    folded = name.translate(_IGNORABLE).casefold().split(":", 1)[0].rstrip(". ")
    return folded in RESERVED_NAMES


@dataclass(frozen=True)
class Tree:
    kind: ClassVar[str] = "tree"
    entries: tuple[TreeEntry, ...] = ()

    def __post_init__(self):
        names = [e.name for e in self.entries]
        if names != sorted(names) or len(set(names)) != len(names):
            raise DecodeError("tree entries must be sorted by name and unique")

    @classmethod
    def of(cls, entries) -> Tree:
        return cls(tuple(sorted(entries, key=lambda e: e.name)))

    def get(self, name: str) -> TreeEntry | None:
        for e in self.entries:
            if e.name == name:
                return e
        return None

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    def _body(self):
        return [[e.name, e.kind, e.id, e.size] for e in self.entries]

    @classmethod
    def _from_body(cls, body) -> Tree:
        try:
            return cls(tuple(TreeEntry(n, k, ObjectId(i), s) for n, k, i, s in body))
        except (TypeError, ValueError) as e:
            raise DecodeError(f"bad tree: {e}") from None


@dataclass(frozen=True)
class Env:
    """The software environment; ``facts`` is a nested map (see mlvc.capture.env)."""

    kind: ClassVar[str] = "env"
    facts: Mapping[str, Any] = field(default_factory=dict)

    def _body(self):
        return self.facts

    @classmethod
    def _from_body(cls, body) -> Env:
        if not isinstance(body, Mapping):
            raise DecodeError("env body must be a map")
        return cls(_thaw(body))


@dataclass(frozen=True)
class Run:
    """One recorded run. Times are integer microseconds since the Unix epoch (UTC)."""

    kind: ClassVar[str] = "run"
    parents: tuple[ObjectId, ...] = ()
    name: str = ""
    message: str = ""
    author: str = ""
    started: int = 0
    ended: int = 0
    status: str = "finished"
    command: tuple[str, ...] = ()
    cwd: str = ""
    exit_code: int | None = None
    code: ObjectId | None = None
    git: Mapping[str, Any] = field(default_factory=dict)
    data: ObjectId | None = None
    artifacts: ObjectId | None = None
    params: Mapping[str, Scalar] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    series: ObjectId | None = None
    env: ObjectId | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, Any] = field(default_factory=dict)
    reproduces: ObjectId | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _ID_FIELDS: ClassVar[tuple[str, ...]] = (
        "code",
        "data",
        "artifacts",
        "series",
        "env",
        "reproduces",
    )
    _MAP_FIELDS: ClassVar[tuple[str, ...]] = ("git", "params", "metrics", "tags", "models", "extra")

    def _body(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def _from_body(cls, body) -> Run:
        if not isinstance(body, Mapping):
            raise DecodeError("run body must be a map")
        unknown = body.keys() - _run_fields()
        if unknown:
            raise DecodeError(f"run has unknown fields {sorted(map(repr, unknown))}")
        kw = dict(body)
        try:
            kw["parents"] = tuple(ObjectId(p) for p in kw.get("parents", ()))
            for name in cls._ID_FIELDS:
                if kw.get(name) is not None:
                    kw[name] = ObjectId(kw[name])
        except (TypeError, ValueError) as e:
            raise DecodeError(f"bad id in run: {e}") from None
        _check_types(kw)
        for name in cls._MAP_FIELDS:
            if name in kw:
                kw[name] = _thaw(kw[name])
        if "command" in kw:
            kw["command"] = tuple(kw["command"])
        return cls(**kw)

    @property
    def sections(self) -> dict[str, ObjectId | None]:
        """The file trees of the run, by section name."""
        return {"code": self.code, "data": self.data, "artifacts": self.artifacts}


KINDS: dict[str, type] = {"tree": Tree, "env": Env, "run": Run}


@functools.cache
def _run_fields() -> frozenset[str]:
    return frozenset(f.name for f in fields(Run))


_TEXT_FIELDS = frozenset(("name", "message", "author", "status", "cwd"))
_TIME_FIELDS = frozenset(("started", "ended"))


def _check_types(kw: dict) -> None:
    """Refuse a run body whose fields have the wrong types (so readers never trip on them)."""
    for name, value in kw.items():
        if name in _TEXT_FIELDS:
            ok = isinstance(value, str)
        elif name in _TIME_FIELDS:
            ok = type(value) is int
        elif name == "exit_code":
            ok = value is None or type(value) is int
        elif name == "command":
            ok = isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)
        elif name in Run._MAP_FIELDS:
            ok = type(value) is dict or isinstance(value, Mapping)
        else:
            ok = True  # ids, checked above
        if not ok:
            raise DecodeError(f"run field {name!r} has the wrong type ({type(value).__name__})")


_LEAVES = frozenset((str, int, float, bool, bytes, type(None)))  # what _thaw returns as is


def _thaw(value):
    """msgpack gives tuples (use_list=False); turn nested maps back into plain dicts.
    Map keys must be strings, as ``_canonical`` writes them (msgpack also admits bytes)."""
    if type(value) in _LEAVES:  # most values: no ABC check (a fifth of decoding a run)
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise DecodeError("map keys must be strings")
        return {k: v if type(v) in _LEAVES else _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [v if type(v) in _LEAVES else _thaw(v) for v in value]
    return value


def encode(obj) -> bytes:
    """The canonical bytes of a structured object."""
    if type(obj) is Tree:  # the same bytes as below, without the generic walk (big trees)
        body = [[e.name, e.kind, bytes(e.id), e.size] for e in obj.entries]
        return msgpack.packb(["tree", FORMAT_VERSION, body], use_bin_type=True)
    return pack([obj.kind, FORMAT_VERSION, obj._body()])


def decode(data: bytes, expect: type | None = None):
    """Parse canonical bytes into an object; ``expect`` restricts the kind."""
    cls, body = _open(data, expect)
    try:
        return cls._from_body(body)
    except RecursionError:
        raise DecodeError(f"{cls.kind} object is nested too deeply") from None


def tree_rows(data: bytes) -> tuple:
    """The entries of a tree object's canonical bytes as ``(name, kind, id, size)`` tuples
    of plain values, kinds, ids and sizes checked but names not, and no TreeEntry made: for
    sums over big trees (``typed.totals``), which building 20k entries would slow tenfold."""
    _cls, body = _open(data, Tree)
    try:
        for _name, kind, oid, size in body:
            if kind not in ENTRY_KINDS or type(size) is not int or type(oid) is not bytes:
                raise DecodeError(f"bad tree entry {kind!r} {size!r}")
            if len(oid) != DIGEST_SIZE:
                raise DecodeError(f"an object id has {DIGEST_SIZE} bytes, not {len(oid)}")
            if size < 0:
                raise DecodeError(f"bad size {size!r} in a tree entry")
    except (TypeError, ValueError) as e:
        raise DecodeError(f"bad tree: {e}") from None
    return body


def _open(data: bytes, expect: type | None) -> tuple[type, Any]:
    """The class and undecoded body of canonical bytes, the header checked."""
    value = unpack(data)
    if not (isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str)):
        raise DecodeError("not an mlvc object (expected [kind, version, body])")
    kind, version, body = value
    cls = KINDS.get(kind)
    if cls is None:
        raise DecodeError(f"unknown object kind {kind!r}")
    if version != FORMAT_VERSION:
        raise DecodeError(
            f"{kind} object has format version {version}; this mlvc reads {FORMAT_VERSION}"
        )
    if expect is not None and cls is not expect:
        raise DecodeError(f"expected a {expect.kind} object, found a {kind}")
    return cls, body


def object_id(obj) -> ObjectId:
    return ObjectId.of(encode(obj))


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value) -> bool:
    return is_number(value) and math.isfinite(value)
