"""Checking a repository: every object re-hashed, every ref and run followed to the end.

``fsck`` collects every problem instead of stopping at the first; an empty list means the
store is whole. Orphan temp files left by a killed process are removed and not counted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import CorruptObject, MissingObject, MlvcError
from .ids import ObjectId
from .objects import DIR, Run
from .odb import ObjectStore
from .refs import RefStore
from .trees import read_env, read_run, read_tree

TMP_GRACE_S = 3600


def fsck(store: ObjectStore, refs: RefStore, tmp_dir: Path | None = None) -> list[str]:
    problems: list[str] = []
    if hasattr(store, "check_packs"):
        problems.extend(store.check_packs())
        for torn in store.torn_packs(time.time() - TMP_GRACE_S):
            torn.unlink(missing_ok=True)  # a writer killed mid-pack; never referenced
    for oid in store.ids():
        problems.extend(store.check(oid))
    bad = {p.split()[2] for p in problems if p.startswith("corrupt object")}

    seen_trees: set[ObjectId] = set()
    seen_envs: set[ObjectId] = set()
    for rid in refs.run_ids():
        problems.extend(_check_run(store, refs, rid, seen_trees, seen_envs, bad))
    problems.extend(_check_named_refs(store, refs))
    problems.extend(_check_model_refs(store, refs, seen_trees, bad))
    if tmp_dir is not None:
        clean_tmp(tmp_dir)
    return problems


def _check_named_refs(store: ObjectStore, refs: RefStore) -> list[str]:
    out = []
    named = {"HEAD": None}
    for ns in ("names", "tags"):
        named.update({f"refs/{ns}/{n}": None for n in refs.list(ns)})
    for ref in named:
        try:
            oid = refs.read(ref)
        except MlvcError as e:
            out.append(str(e))
            continue
        if oid is not None and not refs.has_run(oid):
            out.append(f"ref {ref} points at {oid.hex}, which is not a recorded run")
    return out


def _check_model_refs(store: ObjectStore, refs: RefStore, seen: set, bad: set) -> list[str]:
    """Registered model versions name stored trees; aliases name existing versions."""
    out = []
    base = refs.dir / "refs" / "models"
    for path in sorted(base.rglob("*")) if base.is_dir() else []:
        if not path.is_file() or path.name.endswith(".lock") or path.name.startswith("."):
            continue
        ref = path.relative_to(refs.dir).as_posix()
        try:
            oid = refs.read(ref)
        except MlvcError as e:
            out.append(str(e))
            continue
        if oid is None:
            target = refs.read_symbolic(ref)
            out.append(f"ref {ref} points at {target or 'nothing'}, which does not exist")
        elif not store.has(oid):
            out.append(f"ref {ref} names model tree {oid.hex}, which is missing")
        else:
            out.extend(f"ref {ref}: {m}" for m in _check_tree(store, oid, seen, bad))
    return out


def _check_run(store, refs, rid, seen_trees, seen_envs, bad) -> list[str]:
    if not store.has(rid):
        return [f"run {rid.hex} is listed in refs/runs but its object is missing"]
    if rid.hex in bad:
        return []  # already reported as corrupt
    try:
        run: Run = read_run(store, rid)
    except (CorruptObject, MissingObject) as e:
        return [f"run {rid.hex}: {e}"]
    out = []
    for p in run.parents:
        if not refs.has_run(p):
            out.append(f"run {rid.hex} has parent {p.hex}, which is not a recorded run")
    for section, tid in run.sections.items():
        if tid is not None:
            out.extend(
                f"run {rid.short} {section}: {m}" for m in _check_tree(store, tid, seen_trees, bad)
            )
    if run.env is not None and run.env not in seen_envs:
        seen_envs.add(run.env)
        try:
            read_env(store, run.env)
        except (CorruptObject, MissingObject) as e:
            out.append(f"run {rid.short} env: {e}")
    for label, oid in (("series", run.series), ("reproduces", run.reproduces)):
        if oid is not None and not store.has(oid) and not refs.has_run(oid):
            out.append(f"run {rid.short} {label} object {oid.hex} is missing")
    patch = run.git.get("patch") if isinstance(run.git, dict) else None
    if patch and not store.has(ObjectId.parse(patch)):
        out.append(f"run {rid.short} git patch object {patch} is missing")
    return out


def _check_tree(store: ObjectStore, tid: ObjectId, seen: set, bad: set) -> list[str]:
    """Problems in a tree and every tree below it (iterative: any depth)."""
    out = []
    stack = [tid]
    while stack:
        tid = stack.pop()
        if tid in seen:
            continue
        seen.add(tid)
        if tid.hex in bad:
            continue
        try:
            tree = read_tree(store, tid)
        except (CorruptObject, MissingObject) as e:
            out.append(str(e))
            continue
        for e in tree.entries:
            if e.kind == DIR:
                stack.append(e.id)
            elif not store.has(e.id):
                out.append(f"tree {tid.short} entry {e.name!r} names missing object {e.id.hex}")
    return out


def clean_tmp(tmp_dir: Path) -> int:
    """Remove temp files older than an hour (left by killed writers); returns how many."""
    n = 0
    cutoff = time.time() - TMP_GRACE_S
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return 0
    for ent in entries:
        try:
            if ent.is_file() and ent.stat().st_mtime < cutoff:
                os.unlink(ent.path)
                n += 1
        except OSError:
            continue
    return n
