"""Run addressing: turn what a user typed into a run id.

Accepted, in this order: ``HEAD`` (or ``@``); a run name (``refs/names``); a tag
(``refs/tags``); a full id; a unique id prefix of 4+ hex digits. Any of these may end in
``~N`` (N-th first parent) or ``^`` (first parent), repeatable: ``HEAD~2``, ``baseline^^``.

So that one spelling never means two runs, a run name or tag cannot be ``HEAD`` nor 4-64 hex
digits, nor hold ``~ ^ : @ /`` (``refs.check_ref_name``). A name or tag made before this rule
that is also the prefix of another run's id is reported as ambiguous.
"""

from __future__ import annotations

import difflib
import logging
import re

from ..core.ids import ObjectId, is_hex_prefix
from ..errors import AmbiguousRun, MlvcError, UnknownRun
from ..store.odb import ObjectStore
from ..store.typed import read_run
from .store import RefStore

log = logging.getLogger(__name__)
_SUFFIX = re.compile(r"(~\d*|\^)+$")
MIN_PREFIX = 4


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
    named = None
    for ns in ("names", "tags"):
        if _plain(spec):
            oid = _read_named(refs, f"refs/{ns}/{spec}")
            if oid is not None:
                named = (ns[:-1], oid)
                break
    hits = []
    if is_hex_prefix(spec.lower()):
        prefix = spec.lower()
        if len(prefix) == 64 and refs.has_run(ObjectId.parse(prefix)):
            hits = [ObjectId.parse(prefix)]
        else:
            hits = [oid for oid in refs.run_ids() if oid.hex.startswith(prefix)]
    if named is not None:
        others = [h for h in hits if h != named[1]]
        if others:  # a name or tag from before names were checked, spelled like a prefix
            kind, oid = named
            raise AmbiguousRun(
                spec, [f"{kind} {spec} (run {oid.short})", *sorted(h.short for h in others)]
            )
        return named[1]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise AmbiguousRun(spec, sorted(h.short for h in hits))
    raise UnknownRun(spec, _candidates(refs, spec), _hint(spec))


def _hint(spec: str) -> str:
    """Why ``spec`` matched nothing, when it looks like a too-short id prefix."""
    text = spec.lower()
    if 0 < len(text) < MIN_PREFIX and all(c in "0123456789abcdef" for c in text):
        return f"an id prefix needs at least {MIN_PREFIX} hex digits"
    return ""


def _plain(spec: str) -> bool:
    return "/" not in spec and not spec.startswith(".") and spec not in ("", ".", "..")


def _candidates(refs: RefStore, spec: str) -> list[str]:
    names = list(named_runs(refs, "names")) + list(named_runs(refs, "tags"))
    close = difflib.get_close_matches(spec, names, n=5, cutoff=0.5)
    text = spec.lower()
    if not close and text and all(c in "0123456789abcdef" for c in text[:64]):
        start = text if len(text) < MIN_PREFIX else text[:2]
        close = sorted(o.short for o in refs.run_ids() if o.hex.startswith(start))[:5]
    return close


def named_runs(refs: RefStore, namespace: str) -> dict[str, ObjectId]:
    """The runs that ``refs/<namespace>/*`` (names or tags) point at, by name.

    A damaged ref is left out with a warning, so one bad file does not stop every command;
    ``mlvc fsck`` names it.
    """
    out = {}
    for name in refs.names(namespace):
        oid = _read_named(refs, f"refs/{namespace}/{name}")
        if oid is not None:
            out[name] = oid
    return out


def _read_named(refs: RefStore, ref: str) -> ObjectId | None:
    """The run a name or tag ref points at; None, with a warning, if the ref is damaged."""
    return read_named(refs, ref)[0]


def read_named(refs: RefStore, ref: str, quiet: bool = False) -> tuple[ObjectId | None, bool]:
    """(the run a name or tag ref points at, whether the ref's own file holds it: not a
    symbolic ref); (None, False), with a warning unless ``quiet``, if the ref is damaged."""
    try:
        return refs.read_direct(ref)
    except UnicodeDecodeError:
        why = "it is not text"
    except (MlvcError, ValueError):
        why = "it does not hold a run id"
    except OSError as e:
        why = e.strerror or type(e).__name__
    if not quiet:
        log.warning("ignoring ref %s: %s; run `mlvc fsck`", ref, why)
    return None, False
