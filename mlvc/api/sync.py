"""push, fetch, pull and clone for a ``Repo`` (the verbs of mlvc.remotes, made visible).

The remotes layer moves objects and refs.json; what needs the index lives here: fetched
runs are journalled, given their run refs, then ingested, in the write order of a commit
(objects → sync → journal → run ref → index), all while gc.lock is held shared so no gc
removes fetched objects before a ref names them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.ids import ObjectId
from ..errors import MlvcError
from ..events import emit, pre
from ..remotes import config
from ..remotes.fetch import FetchReport
from ..remotes.fetch import fetch as fetch_objects
from ..remotes.fs import open_transport
from ..remotes.lazy import LAZY_FROM, mark_lazy
from ..remotes.lazy import MARKER as LAZY_MARKER
from ..remotes.push import PushReport
from ..remotes.push import push as push_objects
from ..remotes.refsync import local_refs, plan_pull, target, write_local
from ..remotes.state import load_base, save_base
from ..store.locks import writing

if TYPE_CHECKING:
    from .repo import Repo


def _open(repo: Repo, name: str | None):
    remote = config.get(repo.layout, name)
    return remote, open_transport(remote)


def push(repo: Repo, remote: str | None = None, runs: Sequence[str] = (),
         all_runs: bool = False, force: bool = False) -> PushReport:  # fmt: skip
    """Send the remote what it lacks of ``runs`` (default: HEAD and every ref), then refs."""
    if runs and all_runs:
        from ..errors import UsageError

        raise UsageError("give runs or --all, not both")
    if remote is not None and remote not in {r.name for r in config.list_remotes(repo.layout)}:
        try:  # `mlvc push RUN`: a run, not a remote (when no remote has that name)
            repo.resolve(remote)
            remote, runs = None, (remote, *runs)
        except MlvcError:
            pass  # config.get names the unknown remote below
    r, transport = _open(repo, remote)
    ids = [repo.resolve(s) for s in runs] or None
    before = lambda new: pre.push(repo.ctx, r.name, transport.url, new)  # noqa: E731
    report = push_objects(repo.store, repo.refs, repo.layout.remote(r.name), repo.layout.tmp,
                          transport, r.name, ids, all_runs, force, before)  # fmt: skip
    for ref, value in sorted(report.refs.items()):
        emit(repo.ctx, "ref.updated", {"ref": ref, "new": value, "remote": r.name,
                                       "url": report.url, "via": "push"})  # fmt: skip
    return report


def fetch(repo: Repo, remote: str | None = None, runs: Sequence[str] = ()) -> FetchReport:
    """Bring the remote's runs this repository lacks (or ``runs``), verified, and index them."""
    from ..core.spawn import gathered
    from ..store.pack.merge import maybe_start as maybe_merge

    r, transport = _open(repo, remote)
    ctx = repo.ctx
    cache = ctx.layout.remote(r.name)
    lazy = LAZY_FROM if (cache / LAZY_MARKER).exists() else None
    with writing(ctx.dir, ctx.store):
        report, new = fetch_objects(ctx.store, ctx.refs, cache, transport, r.name,
                                    list(runs) or None, lazy)  # fmt: skip
        _publish(repo, new)
    if new:
        with gathered():  # the index worker and a merger of small packs: one start
            ctx.index.try_ingest()
            maybe_merge(ctx.store, ctx.layout.root, ctx.settings.gc_auto)
    report.requests, report.bytes_received = transport.requests, transport.bytes_in
    return report


def _publish(repo: Repo, runs: list[ObjectId]) -> None:
    """Journal the fetched runs, list them, and add them to the run list (``mlvc log``'s
    cache: its first call after a clone of 10,000 runs read every run object, ~1 s)."""
    from ..refs.runlist import remember_read

    ctx = repo.ctx
    for oid in runs:
        ctx.index.journal(oid)
    with ctx.refs.batch():
        for oid in runs:
            ctx.refs.add_run(oid)
    remember_read(ctx.layout.runlist, ctx.store, runs)


@dataclass
class PullReport:
    """A fetch plus what it did to local refs (``mlvc pull --json``)."""

    fetch: FetchReport
    updated: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "fetch": self.fetch.to_dict()}


def pull(repo: Repo, remote: str | None = None, runs: Sequence[str] = ()) -> PullReport:
    """fetch, then move local names, tags and model refs the remote moved and that did not
    change here since they last agreed; a ref changed on both sides is reported, not
    overwritten. Checkout stays a separate step."""
    r = config.get(repo.layout, remote)
    report = PullReport(fetch(repo, r.name, runs))
    cache = repo.layout.remote(r.name)
    base = load_base(cache)
    mine = local_refs(repo.refs)
    theirs = report.fetch.refs
    if runs:  # only the refs that name what was asked for
        wanted = {ObjectId.parse(h) for h in report.fetch.runs}
        for spec in runs:
            for key in (spec, f"names/{spec}", f"tags/{spec}"):
                if key in theirs and target(theirs[key]) is not None:
                    wanted.add(target(theirs[key]))
        theirs = {k: v for k, v in theirs.items() if target(v) is None or target(v) in wanted}
    merge = plan_pull(r.name, mine, theirs, base)
    who = repo.ctx.author()
    with repo.refs.batch():
        for key, value in merge.updated.items():
            t = target(value)
            if t is not None and not repo.store.has(t):
                continue
            try:
                write_local(repo.refs, key, value, f"pull: {r.name}", who)
            except MlvcError as e:  # a symbolic ref to a version not pulled: say so
                merge.conflicts.append(f"{key}: not updated ({e})")
                continue
            report.updated[key] = value
    report.kept, report.conflicts = merge.kept, merge.conflicts
    base.update({k: v for k, v in theirs.items() if _value(repo, k) == v})
    save_base(cache, base)
    return report


def _value(repo: Repo, key: str) -> str | None:
    sym = repo.refs.read_symbolic(f"refs/{key}")
    if sym is not None:
        return "ref: " + sym[len("refs/") :]
    oid = repo.refs.read_or_none(f"refs/{key}")
    return oid.hex if oid else None


def clone(url: str, path: str | os.PathLike, lazy: bool = False) -> tuple[Repo, PullReport]:
    """A new repository at ``path`` with ``url`` as ``origin``, and everything pulled;
    ``lazy``: files of 1 MiB or more stay on origin until first read."""
    from .repo import Repo

    target_dir = Path(path)
    if target_dir.exists() and any(target_dir.iterdir()):
        from ..errors import UsageError

        raise UsageError(f"clone: {target_dir} exists and is not empty")
    target_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo.init(target_dir)
    config.add(repo.layout, config.DEFAULT, url)
    if lazy:
        mark_lazy(repo.layout.remote(config.DEFAULT))
        repo = Repo(target_dir)  # opened again: its store now keeps origin's promises
    return repo, pull(repo, config.DEFAULT)


def fsck_remote(repo: Repo, remote: str | None = None, prune_orphans: bool = False,
                grace: float | None = None):  # fmt: skip
    """Verify a remote through its transport (mlvc.remotes.check); with ``prune_orphans``,
    delete the packs interrupted pushes left without an index, once older than ``grace``."""
    from ..remotes.check import GRACE_S, check_remote

    r, transport = _open(repo, remote)
    repo.layout.tmp.mkdir(parents=True, exist_ok=True)
    return check_remote(transport, r.name, prune_orphans,
                        GRACE_S if grace is None else grace, repo.layout.tmp)  # fmt: skip
