"""``mlvc run``: run an entry point's command, stream and keep its output, record the run.

One run goes: capture the inputs (code, data, and the environment of the interpreter the
command will use, with the variables it will get) → stage the run under ``.mlvc/live/<key>/``
with the entry point's params → run the command with its output streamed to the terminal and
copied into the log → record one run: the command line and exit code, typed params (plus
what the script logged through ``mlvc.start_run``, see mlvc.attached), metrics from the
metrics files and logged series, the declared outputs and the log as artifacts.

A sweep runs the grid of ``--sweep`` values; with ``-j N`` up to N at once, each in its own
scratch checkout of the captured code and data (``.mlvc/worktrees/<key>``), so parallel runs
never overwrite each other's outputs. Every run of a sweep has the HEAD of its start as
parent and the tag ``sweep=<id>``. HEAD follows what the project folder holds: runs in the
project move it, parallel runs (whose outputs stay in their artifacts) do not.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .attached import REPO_ENV, RUN_ENV, WORKTREE_ENV
from .commit import Inputs, RunSpec, capture_inputs, expand, now_us, record_run
from .errors import CommandFailed, MlvcError, UsageError
from .gc import pin, writing
from .ids import ObjectId
from .objects import FILE, Env, Run, TreeEntry
from .params import check_key, check_params, load_metrics_file, load_params_file, storable_params
from .project import load_project
from .project_spec import EntryPoint, load_spec
from .run_env import capture_for, find_interpreter
from .tracking import (
    LIVE,
    _atomic_json,
    _crash_point,
    _proc_start,
    _series_blob,
    last_values,
    new_key,
    note_stored,
    read_meta,
    read_series,
    unstage,
)
from .trees import write_object

Echo = Callable[[str], None]
WORKTREES = "worktrees"


@dataclass
class Launch:
    """One command to run and record, and everything the record should say about it."""

    argv: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)  # staged before it starts
    base_params: Mapping[str, Any] = field(default_factory=dict)  # under all others
    entry: str = ""
    outputs: tuple[str, ...] = ()
    metrics_files: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    name: str = ""
    message: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None
    cwd: str = ""  # project-relative folder to run in
    parents: tuple[ObjectId, ...] | None = None
    reproduces: ObjectId | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    move_head: bool = True
    label: str = ""  # prefixes every output line when runs share the terminal
    env_files: tuple[str, ...] = ()
    python_wanted: str = ""  # [environment] python
    docker_image: str = ""  # MLproject docker_env: not used, said so before the run
    log_name: str = ""


@dataclass
class Outcome:
    run_id: ObjectId
    exit_code: int
    status: str
    launch: Launch
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


# -- planning --------------------------------------------------------------------------------


def parse_given(tokens: Iterable[str], what: str = "-P") -> dict[str, str]:
    """``KEY=VALUE`` tokens as key -> text (typing is the entry point's job)."""
    out: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad {what} {tok!r}: expected KEY=VALUE, e.g. lr=0.01")
        out[check_key(key.strip(), tok)] = value
    return out


def grid(given: Mapping[str, str], sweeps: Iterable[str]) -> list[dict[str, str]]:
    """Every combination of ``--sweep KEY=a,b,c`` values on top of the fixed params."""
    axes: dict[str, list[str]] = {}
    for tok in sweeps:
        key, values = next(iter(parse_given([tok], "--sweep").items()))
        if key in given or key in axes:
            raise UsageError(f"param {key!r} is given twice (-P and --sweep); give it once")
        vals = [v.strip() for v in values.split(",")]
        if not all(vals):
            raise UsageError(f"--sweep {tok!r} has an empty value; use KEY=a,b,c")
        axes[key] = vals
    combos = itertools.product(*axes.values()) if axes else [()]
    return [{**given, **dict(zip(axes, combo, strict=True))} for combo in combos]


def plan(
    repo,
    entry: str,
    params: Iterable[str] = (),
    sweeps: Iterable[str] = (),
    hashseed: bool = True,
    name: str = "",
    message: str = "",
    tags: Mapping[str, str] | None = None,
) -> list[Launch]:
    """Validate everything and build one Launch per run, before anything runs."""
    spec = load_spec(repo.root)
    ep = spec.entry(entry, repo.root)
    points = grid(parse_given(params), list(sweeps))
    # every point is checked before the first runs
    values = [check_params(ep.resolve(p), f" of entry point {ep.name!r}") for p in points]
    environ = child_environ(os.environ, hashseed)
    sweep_tags = {"sweep": new_key()} if len(values) > 1 else {}
    head = repo.head()
    launches = []
    for i, vals in enumerate(values):
        label = " ".join(f"{k}={vals[k]}" for k in sorted(points[i]) if k in vals)
        launches.append(
            Launch(
                argv=ep.render(vals),
                params=vals,
                entry=ep.name,
                outputs=ep.outputs,
                metrics_files=ep.metrics,
                data=ep.data,
                name=f"{name}-{i + 1}" if name and len(values) > 1 else name,
                message=message,
                tags={**(tags or {}), **sweep_tags},
                environ=environ,
                parents=(head,) if head and len(values) > 1 else None,
                label=label if len(values) > 1 else "",
                env_files=spec.environment.requirements,
                python_wanted=spec.environment.python,
                docker_image=spec.environment.docker,
                extra={"entry_point": _entry_record(ep, vals, hashseed)},
            )
        )
    return launches


def _entry_record(ep: EntryPoint, values: Mapping[str, Any], hashseed: bool) -> dict:
    return {
        "name": ep.name,
        "source": ep.source,
        "template": ep.command,
        "params": dict(values),
        "outputs": list(ep.outputs),
        "metrics": list(ep.metrics),
        "data": list(ep.data),
        "hashseed": hashseed,
    }


def child_environ(base: Mapping[str, str], hashseed: bool = True) -> dict[str, str]:
    """The environment commands get: PYTHONHASHSEED=0 unless set or ``hashseed`` is off,
    and unbuffered Python output so the log keeps up with the terminal."""
    env = {k: v for k, v in base.items() if k not in (RUN_ENV, REPO_ENV, WORKTREE_ENV)}
    if hashseed:
        env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# -- running many ----------------------------------------------------------------------------


def run_all(
    repo,
    launches: list[Launch],
    jobs: int = 1,
    echo: Echo = print,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every launch: one after another in the project, or ``jobs`` at a time in
    scratch checkouts. A run that fails does not stop the others; ``on_done`` sees each
    outcome as soon as it is recorded."""
    if jobs < 1:
        raise UsageError(f"-j {jobs}: the number of parallel runs must be at least 1")
    done = on_done or (lambda outcome: None)
    if jobs == 1 or len(launches) == 1:
        outcomes = []
        for launch in launches:
            outcomes.append(execute(repo, launch, echo=echo))
            done(outcomes[-1])
        return outcomes
    with contextlib.ExitStack() as pinned:
        with writing(repo.dir, repo.store):  # the inputs stay gc roots until every run is in
            inputs, facts = capture(repo, launches[0])
            pinned.enter_context(pin(repo.dir, (inputs.code, inputs.data, inputs.env)))
        for w in _env_warnings(launches[0], facts):
            echo(f"warning: {w}")
        launches = [replace(launch, move_head=False) for launch in launches]
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = [pool.submit(_isolated, repo, launch, inputs, echo) for launch in launches]
            for f in as_completed(futures):
                done(f.result())
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)  # the running ones record as killed
            raise
        finally:
            pool.shutdown(wait=True)


def _isolated(repo, launch: Launch, inputs: Inputs, echo: Echo) -> Outcome:
    from .checkout import checkout
    from .repo import Repo

    wt = repo.dir / WORKTREES / new_key()
    try:
        checkout(repo.store, Run(code=inputs.code, data=inputs.data), wt, ("code", "data"))
        view = Repo(repo.root).with_worktree(wt)
        return execute(view, launch, inputs=inputs, echo=echo, interactive=False)
    finally:
        shutil.rmtree(wt, ignore_errors=True)


# -- running one -----------------------------------------------------------------------------


def capture(repo, launch: Launch) -> tuple[Inputs, dict]:
    """Store code, data and the environment the command will see (outputs left out)."""
    root = repo.root
    cfg = load_project(root)
    environ = dict(os.environ if launch.environ is None else launch.environ)
    written = [*launch.outputs, *launch.metrics_files, *cfg.metrics, log_name(launch)]
    present = sorted({p for p in written if os.path.lexists(root / p)})
    inputs = capture_inputs(repo, data=launch.data, artifacts=present, cwd=root, env=False)
    python = find_interpreter(launch.argv, environ, root / launch.cwd)
    files = sorted({*cfg.env_files, *launch.env_files})
    facts = capture_for(python, root, environ, cfg.env_variables, files)
    return replace(inputs, env=write_object(repo.store, Env(facts))), facts


def _env_warnings(launch: Launch, facts: Mapping) -> list[str]:
    """What the project asks of the environment that this run does not give it."""
    from .project_spec import Environment

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
    repo,
    launch: Launch,
    inputs: Inputs | None = None,
    echo: Echo = print,
    interactive: bool = True,
) -> Outcome:
    """Run one command in ``repo.root`` and record it; never raises for a failing command."""
    root = repo.root
    started = now_us()
    with writing(repo.dir, repo.store):  # gc waits until the staged meta.json names them
        if inputs is None:
            inputs, facts = capture(repo, launch)
            for w in _env_warnings(launch, facts):
                echo(f"warning: {w}")  # before the command runs, not after
        key = new_key()
        live = repo.dir / LIVE / key
        (live / "series").mkdir(parents=True)
        environ = dict(os.environ if launch.environ is None else launch.environ)
        environ.update({RUN_ENV: key, REPO_ENV: str(repo.dir.parent), WORKTREE_ENV: str(root)})
        _stage(live, launch, inputs, started, root)
    before = _snapshot(root, _written_paths(root, launch))
    log_path = root / log_name(launch)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        code, status = _spawn(launch, root / launch.cwd, environ, log_path, interactive)
    except KeyboardInterrupt:
        _record(repo, launch, inputs, live, log_path, 130, "killed", started, before)
        raise
    return _record(repo, launch, inputs, live, log_path, code, status, started, before)


def _stage(live: Path, launch: Launch, inputs: Inputs, started: int, root: Path) -> None:
    """The staged run a script's ``start_run`` joins (and that the reaper can record if
    mlvc itself is killed)."""
    meta = {
        "pid": os.getpid(),
        "proc_start": _proc_start(os.getpid()),
        "host": socket.gethostname(),
        "name": launch.name,
        "message": launch.message,
        "started": started,
        "argv": list(launch.argv),
        "parent": None,
        "cwd": str(root / launch.cwd),
        "params": dict(launch.params),
        "tags": dict(launch.tags),
        "mlvc_run": True,
        # what the run is recorded with, also when the reaper records it (mlvc was killed)
        "move_head": launch.move_head,
        "parents": None if launch.parents is None else [p.hex for p in launch.parents],
        "reproduces": launch.reproduces.hex if launch.reproduces else None,
        "inputs": {
            "code": inputs.code.hex if inputs.code else None,
            "git": dict(inputs.git),
            "env": inputs.env.hex if inputs.env else None,
            "data": inputs.data.hex if inputs.data else None,
            "data_paths": list(inputs.data_paths),
            "artifact_paths": [],
        },
    }
    _atomic_json(live / "meta.json", meta)


def _spawn(launch: Launch, cwd: Path, environ: dict, log_path: Path, interactive: bool):
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
            for src, dst in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))
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
            if prefix:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                chunk = b"".join(prefix + ln + b"\n" for ln in lines)
            _write(dst, out, chunk)
    if prefix and pending:
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


def _record(repo, launch, inputs, live, log_path, code, status, started, before) -> Outcome:
    """Record the finished command as a run and unstage it.

    A declared path whose every file is exactly as it was before the command ran was not
    written by it: it is left out (with a warning), so a failed run never claims stale
    results."""
    with writing(repo.dir, repo.store):  # the log and series blobs are named by the run only
        return _record_held(repo, launch, inputs, live, log_path, code, status, started, before)


def _record_held(repo, launch, inputs, live, log_path, code, status, started, before) -> Outcome:
    root = repo.root
    cfg = load_project(root)
    meta = read_meta(live) or {}
    warnings = []
    now = _snapshot(root, _written_paths(root, launch))
    stale = {p for p, files in now.items() if before.get(p) == files}
    for p in launch.outputs:
        if p not in now and status == "finished":
            warnings.append(f"declared output {p} was not written")
    for p in sorted(stale & {*launch.outputs, *launch.metrics_files, *cfg.metrics}):
        warnings.append(f"{p} is unchanged since before the run, so not recorded as its output")
    fresh = [p for p in now if p not in stale]
    metrics: dict[str, float] = {}
    for f in dict.fromkeys([*cfg.metrics, *launch.metrics_files]):
        if f in fresh and (root / f).is_file():
            try:
                metrics.update(load_metrics_file(root / f))
            except MlvcError as e:
                warnings.append(str(e))
    params: dict[str, Any] = dict(launch.base_params)
    for f in cfg.params:
        if (root / f).is_file():
            try:
                params.update(load_params_file(root / f))
            except MlvcError as e:  # the command has run: record it, and say what was left out
                warnings.append(str(e))
    params.update(meta.get("params", {}))
    # what cannot be stored is kept as text, never a reason to lose a run that happened
    params, changed, dropped = storable_params(params)
    for k, why in {**changed, **dropped}.items():
        warnings.append(f"param {k}: {why}")
    log = log_name(launch)
    arts = {*fresh, log} - set(inputs.data_paths)
    entries = {
        p: TreeEntry(p.rsplit("/", 1)[-1], k, ObjectId.parse(i), n)
        for p, (k, i, n) in meta.get("artifacts", {}).items()
    }
    entries[log] = TreeEntry(
        log.rsplit("/", 1)[-1], FILE, repo.store.add_file(log_path), log_path.stat().st_size
    )
    series = read_series(live) if any((live / "series").glob("*.arrow")) else None
    extra = {**launch.extra, "log": log, "live_key": live.name}  # run:<key>/... URIs
    for k in ("error", "children"):
        if meta.get(k):
            extra[k] = meta[k]
    if changed or dropped:
        extra["unstorable"] = {"params": changed, "dropped_params": dropped}
    spec = RunSpec(
        message=launch.message,
        name=launch.name,
        params=params,
        metrics=metrics,
        tags=meta.get("tags", {}),
        models=meta.get("models", {}),
        command=tuple(launch.argv),
        exit_code=code,
        status=status,
        started=started,
        series=_series_blob(repo, series) if series is not None else None,
        series_metrics=last_values(series) if series is not None else {},
        parents=launch.parents,
        reproduces=launch.reproduces,
        extra=extra,
        inputs=replace(inputs, artifact_paths=tuple(sorted(arts))),
        artifact_entries=entries,
        move_head=launch.move_head,
        project_files=False,
    )

    def stored(oid: ObjectId) -> None:  # a reaper finishing after a crash publishes this run
        note_stored(live, oid, spec.move_head)
        _crash_point("run-stored")

    run_id = record_run(repo, spec, root / launch.cwd, on_stored=stored)
    _crash_point("run-published")
    if meta.get("models"):
        _note_registered_models(repo, live.name, run_id)
    unstage(live)
    outputs = sorted(arts - {log})
    return Outcome(run_id, code, status, launch, outputs, warnings, {**metrics})


def _note_registered_models(repo, key: str, run_id: ObjectId) -> None:
    """Versions the script registered from the staged run (``run:<key>/...``) learn the
    run id, as a live run's ``on_end`` hooks do in its own process."""
    from .commit import author
    from .models import registry

    for name in registry.names(repo.refs):
        for version in registry.versions(repo.refs, name):
            info = registry.get(repo.refs, name, version)
            if info.run_id is None and info.source.startswith(f"run:{key}"):
                registry.note_run(repo.refs, name, version, run_id.hex, author())


def _safe(name: str) -> str:
    """An entry point's name as a file name (mlvc.project._entry_outputs does the same)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "command"


def run_entry(
    repo,
    entry: str,
    params: Iterable[str] = (),
    sweeps: Iterable[str] = (),
    jobs: int = 1,
    hashseed: bool = True,
    name: str = "",
    message: str = "",
    tags: Mapping[str, str] | None = None,
    echo: Echo = print,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """``mlvc run``: validate, run and record every point; see ``check`` for failures."""
    launches = plan(repo, entry, params, sweeps, hashseed, name, message, tags)
    return run_all(repo, launches, jobs, echo, on_done)


def check(outcomes: list[Outcome]) -> None:
    """Raise CommandFailed (the runs are recorded already) if any command failed."""
    failed = [o for o in outcomes if o.status != "finished"]
    if failed and len(outcomes) == 1:
        o = failed[0]
        raise CommandFailed(
            f"the command exited with code {o.exit_code}; recorded as run {o.run_id.short} "
            f"({o.status}); its output: `mlvc show {o.run_id.short}:{log_name(o.launch)}`"
        )
    if failed:
        shown = ", ".join(f"{o.run_id.short} (exit {o.exit_code})" for o in failed[:5])
        raise CommandFailed(f"{len(failed)} of {len(outcomes)} runs failed: {shown}")


def log_name(launch: Launch) -> str:
    """Where the command's output is kept in the run's artifacts."""
    return launch.log_name or f"logs/{_safe(launch.entry or 'command')}.log"
