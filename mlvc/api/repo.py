"""``Repo``: the public library API. The CLI and any future server call only this.

A repository is a project folder holding ``.mlvc/``: the object store, refs, the journal of
runs not yet in the index, and the DuckDB index (a cache rebuilt from objects and refs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId, RunId
from ..core.layout import Layout
from ..core.layout import find_root as layout_find_root
from ..core.objects import DIR, Run
from ..core.settings import RepoConfig, Settings
from ..errors import (
    AlreadyARepository,
    MlvcError,
    NotARepository,
    PathNotInRun,
    UsageError,
)
from ..refs.store import check_ref_name
from ..store.typed import lookup, read_run
from ..workspace.context import RepoContext
from .views import describe_run, jsonable

# Writing, reaping, checking and the working tree's modules are imported by the methods that
# use them, so a read (``log``, ``show``) loads only what it reads with.
if TYPE_CHECKING:
    import pyarrow as pa

    from ..core.events import Event
    from ..diff.runs import RunDiff
    from ..exec.execute import Outcome
    from ..importers.mlflow import ImportReport
    from ..index.series import SeriesSet
    from ..maintenance.export import ExportReport
    from ..maintenance.gc import GcReport
    from ..reproduce.bisect import Bisection
    from ..reproduce.lineage import Node
    from ..reproduce.run import Reproduction
    from ..runs.record import Inputs, RunSpec
    from ..workspace.checkout import CheckoutResult
    from ..workspace.statcache import FileHasher
    from .which import Provenance


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` that holds ``.mlvc/``."""
    root = layout_find_root(start)
    if root is None:
        raise NotARepository(str(Path(start or os.getcwd()).resolve()))
    return root


class Repo:
    """An mlvc repository: ``Repo()`` finds it from the working directory."""

    def __init__(self, path: str | os.PathLike | None = None, settings: Settings | None = None):
        layout = Layout.of(find_root(path))
        RepoConfig.load(layout.config)
        self.ctx = RepoContext.open(layout, settings or Settings.from_env())
        if (layout.dir / "remotes").is_dir():  # a lazy clone: large files arrive when read
            from ..remotes.lazy import promisor_of

            self.ctx.store.lazy = promisor_of(layout, self.ctx.store)

    @classmethod
    def _view(cls, ctx: RepoContext) -> Repo:
        view = cls.__new__(cls)
        view.ctx = ctx
        return view

    # the parts of the open repository (mlvc.workspace.context)
    root = property(lambda self: self.ctx.root)
    dir = property(lambda self: self.ctx.dir)
    layout = property(lambda self: self.ctx.layout)
    store = property(lambda self: self.ctx.store)
    refs = property(lambda self: self.ctx.refs)
    settings = property(lambda self: self.ctx.settings)
    index = property(lambda self: self.ctx.index, doc="The DuckDB index, opened lazily.")
    stat_cache = property(lambda self: self.ctx.stat_cache)

    def file_hasher(self) -> FileHasher:
        """The hasher commit gives ``build_tree``: stat cache + worker threads."""
        return self.ctx.file_hasher()

    @classmethod
    def init(cls, path: str | os.PathLike = ".") -> Repo:
        root = Path(path).resolve()
        d = Layout.of(root).dir
        if (d / "config").exists():
            raise AlreadyARepository(f"{root} is already an mlvc repository ({d} exists)")
        try:
            for sub in ("objects", "refs/runs", "refs/names", "refs/tags", "logs", "journal"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            (d / "tmp").mkdir(exist_ok=True)
            (d / ".gitignore").write_text("# mlvc's store is versioned by mlvc, not git\n*\n")
            # the config last, whole (temp + rename): a folder without one is no repository
            (d / "tmp" / "config").write_text(RepoConfig().text())
            os.replace(d / "tmp" / "config", d / "config")
        except OSError as e:
            raise MlvcError(
                f"cannot create a repository in {root}: {e.strerror} ({e.filename})"
            ) from None
        return cls(root)

    def __repr__(self) -> str:
        return f"Repo({str(self.root)!r})"

    # -- addressing -----------------------------------------------------------------------

    def resolve(self, spec: str | RunId) -> ObjectId:
        """A run id from anything a user may type: id, prefix, name, tag, HEAD~N."""
        if isinstance(spec, RunId):
            return spec.oid
        return self.ctx.resolve(spec)

    def run(self, spec: str | ObjectId) -> Run:
        oid = spec if isinstance(spec, ObjectId) else self.resolve(spec)
        return read_run(self.store, oid)

    def head(self) -> ObjectId | None:
        return self.refs.read("HEAD")

    # -- recording ------------------------------------------------------------------------

    def commit(
        self,
        message: str = "",
        *,
        name: str = "",
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        params_files: Iterable[str] = (),
        metrics_files: Iterable[str] = (),
        data: Iterable[str] = (),
        artifacts: Iterable[str] = (),
        tags: Mapping[str, str] | None = None,
        command: Iterable[str] = (),
        cwd: str | os.PathLike | None = None,
        capture_code: bool = True,
        capture_env: bool = True,
        inputs: Inputs | None = None,
    ) -> RunId:
        """Record a run of the project as it is now; returns the new run's id (a ``str``).

        Paths are relative to ``cwd`` (default: the working directory). ``tags`` maps tag
        keys to values; a tag with value ``""`` is a label that also names the run.
        ``capture_code``/``capture_env`` off leave the code or environment out; ``inputs``
        are inputs captured earlier (``mlvc.runs.record.capture_inputs``), used as they are.
        Live runs whose process died are recorded first (as ``killed``).
        """
        from ..events import pre
        from ..runs.record import RunSpec, record_run

        spec = RunSpec(
            message=message,
            name=name,
            params=dict(params or {}),
            metrics=dict(metrics or {}),
            params_files=tuple(params_files),
            metrics_files=tuple(metrics_files),
            data=tuple(data),
            artifacts=tuple(artifacts),
            tags=dict(tags or {}),
            command=tuple(command),
            capture_code=capture_code,
            capture_env=capture_env,
            inputs=inputs,
        )
        pre.commit(self.ctx, _described(spec))
        self.reap()
        return RunId(record_run(self.ctx, spec, Path(cwd) if cwd else None))

    def tag(self, spec: str, tag: str) -> RunId:
        """Point a movable tag at a run (``mlvc tag``); returns the run's id."""
        oid = self.resolve(spec)
        self.refs.write(f"refs/tags/{check_ref_name(tag, 'tag')}", oid, "tag", self.ctx.author())
        self.index.try_ingest()
        return RunId(oid)

    # -- reading --------------------------------------------------------------------------

    def live_runs(self) -> list[dict]:
        """Runs in progress (``mlvc runs``), after recording any whose process died."""
        from ..runs.reaper import live_runs

        self.reap()
        return live_runs(self.ctx)

    def reap(self) -> list[ObjectId]:
        """Record live runs whose process is gone as ``killed``; returns their ids.

        Commands that write reap (``commit``, ``run_entry``, ``reproduce``, ``live_runs``,
        the start of a live run); reads (``log``, ``query``, ``show``, ``lineage``) never do.
        """
        try:  # nothing live (the common case): the reaper and its imports are not needed
            with os.scandir(self.layout.live) as it:
                if next(it, None) is None:
                    return []
        except (FileNotFoundError, NotADirectoryError):
            return []
        from ..runs.reaper import reap_dead_runs

        return reap_dead_runs(self.ctx)

    def log(self, limit: int | None = None) -> list[dict]:
        """Runs newest first, as dicts of the index's ``runs`` columns (id, short_id, name,
        status, message, author, created, ended, parent), read from the refs and run objects
        through the run list (mlvc.refs.runlist), never from the index."""
        from ..refs.runlist import recent_runs

        return recent_runs(self.layout.runlist, self.refs, self.store, limit)

    def show(self, spec: str | ObjectId, files: bool = True) -> dict:
        """Every section of a run as plain data (what ``mlvc show --json`` prints).

        A live run (by its key or name) shows its params, tags and latest metrics, with
        ``status`` ``running``, or ``dead`` when its process is gone and it is not recorded
        yet (the next command that writes records it). Only reads.
        """
        if isinstance(spec, str) and not isinstance(spec, RunId) and self.layout.live.is_dir():
            from ..runs.reaper import live_runs

            live = [r for r in live_runs(self.ctx, dead=True) if spec in (r["key"], r["name"])]
            if live and not (self.refs.read(f"refs/names/{spec}") and live[0]["key"] != spec):
                return live[-1]
        oid = spec if isinstance(spec, ObjectId) else self.resolve(spec)
        return describe_run(
            self.store, oid, read_run(self.store, oid), files=files, head=self.head()
        )

    def cat(self, spec: str) -> Iterator[bytes]:
        """The content of ``RUN:path`` in blocks, verified.

        ``path`` is as ``show`` lists it, optionally after its section's name
        (``best:artifacts/model.pkl`` is ``model.pkl`` in the artifacts)."""
        run_spec, _, path = spec.partition(":")
        oid = self.resolve(run_spec)
        run = read_run(self.store, oid)
        path = path.strip("/")
        where = [(section, tree, path) for section, tree in run.sections.items()]
        section, _, rest = path.partition("/")
        if rest and section in run.sections:
            where.append((section, run.sections[section], rest))
        folder = None
        for section, tree, inner in where:
            entry = lookup(self.store, tree, inner) if inner else None
            if entry is not None and entry.kind != DIR:
                return self.store.iter_content(entry.id)
            if entry is not None:
                folder = folder or section
        if folder:
            raise PathNotInRun(f"{path} is a folder in run {oid.short} ({folder}); name a file")
        raise PathNotInRun(
            f"run {oid.short} has no file {path!r}; `mlvc show {run_spec}` lists them"
        )

    def diff(self, a: str, b: str, patch: bool = False) -> RunDiff:
        from ..diff.runs import diff_runs

        return diff_runs(self.store, self.resolve(a), self.resolve(b), patch=patch)

    def status(self) -> dict:
        """The working tree against the HEAD run: per section, added / removed / modified."""
        from ..capture import code_files
        from ..runs.record import expand
        from ..workspace.checkout import compare, run_files
        from ..workspace.project import load_project

        head = self.head()
        run = read_run(self.store, head) if head else Run()
        cfg = load_project(self.root)
        paths = run.extra.get("paths", {}) if head else {}
        data = sorted({*paths.get("data", ()), *cfg.data})
        arts = sorted({*paths.get("artifacts", ()), *cfg.artifacts})
        recorded = {sec: run_files(self.store, run, [sec]) for sec in ("code", "data", "artifacts")}
        present = {"code": code_files(self.root, exclude=[*data, *arts], include=cfg.params)}
        for sec, paths in (("data", data), ("artifacts", arts)):
            # files logged one by one (not under a tracked path) count where they were recorded
            listed = expand(self.root, [p for p in paths if os.path.lexists(self.root / p)])
            present[sec] = sorted(
                {*listed, *(p for p in recorded[sec] if os.path.lexists(self.root / p))}
            )
        out = {"head": head.hex if head else None}
        cache = self.stat_cache
        cache.begin()
        for sec, files in present.items():
            out[sec] = compare(self.store, recorded[sec], self.root, files, cache)
        cache.save()
        return out

    # -- writing the working tree ---------------------------------------------------------

    def checkout(
        self,
        spec: str,
        to: str | os.PathLike | None = None,
        only: str | Iterable[str] | None = None,
        force: bool = False,
        link: str = "copy",
    ) -> CheckoutResult:
        """Materialize a run's files, verified; in place and whole, also move HEAD to it.

        ``only`` (sections) leaves HEAD alone, as ``git checkout REV -- path`` does; the
        sections it wrote are remembered so a later checkout knows they hold recorded
        content. ``link``: ``copy`` (default), or ``hardlink``/``symlink`` to read-only
        verified copies in ``.mlvc/cache/files`` (never to the store itself).
        """
        from ..workspace.checkout import checkout, parse_sections
        from ..workspace.materialize import check_link

        oid = self.resolve(spec)
        run = read_run(self.store, oid)
        sections = parse_sections(only)
        opts = {"force": force, "link": check_link(link), "mlvc_dir": self.dir}
        if to is None:
            head = self.head()
            head_run = read_run(self.store, head) if head else None
            bases = {}
            for sec, rid in self._only_bases(head).items():
                try:
                    bases[sec] = read_run(self.store, rid)
                except MlvcError:
                    pass  # gone or damaged: HEAD's record is the (stricter) baseline
            result = checkout(
                self.store,
                run,
                self.root,
                sections,
                head=head_run,
                cache=self.stat_cache,
                bases=bases,
                **opts,
            )
            if only is None:
                self.refs.write("HEAD", oid, f"checkout: {spec}", self.ctx.author())
                self._save_only_bases(oid, {})
            else:
                done = {**self._only_bases(head), **dict.fromkeys(sections, oid)}
                self._save_only_bases(head, {s: r for s, r in done.items() if r != head})
            result.run_id = oid
            return result
        dest = Path(to).resolve()
        if dest == self.root or self.dir in (dest, *dest.parents):
            raise UsageError(f"--to {to} is the project or its .mlvc folder; choose a new folder")
        for folder in (dest, *dest.parents):
            if os.path.lexists(folder):
                if not folder.is_dir():
                    raise UsageError(f"--to {to}: {folder} is a file; choose a folder")
                break
        result = checkout(self.store, run, dest, sections, **opts)
        result.run_id = oid
        return result

    _ONLY = "only-checkouts"  # under .mlvc: {"head": id, "sections": {section: run id}}

    def _only_bases(self, head: ObjectId | None) -> dict[str, ObjectId]:
        """Sections that ``checkout --only`` filled from another run than HEAD, while HEAD
        was ``head``; what a commit or a whole checkout made stale is ignored."""
        import json

        from ..workspace.checkout import SECTIONS

        try:
            saved = json.loads((self.dir / self._ONLY).read_text())
            if head is None or saved.get("head") != head.hex:
                return {}
            return {s: ObjectId.parse(r) for s, r in saved["sections"].items() if s in SECTIONS}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # absent or unreadable: HEAD alone is the baseline

    def _save_only_bases(self, head: ObjectId | None, bases: dict[str, ObjectId]) -> None:
        import json
        import secrets

        path = self.dir / self._ONLY
        if not bases or head is None:
            path.unlink(missing_ok=True)
            return
        tmp = self.dir / "tmp" / f"{self._ONLY}-{secrets.token_hex(4)}"
        body = {"head": head.hex, "sections": {s: r.hex for s, r in sorted(bases.items())}}
        tmp.write_text(json.dumps(body) + "\n")
        os.replace(tmp, path)

    # -- index and integrity --------------------------------------------------------------

    def query(self, sql: str) -> pa.Table:
        """Run read-only SQL over the index; returns a pyarrow Table. Only reads."""
        return self.index.query(sql)

    def series(
        self,
        runs: Iterable[str],
        keys: Iterable[str],
        x: str = "step",
        window: tuple[float, float] | None = None,
        limit: int = 2500,
    ) -> SeriesSet:
        """Metric series of ``keys`` for ``runs`` (any run specs), each at most ``limit``
        points (min/max per bucket; full resolution when the ``window`` on ``x`` holds
        fewer); docs/ui-compare.md."""
        from ..index.series import SeriesCache, read_series

        ids = list(dict.fromkeys(self.resolve(r).hex for r in runs))
        # kept by this Repo (a server's one), keyed by content: see mlvc.index.series
        cache = self.__dict__.get("_series_cache")
        if cache is None:
            cache = self.__dict__.setdefault("_series_cache", SeriesCache())
        with self.index.connect_readonly() as con:
            return read_series(con, ids, list(dict.fromkeys(keys)), x, window, limit, cache)

    def table_columns(self) -> list[dict]:
        """The columns the runs table can show: ``{"name", "family", "type"}`` each."""
        from dataclasses import asdict

        from .table import columns

        return [asdict(c) for c in columns(self.index)]

    def table_page(
        self,
        where: str = "",
        order: Iterable[str] = (),
        columns: Iterable[str] | None = None,
        offset: int = 0,
        limit: int = 100,
        group: str = "",
        count: bool = True,
    ) -> dict:
        """One page of the runs table (``mlvc.api.table.page``): filtered by a SQL ``WHERE``
        clause, sorted, with the columns asked for; ``count=False`` leaves ``total`` out
        (None). Only reads."""
        from .table import page

        shown = list(columns) if columns is not None else None
        return page(self.index, where, list(order), shown, offset, limit, group, count)

    def preview(self, spec: str, path: str, rows: int = 50) -> dict:
        """The head of a run's file for the web UI (``mlvc.api.preview``): text, JSON, or
        the first ``rows`` rows of a CSV, TSV or Parquet table. Only reads."""
        from .preview import preview

        return preview(self, spec, path, rows)

    def relatives(self, spec: str) -> dict:
        """The runs that have run ``spec`` as a parent (children) or reproduce it."""
        from .preview import relatives

        return relatives(self.index, self.resolve(spec).hex)

    def experiments(self) -> dict[str, str]:
        """{experiment id: name} ("0" is "Default"; others come from the MLflow API)."""
        from .table import experiment_names

        return experiment_names(self.refs, self.store)

    def rebuild_index(self) -> int:
        return self.index.rebuild()

    def which(self, target: str | os.PathLike) -> Provenance:
        """Every run that consumed or produced a file, and the model versions holding it,
        found by content (``mlvc which``): ``target`` is a path (anywhere) or a file id or
        unique id prefix."""
        from .which import which

        return which(self.ctx, str(target))

    # -- export (mlvc.maintenance.export, docs/export.md) ----------------------------------

    def export_parquet(self, dest: str) -> ExportReport:
        """Write what the index holds and ``dest`` lacks as Hive-partitioned Parquet; ``dest``
        is a folder, a pyarrow.fs URL or a configured remote's name."""
        from ..maintenance.export import export_parquet
        from ..maintenance.export_layout import destination_url

        url = destination_url(self.layout, dest)
        return export_parquet(self.index, url, scratch=self.layout.tmp)

    def export_iceberg(self, dest: str, catalog: str | None = None) -> ExportReport:
        """Append what ``dest``'s Iceberg tables lack (extra ``mlvc[iceberg]``)."""
        from ..maintenance.export_layout import destination_url
        from ..maintenance.iceberg import export_iceberg

        url = destination_url(self.layout, dest, "iceberg")
        return export_iceberg(self.index, url, catalog, scratch=self.layout.tmp)

    def import_mlflow(
        self, source: str, experiments: Iterable[str] = (), token: str | None = None
    ) -> ImportReport:
        """Import an MLflow history (``sqlite:///mlflow.db``, ``postgresql://...``,
        ``mysql://...``, a ``./mlruns`` folder or an ``http(s)://`` server with ``token``):
        experiments, runs with their params, tags, metric series, dataset inputs and
        artifacts. Runs already imported are skipped, so importing again adds only new runs."""
        from ..importers.mlflow import import_mlflow

        return import_mlflow(self.ctx, source, experiments, token)

    def fsck(self, notes: list | None = None) -> list[str]:
        """Every problem in the store and refs; empty when all is well. ``notes`` receives
        what was tidied that is not a problem (a killed writer's pack indexed)."""
        from ..maintenance.fsck import fsck
        from ..runs.record import finish_publishing
        from ..store.locks import writing

        with writing(self.dir, self.store):
            finished = finish_publishing(self.ctx)
        problems = fsck(self.store, self.refs, self.dir / "tmp", notes)
        repaired = [
            f"finished publishing run {oid.short}: a commit was killed while writing its refs"
            for oid in finished
        ]
        repaired += self.index.check()  # a cache: rebuilt, not a problem
        if notes is not None:
            notes.extend(repaired)
        return problems

    # -- running and reproducing (mlvc.exec.run, mlvc.reproduce.run) ---------------------------

    def with_worktree(self, path: str | os.PathLike) -> Repo:
        """This repository's store and refs, with ``path`` as the folder runs are captured
        from (a scratch checkout for ``mlvc reproduce`` and parallel ``mlvc run``)."""
        return Repo._view(self.ctx.with_worktree(path))

    def run_entry(
        self,
        entry: str = "main",
        params: Iterable[str] = (),
        sweeps: Iterable[str] = (),
        jobs: int = 1,
        **kw: Any,
    ) -> list[Outcome]:
        """Run an entry point and record each run (``mlvc run``); returns the outcomes.

        ``params`` and ``sweeps`` are ``KEY=VALUE`` / ``KEY=a,b,c`` strings. A command that
        fails is recorded too: ``mlvc.exec.run.check(outcomes)`` raises for it.
        """
        from ..exec.run import run_entry

        self.reap()
        return run_entry(self.ctx, entry, params, sweeps, jobs, **kw)

    def reproduce(
        self,
        spec: str,
        env: str = "current",
        to: str | os.PathLike | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        echo: Callable[[str], None] = print,
        rebuild_env: bool = False,
    ) -> Reproduction:
        """Re-run a recorded run and judge the result (``mlvc reproduce``). With
        ``env="recorded"`` the environment is built once per env id and cached;
        ``rebuild_env`` builds it anew."""
        from ..reproduce.run import reproduce

        self.reap()
        return reproduce(
            self.ctx, spec, env=env, to=to, rtol=rtol, atol=atol, echo=echo, rebuild_env=rebuild_env
        )

    def bisect(
        self,
        a: str,
        b: str,
        metric: str,
        rtol: float | None = None,
        jobs: int = 1,
        echo: Callable[[str], None] = print,
    ) -> Bisection:
        """Which changes between runs ``a`` and ``b`` move ``metric`` from a's value to
        b's (``mlvc bisect``): probes mixing the two are re-run and recorded as runs."""
        from ..reproduce.bisect import DEFAULT_RTOL, bisect

        self.reap()
        rtol = DEFAULT_RTOL if rtol is None else rtol
        return bisect(self.ctx, a, b, metric, rtol=rtol, jobs=jobs, echo=echo)

    def lineage(self, spec: str | None = None) -> tuple[dict[str, Node], str | None]:
        """Runs with their children and reproductions (``mlvc lineage``): (nodes, focus)."""
        from ..reproduce.lineage import lineage

        return lineage(self.ctx, spec)

    # -- storage (issue 4) ----------------------------------------------------------------

    def events(
        self,
        since: str | None = None,
        types: Iterable[str] | None = None,
        follow: bool = False,
        after: str | None = None,
        poll: float = 0.2,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        """Events in time order (``mlvc events``): since ``since`` (ISO time, or ``10m``,
        ``2h``, ``1d`` back), after the id ``after``, of the type globs ``types``
        (``["run.*"]``); with ``follow``, new ones as they come until ``stop()``."""
        from ..events import events

        return events(self.ctx, since, types, follow, after, poll, stop)

    def gc(self, dry_run: bool = False, grace: float | None = None) -> GcReport:
        """Remove unreachable objects (``mlvc gc``); returns a ``gc.GcReport``."""
        from ..maintenance.gc import GRACE_S, gc

        if grace is not None and not grace >= 0:
            raise UsageError(f"the grace period must be 0 or more seconds, not {grace}")
        return gc(self.ctx, dry_run=dry_run, grace=GRACE_S if grace is None else grace)

    def du(self, runs: list[str] | None = None) -> dict:
        """Logical size, stored size and dedup ratio per run and for the store."""
        from ..maintenance.du import disk_usage

        return disk_usage(self.ctx, runs)


def _described(spec: RunSpec) -> dict[str, Any]:
    """What a pre-commit hook is told about the run about to be recorded."""
    return jsonable(
        {
            "message": spec.message,
            "name": spec.name,
            "params": dict(spec.params),
            "metrics": dict(spec.metrics),
            "tags": dict(spec.tags),
            "data": list(spec.data),
            "artifacts": list(spec.artifacts),
            "command": list(spec.command),
        }
    )
