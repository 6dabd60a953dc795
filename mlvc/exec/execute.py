"""Running one command of ``mlvc run`` and recording it.

Capture the inputs (code, data, and the environment of the interpreter the command will
use, with the variables it will get) → stage the run (mlvc.runs.staging) with the entry
point's params → run the command, its output streamed to the terminal and copied into the
log → record one run: the command line and exit code, typed params (plus what the script
logged through ``mlvc.start_run``, mlvc.runs.attached), metrics from the metrics files and
logged series, the outputs it wrote and the log as artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.objects import FILE, Env, TreeEntry
from ..core.params import load_metrics_file, load_params_file
from ..errors import MlvcError
from ..runs.attached import MLFLOW_URI_ENV, REPO_ENV, RUN_ENV, WORKTREE_ENV
from ..runs.finish import record_staged, staged_spec
from ..runs.notify import run_started
from ..runs.record import Inputs, capture_inputs, expand, now_us
from ..runs.staging import StagedRun
from ..runs.watch import ensure_watcher, load_config
from ..store.locks import writing
from ..store.typed import write_object
from ..workspace.project import ProjectConfig, load_project
from .interpreter import capture_for, find_interpreter
from .plan import Echo, Launch, log_name

if TYPE_CHECKING:
    from ..workspace.context import RepoContext


@dataclass
class Outcome:
    """A command run and recorded: its run, exit code and status, and what was noticed."""

    run_id: ObjectId
    exit_code: int
    status: str
    launch: Launch
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def capture(ctx: RepoContext, launch: Launch) -> tuple[Inputs, dict]:
    """Store code, data and the environment the command will see (outputs left out)."""
    root = ctx.root
    cfg = load_project(root)
    environ = dict(os.environ if launch.environ is None else launch.environ)
    written = [*launch.outputs, *launch.metrics_files, *cfg.metrics, log_name(launch)]
    present = sorted({p for p in written if os.path.lexists(root / p)})
    inputs = capture_inputs(ctx, data=launch.data, artifacts=present, cwd=root, env=False)
    python = find_interpreter(launch.argv, environ, root / launch.cwd)
    files = sorted({*cfg.env_files, *launch.env_files})
    facts = capture_for(python, root, environ, cfg.env_variables, files)
    return replace(inputs, env=write_object(ctx.store, Env(facts))), facts


def env_warnings(launch: Launch, facts: Mapping) -> list[str]:
    """What the project asks of the environment that this run does not give it."""
    from ..workspace.project_spec import Environment

    why = Environment(launch.python_wanted).python_mismatch(
        facts.get("python", {}).get("version", "")
    )
    out = [why] if why else []
    if launch.docker_image:
        out.append(
            f"the MLproject asks for docker_env (image {launch.docker_image}); mlvc does not "
            "use Docker and runs the command in the current environment"
        )
    return out


def execute(
    ctx: RepoContext,
    launch: Launch,
    inputs: Inputs | None = None,
    echo: Echo = print,
    interactive: bool = True,
) -> Outcome:
    """Run one command in ``ctx.root`` and record it; never raises for a failing command."""
    job = _stage(ctx, launch, inputs, echo)
    environ = dict(os.environ if launch.environ is None else launch.environ)
    environ.update(
        {RUN_ENV: job.staged.key, REPO_ENV: str(ctx.layout.root), WORKTREE_ENV: str(ctx.root)}
    )
    # MLflow code logs into this run (mlvc.mlflow_plugin), unless the user chose a store
    environ.setdefault(MLFLOW_URI_ENV, f"mlvc://{ctx.layout.root}")
    log_path = ctx.root / log_name(launch)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        code, status = _spawn(launch, ctx.root / launch.cwd, environ, log_path, interactive)
    except KeyboardInterrupt:
        _record(ctx, job, 130, "killed")
        raise
    return _record(ctx, job, code, status)


@dataclass
class _Job:
    """One launch between its start and its record."""

    launch: Launch
    inputs: Inputs
    staged: StagedRun  # the run a script's ``start_run`` joins, and a reaper can record
    before: dict[str, dict[str, tuple]]  # what the paths it may write held before it ran


def _stage(ctx: RepoContext, launch: Launch, inputs: Inputs | None, echo: Echo) -> _Job:
    """Capture the inputs (unless given) and stage the run with the entry point's params."""
    watching = load_config(ctx.root)  # a bad alert rule is refused before anything runs
    with writing(ctx.dir, ctx.store):  # gc waits until the staged meta.json names them
        if inputs is None:
            inputs, facts = capture(ctx, launch)
            for w in env_warnings(launch, facts):
                echo(f"warning: {w}")  # before the command runs, not after
        staged = StagedRun.create(
            ctx.layout,
            name=launch.name,
            message=launch.message,
            started=now_us(),
            argv=list(launch.argv),
            cwd=str(ctx.root / launch.cwd),
            params=launch.params,
            tags=launch.tags,
            inputs=replace(inputs, artifact_paths=()),  # decided when the command is done
            mlvc_run=True,
            move_head=launch.move_head,
            parents=launch.parents,
            reproduces=launch.reproduces,
        )
    run_started(ctx, staged)
    ensure_watcher(ctx, watching)
    return _Job(launch, inputs, staged, _snapshot(ctx.root, _written_paths(ctx.root, launch)))


def _spawn(
    launch: Launch, cwd: Path, environ: dict, log_path: Path, interactive: bool
) -> tuple[int, str]:
    """Run the command, its stdout and stderr copied to ours and to the log as they come."""
    lock = threading.Lock()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                list(launch.argv),
                cwd=cwd,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=None if interactive else subprocess.DEVNULL,
            )
        except OSError as e:
            msg = f"mlvc: cannot run {launch.argv[0]!r}: {e.strerror}\n"
            log.write(msg.encode())
            sys.stderr.write(msg)
            return (127 if isinstance(e, FileNotFoundError) else 126), "failed"
        prefix = f"[{launch.label}] ".encode() if launch.label else b""
        pumps = [
            threading.Thread(target=_pump, args=(src, dst, log, lock, prefix), daemon=True)
            for src, dst in (
                (proc.stdout, sys.stdout if launch.show_output else None),
                (proc.stderr, sys.stderr if launch.show_output else None),
            )
        ]
        for t in pumps:
            t.start()
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            for t in pumps:
                t.join(timeout=5)
            raise
        for t in pumps:
            t.join()
    if code < 0:  # killed by a signal: report it as a shell would
        return 128 - code, "killed"
    return code, "finished" if code == 0 else "failed"


def _stop(proc: subprocess.Popen) -> None:
    """The terminal sent SIGINT to the command too; give it time to stop, then kill it."""
    try:
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


def _pump(src, dst, log, lock: threading.Lock, prefix: bytes) -> None:
    out = getattr(dst, "buffer", None)
    pending = b""
    while True:
        chunk = src.read1(65536) if hasattr(src, "read1") else src.read(65536)
        if not chunk:
            break
        with lock:
            log.write(chunk)
            if dst is None:
                continue
            if prefix:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                chunk = b"".join(prefix + ln + b"\n" for ln in lines)
            _write(dst, out, chunk)
    if prefix and pending and dst is not None:
        with lock:
            _write(dst, out, prefix + pending + b"\n")


def _write(dst, out, data: bytes) -> None:
    try:
        if out is not None:
            out.write(data)
        else:
            dst.write(data.decode(errors="replace"))
        dst.flush()
    except (OSError, ValueError):
        pass  # our terminal went away; the log still has everything


def _written_paths(root: Path, launch: Launch) -> list[str]:
    """Every path the run may write: declared outputs, metrics files, [track] artifacts."""
    cfg = load_project(root)
    paths = [*launch.outputs, *cfg.metrics, *launch.metrics_files, *cfg.artifacts]
    return list(dict.fromkeys(paths))


def _snapshot(root: Path, paths: Iterable[str]) -> dict[str, dict[str, tuple]]:
    """(inode, size, mtime) of every file at or below each path that exists."""
    out = {}
    for p in paths:
        if os.path.lexists(root / p):
            stamps = {}
            for f in expand(root, [p]):
                st = os.lstat(root / f)
                stamps[f] = (st.st_ino, st.st_size, st.st_mtime_ns)
            out[p] = stamps
    return out


def _record(ctx: RepoContext, job: _Job, code: int, status: str) -> Outcome:
    """Record the finished command as a run and unstage it.

    A declared path whose every file is exactly as it was before the command ran was not
    written by it: it is left out (with a warning), so a failed run never claims stale
    results. What cannot be read or stored is left out with a warning, never a reason to
    lose a run that happened."""
    launch, root, staged = job.launch, ctx.root, job.staged
    staged.reload()  # with what the script logged into it (mlvc.runs.attached)
    with writing(ctx.dir, ctx.store):  # the log and series blobs are named by the run only
        cfg = load_project(root)
        warnings: list[str] = []
        fresh = _fresh_outputs(root, launch, cfg, job.before, status, warnings)
        metrics = _metrics(root, launch, cfg, fresh, warnings)
        base = _file_params(root, launch, cfg, warnings)
        spec, _ = staged_spec(ctx, staged, status, base_params=base)
        unstorable = spec.extra.get("unstorable", {})
        for k, why in {
            **unstorable.get("params", {}),
            **unstorable.get("dropped_params", {}),
        }.items():
            warnings.append(f"param {k}: {why}")
        log = log_name(launch)
        arts = {*fresh, log} - set(job.inputs.data_paths)
        spec = replace(
            spec,
            metrics=metrics,
            command=tuple(launch.argv),
            exit_code=code,
            parents=launch.parents,
            reproduces=launch.reproduces,
            extra={**launch.extra, "log": log, **spec.extra},  # live_key: run:<key>/... URIs
            inputs=replace(job.inputs, artifact_paths=tuple(sorted(arts))),
            artifact_entries={**spec.artifact_entries, log: _log_entry(ctx, root / log)},
            move_head=launch.move_head,
            project_files=False,
        )
        run_id = record_staged(ctx, staged, spec, root / launch.cwd, phase="run")
        if spec.models:
            _note_registered_models(ctx, staged.key, run_id)
        staged.unstage()
    return Outcome(run_id, code, status, launch, sorted(arts - {log}), warnings, dict(metrics))


def _fresh_outputs(
    root: Path, launch: Launch, cfg: ProjectConfig, before: dict, status: str, warnings: list
) -> list[str]:
    """The paths the command may write that it did write (changed since ``before``)."""
    now = _snapshot(root, _written_paths(root, launch))
    stale = {p for p, files in now.items() if before.get(p) == files}
    for p in launch.outputs:
        if p not in now and status == "finished":
            warnings.append(f"declared output {p} was not written")
    for p in sorted(stale & {*launch.outputs, *launch.metrics_files, *cfg.metrics}):
        warnings.append(f"{p} is unchanged since before the run, so not recorded as its output")
    return [p for p in now if p not in stale]


def _metrics(
    root: Path, launch: Launch, cfg: ProjectConfig, fresh: list[str], warnings: list
) -> dict[str, float]:
    """Metrics from the metrics files the command wrote."""
    metrics: dict[str, float] = {}
    for f in dict.fromkeys([*cfg.metrics, *launch.metrics_files]):
        if f in fresh and (root / f).is_file():
            try:
                metrics.update(load_metrics_file(root / f))
            except MlvcError as e:
                warnings.append(str(e))
    return metrics


def _file_params(root: Path, launch: Launch, cfg: ProjectConfig, warnings: list) -> dict[str, Any]:
    """The launch's base params under those of the project's params files."""
    params: dict[str, Any] = dict(launch.base_params)
    for f in cfg.params:
        if (root / f).is_file():
            try:
                params.update(load_params_file(root / f))
            except MlvcError as e:  # the command has run: record it, and say what was left out
                warnings.append(str(e))
    return params


def _log_entry(ctx: RepoContext, path: Path) -> TreeEntry:
    return TreeEntry(path.name, FILE, ctx.store.add_file(path), path.stat().st_size)


def _note_registered_models(ctx: RepoContext, key: str, run_id: ObjectId) -> None:
    """Versions the script registered from the staged run (``run:<key>/...``) learn the
    run id, as a live run's ``on_end`` hooks do in its own process."""
    from ..refs import registry

    for name in registry.names(ctx.refs):
        for version in registry.versions(ctx.refs, name):
            info = registry.get(ctx.refs, name, version)
            if info.run_id is None and info.source.startswith(f"run:{key}"):
                registry.note_run(ctx.refs, name, version, run_id.hex, ctx.author())
