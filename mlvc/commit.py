"""Recording a run: capture code, data, artifacts and environment, then write the run.

Write order (docs/architecture.md): every object → one filesystem sync → journal entry →
``refs/runs/<id>`` → HEAD, name and tag refs → an attempt to ingest into the index. A crash
at any point leaves either no run or a complete one; the index catches up on its next sync.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnreadablePath, UsageError
from .ids import ObjectId
from .objects import Env, Run, TreeEntry, is_reserved_name
from .params import (
    check_case,
    check_metrics,
    check_params,
    flatten,
    load_metrics_file,
    load_params_file,
)
from .project import ProjectConfig, load_project
from .refs import check_ref_name
from .trees import build_tree, safe_relpath, write_object

JUNK_IN_DATA = {".mlvc", ".git", "__pycache__", ".ipynb_checkpoints", ".DS_Store"}


@dataclass
class RunSpec:
    """Everything a caller can say about a run; the rest is captured."""

    message: str = ""
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params_files: Iterable[str] = ()
    metrics_files: Iterable[str] = ()
    data: Iterable[str] = ()
    artifacts: Iterable[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    exit_code: int | None = None
    status: str = "finished"
    started: int | None = None
    ended: int | None = None
    series: ObjectId | None = None
    parents: tuple[ObjectId, ...] | None = None
    reproduces: ObjectId | None = None
    models: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    capture_code: bool = True
    capture_env: bool = True
    inputs: Inputs | None = None  # captured earlier (a live run captures at its start)
    artifact_entries: Mapping[str, TreeEntry] = field(default_factory=dict)  # logged by API
    series_metrics: Mapping[str, float] = field(default_factory=dict)  # last value per key
    move_head: bool = True
    project_files: bool = True  # read mlvc.toml's [track] params/metrics files


def now_us() -> int:
    return time.time_ns() // 1000


def project_path(root: Path, path: str | os.PathLike, cwd: Path | None = None) -> str:
    """A user-given path (relative to cwd, or absolute) as a project-relative POSIX path."""
    full = (Path(cwd or os.getcwd()) / path).absolute()
    try:
        rel = Path(os.path.normpath(full)).relative_to(root)
    except ValueError:
        raise UsageError(f"path {path} is outside the project {root}; move it inside") from None
    if not os.path.lexists(root / rel):
        raise UsageError(f"path {path} does not exist; check the spelling or create it first")
    if str(rel) == ".":
        raise UsageError(f"path {path} is the whole project; name a file or folder inside it")
    refuse_reserved(path, rel.as_posix())
    return safe_relpath(rel.as_posix())


def refuse_reserved(given: str | os.PathLike, rel: str) -> None:
    """Refuse a tracked path at or inside ``.mlvc`` or ``.git`` (any case, any depth)."""
    for part in rel.split("/"):
        if is_reserved_name(part):
            raise UsageError(
                f"path {given} is inside {part}, git's or mlvc's own folder; mlvc never "
                "records those: name a file or folder of the project instead"
            )


def _junk_in_data(name: str) -> bool:
    return name in JUNK_IN_DATA or is_reserved_name(name)


def expand(root: Path, rels: Iterable[str]) -> list[str]:
    """Every file at or below each project-relative path (symlinks kept, not followed).

    A folder that cannot be listed raises UnreadablePath: a run never silently lacks data.
    """
    out: set[str] = set()
    base = os.fspath(root)
    for rel in rels:
        full = os.path.join(base, rel)
        if os.path.islink(full) or not os.path.isdir(full):
            out.add(rel)
            continue
        stack = [rel]  # iterative: any depth
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(os.path.join(base, folder)) as it:
                    entries = list(it)
            except OSError as e:
                raise UnreadablePath(folder, e, "list") from None
            for entry in entries:
                if _junk_in_data(entry.name):
                    continue
                path = f"{folder}/{entry.name}"
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError as e:
                    raise UnreadablePath(path, e) from None
                if is_dir:
                    stack.append(path)
                else:
                    out.add(path)  # files, and links (to folders too), never followed
    return sorted(out)


def _refuse_reserved_file(root: Path, path: Path, given: str | os.PathLike) -> None:
    """Params/metrics files are tracked paths too: none inside ``.mlvc``/``.git``."""
    try:
        rel = Path(os.path.normpath(path.absolute())).relative_to(root)
    except ValueError:
        return  # outside the project: read, never recorded as a path
    refuse_reserved(given, rel.as_posix())


def author() -> str:
    """``MLVC_AUTHOR``, else git's user.name <user.email>, else user@host."""
    return os.environ.get("MLVC_AUTHOR") or _configured_author()


@functools.lru_cache(maxsize=1)
def _configured_author() -> str:
    try:
        out = subprocess.run(
            ["git", "config", "--get-regexp", r"^user\.(name|email)$"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    conf = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    name, email = conf.get("user.name", "").strip(), conf.get("user.email", "").strip()
    if name:
        return f"{name} <{email}>" if email else name
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"


@dataclass(frozen=True)
class Inputs:
    """What a run read, captured when it starts: code, git facts, environment, data."""

    code: ObjectId | None
    git: Mapping[str, Any]
    env: ObjectId | None
    data: ObjectId | None
    data_paths: tuple[str, ...]
    artifact_paths: tuple[str, ...]


def capture_inputs(
    repo, data=(), artifacts=(), cwd: Path | None = None, code: bool = True, env: bool = True
) -> Inputs:
    """Store the project's code, data and environment; paths are relative to ``cwd``."""
    with _writing(repo) as hasher:
        return _capture_inputs(repo, data, artifacts, cwd, code, env, hasher)


@contextmanager
def _writing(repo):
    """Hold gc off while objects are written, hash through the stat cache, then save it."""
    from .gc import writing

    with writing(repo.dir, repo.store):
        hasher = repo.file_hasher() if hasattr(repo, "file_hasher") else None
        yield hasher
        if hasher is not None and hasher.cache is not None:
            hasher.cache.save()


def _capture_inputs(repo, data, artifacts, cwd, code, env, hasher) -> Inputs:
    from .capture import capture_env, code_files, git_facts

    root, store = repo.root, repo.store
    cfg = load_project(root)
    # configured paths are relative to the root; configured artifacts may not exist yet
    data_paths = sorted(
        {project_path(root, p, root) for p in cfg.data} | {project_path(root, p, cwd) for p in data}
    )
    configured = [p for p in cfg.artifacts if os.path.lexists(root / p)]
    art_paths = sorted(
        {project_path(root, p, root) for p in configured}
        | {project_path(root, p, cwd) for p in artifacts}
    )
    overlap = set(data_paths) & set(art_paths)
    if overlap:
        raise UsageError(f"{sorted(overlap)[0]} is given as both data and artifacts; pick one")
    code_tree, git = None, {}
    if code:
        code_files_ = code_files(root, exclude=[*data_paths, *art_paths], include=cfg.params)
        code_tree = build_tree(store, root, code_files_, hasher=hasher)
        git = dict(git_facts(root))
        if git.get("patch"):
            git["patch"] = store.add_bytes(git["patch"].encode()).hex
    env_id = None
    if env:
        env_id = write_object(store, Env(capture_env(root, cfg.env_variables, cfg.env_files)))
    return Inputs(
        code_tree,
        git,
        env_id,
        build_tree(store, root, expand(root, data_paths), hasher=hasher),
        tuple(data_paths),
        tuple(art_paths),
    )


def gather_params(repo, spec: RunSpec, cwd: Path | None) -> tuple[dict, dict]:
    """Params and metrics from mlvc.toml files, the spec's files, then the spec's values."""
    cfg = load_project(repo.root) if spec.project_files else ProjectConfig()
    base = Path(cwd or os.getcwd())
    for f in [*cfg.params, *cfg.metrics]:
        _refuse_reserved_file(repo.root, repo.root / f, f)
    for f in [*spec.params_files, *spec.metrics_files]:
        _refuse_reserved_file(repo.root, base / f, f)
    params: dict[str, Any] = {}
    for f in cfg.params:
        params.update(load_params_file(repo.root / f))
    for f in spec.params_files:
        params.update(load_params_file(base / f))
    params.update(flatten(dict(spec.params)))  # as files and live runs: nested keys dotted
    metrics: dict[str, float] = {}
    for f in cfg.metrics:
        metrics.update(load_metrics_file(repo.root / f))
    for f in spec.metrics_files:
        metrics.update(load_metrics_file(base / f))
    metrics.update(check_metrics(spec.metrics))
    check_case({**spec.series_metrics, **metrics}, "metric")
    return check_params(params), metrics


def record_run(repo, spec: RunSpec, cwd: Path | None = None, on_stored=None) -> ObjectId:
    """Capture and store one run; returns its id. The library behind ``mlvc commit``.

    ``on_stored(id)`` is called once the run object is stored and synced, before any ref
    names it (a staged run notes its id there, so a recorder killed later never records
    it twice)."""
    with _writing(repo) as hasher:
        finish_publishing(repo)  # a commit killed half way: its refs before ours
        return _record_run(repo, spec, cwd, hasher, on_stored)


def _record_run(repo, spec: RunSpec, cwd: Path | None, hasher, on_stored=None) -> ObjectId:
    started = spec.started or now_us()
    name = check_ref_name(spec.name, "name") if spec.name else ""
    for tag in spec.tags:
        check_ref_name(tag, "tag")
    params, metrics = gather_params(repo, spec, cwd)
    _encoded(  # refuse a record no reader could load before anything is written
        Run(name=name, message=spec.message, command=tuple(spec.command), params=params,
            metrics={**spec.series_metrics, **metrics}, tags=dict(spec.tags),
            models=dict(spec.models), extra=dict(spec.extra))
    )  # fmt: skip
    inputs = spec.inputs or capture_inputs(
        repo, spec.data, spec.artifacts, cwd, spec.capture_code, spec.capture_env
    )
    art_files = expand(repo.root, inputs.artifact_paths)
    artifacts = build_tree(
        repo.store, repo.root, art_files, hasher=hasher, extra=dict(spec.artifact_entries)
    )
    head = repo.refs.read("HEAD")
    parents = spec.parents if spec.parents is not None else ((head,) if head else ())
    run = Run(
        parents=tuple(parents),
        name=name,
        message=spec.message,
        author=author(),
        started=started,
        ended=spec.ended or now_us(),
        status=spec.status,
        command=tuple(spec.command),
        cwd=_cwd_in_project(repo.root, cwd),
        exit_code=spec.exit_code,
        code=inputs.code,
        git=inputs.git,
        data=inputs.data,
        artifacts=artifacts,
        params=params,
        metrics={**spec.series_metrics, **metrics},
        series=spec.series,
        env=inputs.env,
        tags=dict(spec.tags),
        models=dict(spec.models),
        reproduces=spec.reproduces,
        extra={
            **spec.extra,
            "paths": {"data": list(inputs.data_paths), "artifacts": list(inputs.artifact_paths)},
        },
    )
    oid = repo.store.add_bytes(_encoded(run))
    repo.store.sync()
    if on_stored is not None:
        on_stored(oid)
    publish_run(repo, oid, run, move_head=spec.move_head)
    return oid


def _encoded(run: Run) -> bytes:
    """The run's canonical bytes, or a one-line UsageError naming the part that cannot be
    stored or that makes the record bigger than a reader accepts (objects.MAX_OBJECT_BYTES)."""
    from . import objects

    parts = ("message", "name", "params", "metrics", "tags", "models", "extra", "command", "git")
    try:
        data = objects.encode(run)
    except (TypeError, ValueError, OverflowError) as e:  # UnicodeEncodeError is a ValueError
        bad = next((p for p in parts if not _packs(getattr(run, p))), "record")
        raise UsageError(f"the run's {bad} cannot be stored: {e}") from None
    limit = objects.MAX_OBJECT_BYTES
    if len(data) > limit:
        sizes = sorted(((len(objects.pack(getattr(run, p))), p) for p in parts), reverse=True)
        big = ", ".join(f"{p} {n} bytes" for n, p in sizes[:2])
        raise UsageError(
            f"the run record would be {len(data)} bytes, over the {limit}-byte limit of what "
            f"mlvc reads back (largest: {big}); keep big values in files (data or artifacts)"
        )
    return data


def _packs(value) -> bool:
    from .objects import pack

    try:
        pack(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _cwd_in_project(root: Path, cwd: Path | None) -> str:
    try:
        rel = Path(cwd or os.getcwd()).resolve().relative_to(root).as_posix()
    except ValueError:
        return ""
    return "" if rel == "." else rel


PUBLISHING = "publishing"  # .mlvc/publishing/<run id>: a publish under way (its ref moves)
FAULT_ENV = "MLVC_FAULT"  # tests: kill this process with SIGKILL at the named point


def crash_point(name: str) -> None:
    """Die here, as ``kill -9`` would, when the fault-injection tests ask for this point."""
    if os.environ.get(FAULT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def publish_run(repo, oid: ObjectId, run: Run, move_head: bool = True) -> None:
    """Make a stored run visible: journal, run ref, HEAD, name and tags, then the index.

    The ref moves are written down first (``publishing/<id>``, each ref with the value it
    had), so a publish killed half way is finished by the next one (``finish_publishing``):
    a run is never left recorded without the HEAD, name or tags its commit gave it.
    """
    moves = {"HEAD": move_head} if move_head else {}
    if run.name:
        moves[f"refs/names/{run.name}"] = True
    for tag, value in run.tags.items():
        if value == "":
            moves[f"refs/tags/{tag}"] = True
    intent = {ref: _hex(repo.refs.read_or_none(ref)) for ref in moves}
    path = _write_intent(repo.dir, oid, intent)
    _publish(repo, oid, run, intent)
    path.unlink(missing_ok=True)
    repo.index.try_ingest()


def _publish(repo, oid: ObjectId, run: Run, intent: dict[str, str | None]) -> None:
    """Journal, run ref, then every ref in ``intent`` that still holds the value it had when
    the publish began (compare and swap: a ref moved since by someone else is left alone)."""
    repo.index.journal(oid)
    with repo.refs.batch():  # durable on return: one syncfs for every ref and reflog
        repo.refs.add_run(oid)
        who = run.author
        why = {"HEAD": f"commit: {run.message or run.name}", "refs/names": "commit"}
        for i, (ref, old) in enumerate(sorted(intent.items(), key=lambda r: r[0] != "HEAD")):
            now = repo.refs.read_or_none(ref)
            if now is not None and now != oid and now.hex != old:
                continue  # moved by another writer meanwhile
            if now != oid:
                reason = why.get(ref, why.get(ref.rsplit("/", 1)[0], "commit -t"))
                repo.refs.write(ref, oid, reason, who)
            if i == 0:
                crash_point("publish-first-ref")


def finish_publishing(repo) -> list[ObjectId]:
    """Finish every publish a killed commit left half done; returns their run ids."""
    from .errors import MlvcError
    from .trees import read_run

    folder = Path(repo.dir) / PUBLISHING
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    done = []
    for n in names:
        path = folder / n
        try:
            oid = ObjectId.parse(n)
            intent = json.loads(path.read_text())
            run = read_run(repo.store, oid)
        except (ValueError, OSError):
            continue  # being written (a temp name) or damaged: fsck names it
        except MlvcError:
            path.unlink(missing_ok=True)  # its run was never stored: nothing to publish
            continue
        if not isinstance(intent, dict):
            continue
        _publish(repo, oid, run, {str(k): v for k, v in intent.items()})
        path.unlink(missing_ok=True)
        done.append(oid)
    return done


def _write_intent(mlvc_dir: Path, oid: ObjectId, intent: dict) -> Path:
    import secrets

    folder = Path(mlvc_dir) / PUBLISHING
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{oid.hex}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(intent, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    path = folder / oid.hex
    os.replace(tmp, path)
    return path


def _hex(oid: ObjectId | None) -> str | None:
    return oid.hex if oid is not None else None
