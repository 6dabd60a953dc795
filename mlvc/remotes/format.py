"""What a remote's bucket holds, and the one place that reads and writes its small files.

Under the remote's prefix (docs/remotes.md)::

    mlvc-remote.json          {"format": 1}, created by the first push (create-if-absent)
    packs/pack-<h>.pack       mlvc's pack format; <h> = BLAKE3 of the pack's bytes (32 hex)
    packs/pack-<h>.idx        mlvc's pack index format, naming the pack(s) it covers
    packs/runs-<h>.runs       run ids a push added, one 64-hex id a line, sorted; <h> = BLAKE3
                              of the file
    refs.json                 {"format": 1, "refs": {"names/<n>": "<id>", ...}}

Everything read from a remote is hostile until checked: ``decode_refs`` and ``decode_runs``
refuse malformed content with one line naming the remote, before anything is used.
"""

from __future__ import annotations

import json
import re

import blake3

from ..core.ids import ObjectId
from ..errors import RemoteError

FORMAT = 1
MARKER = "mlvc-remote.json"
REFS = "refs.json"
PACKS = "packs/"
MAX_REFS_BYTES = 64 << 20  # a refs.json larger than this is refused before parsing
MAX_RUNS_BYTES = 1 << 30
PACK_CAP = 256 << 20  # a push starts a new pack past this many bytes

_PACK = re.compile(r"^packs/pack-([0-9a-f]{32})\.(pack|idx)$")
_RUNS = re.compile(r"^packs/runs-[0-9a-f]{32}\.runs$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,199}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
SYMBOLIC = "ref: "


def content_name(data: bytes | memoryview) -> str:
    """The 32-hex name of a file's content."""
    return blake3.blake3(data).hexdigest()[:32]


def pack_path(h: str) -> str:
    return f"{PACKS}pack-{h}.pack"


def idx_path(h: str) -> str:
    return f"{PACKS}pack-{h}.idx"


def runs_path(h: str) -> str:
    return f"{PACKS}runs-{h}.runs"


def is_idx(path: str) -> bool:
    m = _PACK.match(path)
    return bool(m) and m.group(2) == "idx"


def is_pack(path: str) -> bool:
    m = _PACK.match(path)
    return bool(m) and m.group(2) == "pack"


def is_runs(path: str) -> bool:
    return bool(_RUNS.match(path))


def is_pack_name(name: str) -> bool:
    """A pack name as an index may give it (``pack-<32 hex>.pack``): nothing that could
    lead outside ``packs/``."""
    return is_pack(PACKS + name)


# -- refs.json ----------------------------------------------------------------------------


def check_ref(remote: str, key: str, value: object) -> str:
    """``value`` if ``key -> value`` may be in refs.json, else RemoteError naming the remote."""
    parts = key.split("/") if isinstance(key, str) else []
    ok = bool(parts) and all(_PART.match(p) and not p.endswith(".lock") and ".." not in p
                             for p in parts)  # fmt: skip
    symbolic = False
    if ok and parts[0] in ("names", "tags"):
        ok = len(parts) == 2
    elif ok and parts[0] == "models" and len(parts) == 4 and parts[2] == "versions":
        ok = bool(_VERSION.match(parts[3]))
    elif ok and parts[0] == "models" and len(parts) == 4 and parts[2] == "aliases":
        symbolic = True
    else:
        ok = False
    if not ok:
        raise RemoteError(
            f"remote {remote}: refs.json names a ref {str(key)[:80]!r} that is not "
            "names/<n>, tags/<t> or models/<m>/versions|aliases/<v>; refused"
        )
    if symbolic:
        target = value[len(SYMBOLIC) :] if isinstance(value, str) else ""
        tparts = target.split("/")
        if not (isinstance(value, str) and value.startswith(SYMBOLIC) and len(tparts) == 4
                and tparts[:3] == ["models", parts[1], "versions"]
                and _VERSION.match(tparts[3])):  # fmt: skip
            raise RemoteError(
                f"remote {remote}: refs.json alias {key} is {str(value)[:80]!r}, not "
                f"'ref: models/{parts[1]}/versions/<n>'; refused"
            )
        return value
    if not isinstance(value, str) or not _HEX64.match(value):
        raise RemoteError(
            f"remote {remote}: refs.json ref {key} is {str(value)[:80]!r}, not a 64-hex id; refused"
        )
    return value


def decode_refs(remote: str, data: bytes | None) -> dict[str, str]:
    """The refs of a refs.json (empty when absent), every key and value checked."""
    if data is None:
        return {}
    if len(data) > MAX_REFS_BYTES:
        raise RemoteError(f"remote {remote}: refs.json has {len(data)} bytes; refused")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RemoteError(f"remote {remote}: refs.json is not valid JSON ({e}); refused") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("refs"), dict):
        raise RemoteError(f'remote {remote}: refs.json is not {{"format": 1, "refs": {{...}}}}')
    if doc.get("format") != FORMAT:
        raise RemoteError(
            f"remote {remote}: refs.json has format {json.dumps(doc.get('format'))[:20]}; this mlvc "
            f"reads format {FORMAT} (upgrade mlvc)"
        )
    return {key: check_ref(remote, key, value) for key, value in doc["refs"].items()}


def encode_refs(refs: dict[str, str]) -> bytes:
    return (json.dumps({"format": FORMAT, "refs": dict(sorted(refs.items()))}, indent=1)
            + "\n").encode()  # fmt: skip


# -- .runs files --------------------------------------------------------------------------


def encode_runs(ids) -> bytes:
    return "".join(f"{h}\n" for h in sorted({ObjectId(i).hex for i in ids})).encode()


def decode_runs(remote: str, path: str, data: bytes) -> list[ObjectId]:
    """The run ids of a .runs file; RemoteError for anything but 64-hex lines."""
    try:
        lines = data.decode("ascii").split()
        return [ObjectId.parse(line) for line in lines]
    except (UnicodeDecodeError, ValueError):
        raise RemoteError(
            f"remote {remote}: {path} is damaged (not one 64-hex run id a line); refused"
        ) from None
