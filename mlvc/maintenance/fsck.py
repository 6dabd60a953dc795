"""Checking a repository: every object re-hashed, every ref and run followed to the end.

``fsck`` collects every problem instead of stopping at the first; an empty list means the
store is whole. Orphan temp files left by a killed process are removed and not counted.

What fsck can repair without losing anything it repairs, and still reports (so a second
run is clean): a pack whose index is damaged, missing or unreadable is indexed anew from
the pack (packscan.py); a damaged stat cache is removed. It never deletes a pack.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..core.events import check as check_events
from ..core.ids import ObjectId
from ..core.layout import Layout
from ..core.objects import DIR, Run
from ..errors import CorruptObject, MissingObject, MlvcError
from ..refs.store import RefStore, text_name
from ..runs.staging import check as check_staged
from ..store.odb import ObjectStore
from ..store.pack import repair_for_fsck
from ..store.pack.merge import no_merge
from ..store.typed import read_env, read_run, read_tree

TMP_GRACE_S = 3600
SETTLE_S = 60  # a ref and its reflog line are written one after the other, not at once
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{64}$|^-$")


def fsck(
    store: ObjectStore, refs: RefStore, tmp_dir: Path | None = None, notes: list | None = None
) -> list[str]:
    """Every problem found (an empty list: the store is whole). ``notes`` receives what was
    tidied that a crash can leave behind (a killed writer's pack indexed), not a problem."""
    from ..workspace.statcache import check_file

    problems: list[str] = []
    if hasattr(store, "check_packs"):
        with no_merge(store.pack_dir):  # a pack merged away midway is not a missing one
            damage, tidied = repair_for_fsck(store, refs.dir, TMP_GRACE_S)
            problems.extend(damage)
            if notes is not None:
                notes.extend(tidied)
            problems.extend(store.check_packs())
            for tmp in store.stale_temps(time.time() - TMP_GRACE_S):
                tmp.unlink(missing_ok=True)  # an index temp file of a killed writer: no data
    for oid in store.ids():
        problems.extend(store.check(oid))
    bad = {p.split()[2] for p in problems if p.startswith("corrupt object")}

    seen_trees: set[ObjectId] = set()
    seen_envs: set[ObjectId] = set()
    for rid in refs.run_ids():
        problems.extend(_check_run(store, refs, rid, seen_trees, seen_envs, bad))
    problems.extend(_check_run_refs(refs))
    problems.extend(_check_named_refs(store, refs))
    problems.extend(_check_model_refs(store, refs, seen_trees, bad))
    problems.extend(_check_reflogs(refs))
    problems.extend(check_staged(Layout(refs.dir), store))
    problems.extend(check_events(Layout(refs.dir)))
    problems.extend(check_file(refs.dir / "statcache"))
    if tmp_dir is not None:
        clean_tmp(tmp_dir)
    return problems


def _ref_files(mlvc_dir: Path, base: str) -> list[str]:
    """Every ref file under ``base`` (a folder below .mlvc), as a ref name; no lock files."""
    out = []
    for folder, _dirs, names in os.walk(mlvc_dir / base):
        for n in names:
            if n.endswith((".lock", ".tmp")) or n.startswith("."):
                continue
            out.append((Path(folder) / n).relative_to(mlvc_dir).as_posix())
    return sorted(out)


def _check_run_refs(refs: RefStore) -> list[str]:
    """``refs/runs/<id>`` files: named by a full id and holding that id."""
    out = []
    for ref in _ref_files(refs.dir, "refs/runs"):
        name = ref.rsplit("/", 1)[-1]
        if not _HEX64.match(name):
            out.append(f"ref {ref} is not named by a run id; remove it if it is not yours")
            continue
        try:
            text = (refs.dir / ref).read_bytes().decode().strip()
        except (OSError, UnicodeDecodeError) as e:
            out.append(f"ref {ref} cannot be read ({e}); write {name} into it")
            continue
        if text != name:
            out.append(f"ref {ref} holds {text[:80]!r}, not its run id; write {name} into it")
    return out


def _check_named_refs(store: ObjectStore, refs: RefStore) -> list[str]:
    """HEAD and every ref outside runs/ and models/, each read on its own: one bad ref never
    hides the others."""
    out = []
    head = refs.dir / "HEAD"
    try:
        if head.is_file() and not head.read_bytes().strip():
            out.append(
                "ref HEAD is empty: it names no run; point it at one with `mlvc checkout RUN`"
            )
    except OSError as e:
        out.append(f"ref HEAD cannot be read ({e.strerror})")
    named = ["HEAD"] + [
        r
        for r in _ref_files(refs.dir, "refs")
        if not r.startswith(("refs/runs/", "refs/models/", "refs/mlflow/"))
    ]
    for ref in named:
        if ref.startswith(("refs/names/", "refs/tags/")) and not text_name(ref):
            out.append(
                f"ref {ref} has a name that is not UTF-8: the index leaves it out (queries, "
                "the server and the web UI do not show it); rename or delete the file"
            )
        try:
            oid = refs.read(ref)
        except MlvcError as e:
            out.append(str(e))
            continue
        except OSError as e:  # a link that loops, a file that cannot be opened
            out.append(f"ref {ref} cannot be read ({e.strerror}); delete it or fix it")
            continue
        if ref.startswith("refs/mlflow/"):  # the server's MLflow state: JSON blobs, not runs
            if oid is not None and not store.has(oid):
                out.append(f"ref {ref} points at {oid.hex}, which is missing")
            continue
        if oid is not None and not refs.has_run(oid):
            out.append(f"ref {ref} points at {oid.hex}, which is not a recorded run")
    return out


def _check_reflogs(refs: RefStore) -> list[str]:
    """Every reflog line has its five fields: old and new id (or -), a time, who, why; it
    ends with a newline; HEAD, names and tags have one; and every run a reflog of theirs
    names is still in ``refs/runs`` (a lost run ref).

    Damage to the author or message text cannot be told from a real one: nothing checks it.
    """
    mlvc_dir = refs.dir
    out = []
    settled = time.time() - SETTLE_S  # a ref is renamed in just before its line is logged
    for ref in ["HEAD"] + _ref_files(mlvc_dir, "refs/names") + _ref_files(mlvc_dir, "refs/tags"):
        if _older((mlvc_dir / ref), settled) and not (mlvc_dir / "logs" / ref).is_file():
            out.append(f"ref {ref} has no reflog (logs/{ref} is missing)")
    for log in _ref_files(mlvc_dir, "logs"):
        if log != "logs/HEAD" and not log.startswith("logs/refs/"):
            continue  # not a reflog (the server's audit.log)
        try:
            text = (mlvc_dir / log).read_bytes().decode()
        except UnicodeDecodeError:
            out.append(f"reflog {log} holds bytes that are not text")
            continue
        except OSError as e:
            out.append(f"reflog {log} cannot be read ({e.strerror})")
            continue
        if text and not text.endswith("\n"):
            out.append(f"reflog {log} does not end with a newline: its last line is cut")
        runs_log = log.startswith(("logs/refs/names/", "logs/refs/tags/")) or log == "logs/HEAD"
        last = None
        for i, line in enumerate(text.splitlines(), 1):
            parts = line.split("\t")
            if len(parts) != 5 or not (_ID.match(parts[0]) and _ID.match(parts[1])):
                out.append(f"reflog {log} line {i} is damaged: {line[:60]!r}")
                continue
            try:
                float(parts[2])
            except ValueError:
                out.append(f"reflog {log} line {i} has a damaged time: {parts[2][:30]!r}")
            new = last = parts[1]
            if runs_log and new != "-" and not refs.has_run(ObjectId.parse(new)):
                out.append(
                    f"reflog {log} line {i} names run {new}, which is not in refs/runs "
                    f"(if the run object is there, restore refs/runs/{new})"
                )
        ref = log[len("logs/") :]
        gone = not (mlvc_dir / ref).exists()
        if runs_log and last not in (None, "-") and gone and _older(mlvc_dir / log, settled):
            out.append(f"ref {ref} is missing, but its reflog says it points at run {last}")
    return out


def _older(path: Path, than: float) -> bool:
    try:
        return path.stat().st_mtime < than
    except OSError:
        return False


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
            elif e.id.hex not in bad and store.present(e.id):  # not a lazy clone's promise
                out.extend(_check_size(store, tid, e))
    return out


def _check_size(store: ObjectStore, tid: ObjectId, e) -> list[str]:
    """A file entry's size is its object's (a tree that lies about it misleads du, diff
    and the stat cache's size test)."""
    try:
        size = store.size(e.id)
    except MlvcError:
        return []  # unreadable: reported by the object check
    if size != e.size:
        return [
            f"tree {tid.short} entry {e.name!r} says {e.size} bytes, "
            f"but object {e.id.hex} holds {size}"
        ]
    return []


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
