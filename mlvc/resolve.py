"""Run addressing: turn what a user typed into a run id.

Accepted, in this order: ``HEAD``; a run name (``refs/names``); a tag (``refs/tags``); a full
id; a unique id prefix of 4+ hex digits. Any of these may end in ``~N`` (N-th first parent)
or ``^`` (first parent), repeatable: ``HEAD~2``, ``baseline^^``.
"""

from __future__ import annotations

import difflib
import re

from .errors import AmbiguousRun, UnknownRun
from .ids import ObjectId, is_hex_prefix
from .odb import ObjectStore
from .refs import RefStore
from .trees import read_run

_SUFFIX = re.compile(r"(~\d*|\^)+$")


def resolve(refs: RefStore, store: ObjectStore, spec: str) -> ObjectId:
    spec = spec.strip()
    m = _SUFFIX.search(spec)
    base, steps = (spec[: m.start()], _count_steps(m.group(0))) if m and m.start() else (spec, 0)
    oid = _resolve_base(refs, base)
    for i in range(steps):
        parents = read_run(store, oid).parents
        if not parents:
            raise UnknownRun(spec, [f"{base}~{i}" if i else base]) from None
        oid = parents[0]
    return oid


def _count_steps(suffix: str) -> int:
    total = 0
    for part in re.findall(r"~\d*|\^", suffix):
        total += int(part[1:]) if part.startswith("~") and len(part) > 1 else 1
    return total


def _resolve_base(refs: RefStore, spec: str) -> ObjectId:
    if spec in ("HEAD", "@"):
        oid = refs.read("HEAD")
        if oid is None:
            raise UnknownRun("HEAD", []) from None
        return oid
    for ns in ("names", "tags"):
        if _plain(spec):
            oid = refs.read(f"refs/{ns}/{spec}")
            if oid is not None:
                return oid
    if is_hex_prefix(spec.lower()):
        prefix = spec.lower()
        if len(prefix) == 64 and refs.has_run(ObjectId.parse(prefix)):
            return ObjectId.parse(prefix)
        hits = [oid for oid in refs.run_ids() if oid.hex.startswith(prefix)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise AmbiguousRun(spec, sorted(h.short for h in hits))
    raise UnknownRun(spec, _candidates(refs, spec))


def _plain(spec: str) -> bool:
    return "/" not in spec and not spec.startswith(".") and spec not in ("", ".", "..")


def _candidates(refs: RefStore, spec: str) -> list[str]:
    names = list(refs.list("names")) + list(refs.list("tags"))
    close = difflib.get_close_matches(spec, names, n=5, cutoff=0.5)
    if not close and is_hex_prefix(spec[:4].lower()):
        close = [o.short for o in refs.run_ids() if o.hex.startswith(spec[:2].lower())][:5]
    return close
