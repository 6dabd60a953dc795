"""Probes for ``mlvc bisect``: re-runs of a mix of two runs' inputs.

A **change** is one thing that differs between run A and run B and that a re-run can take
from either side: a file of ``code`` or ``data`` (by path), an entry point ``param`` (by key;
the command line is rendered again from the entry point's template), an ``env`` variable
the script may read (one mlvc captured), or the ``command`` itself when neither run has a
template. A **probe** takes the changes of a set from B and everything else from A; its
**key** is the BLAKE3 of what it runs (code and data tree ids, command line, params,
variables), so a probe with the same inputs, from this bisect or an earlier one, is found in
the index (tag ``bisect.probe``) and reused instead of run again.

A probe runs as ``mlvc reproduce`` does (mlvc.reproduce.run): the mixed code and data are
checked out into a scratch folder under ``.mlvc/worktrees`` without the recorded outputs,
the variables are set, the command runs in the current environment, and the result is
recorded as a run with A and B as parents (``mlvc lineage`` shows it under both).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import blake3

from ..core.ids import ObjectId
from ..core.objects import Run, TreeEntry
from ..exec.execute import execute
from ..exec.interpreter import restore_variables
from ..exec.plan import Echo, Launch, child_environ, log_name
from ..runs.attached import SEED_ENV, SEED_PARAM
from ..runs.staging import new_key
from ..store.typed import read_env, read_run, walk
from ..workspace.project import load_project
from ..workspace.project_spec import EntryPoint, ParamSpec
from ..workspace.trees import build_tree
from .run import relocate, remove_paths

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

PROBE_TAG = "bisect.probe"  # the probe key: how an earlier probe with the same inputs is found
PROBE_FORMAT = 1
SECTIONS = ("code", "data", "params", "env", "command")


@dataclass(frozen=True)
class Change:
    """One difference between A and B that a probe can take from either side.

    ``a``/``b`` are a TreeEntry (files), a value (params, env) or an argv tuple (command);
    None where that side lacks it."""

    section: str
    name: str
    a: Any
    b: Any

    @property
    def label(self) -> str:
        return f"{self.section} {self.name}"


@dataclass
class Side:
    """What a run gives a probe: its files by path, entry point params and template (if it
    ran from an entry point), command line, captured variables, and where outputs go."""

    oid: ObjectId
    run: Run
    code: dict[str, TreeEntry]
    data: dict[str, TreeEntry]
    params: dict[str, Any]
    template: str | None
    command: tuple[str, ...]
    variables: dict[str, str]
    facts: dict = field(default_factory=dict)

    @classmethod
    def load(cls, ctx: RepoContext, oid: ObjectId) -> Side:
        run = read_run(ctx.store, oid)
        ep = run.extra.get("entry_point") or {}
        facts = read_env(ctx.store, run.env).facts if run.env else {}
        return cls(
            oid=oid,
            run=run,
            code=dict(walk(ctx.store, run.code)),
            data=dict(walk(ctx.store, run.data)),
            params=dict(ep.get("params") or {}),
            template=ep.get("template"),
            command=tuple(run.command),
            variables=dict(facts.get("variables") or {}),
            facts=facts,
        )

    def outputs(self) -> set[str]:
        """Every path the run recorded as written (left out of a probe's checkout)."""
        ep = self.run.extra.get("entry_point") or {}
        out = set(self.run.extra.get("paths", {}).get("artifacts", ()))
        return out | {*ep.get("outputs", ()), *ep.get("metrics", ())}


def changes(a: Side, b: Side) -> list[Change]:
    """Every change between A and B that a probe can vary, in section order, then by name."""
    out: list[Change] = []
    for section in ("code", "data"):
        old, new = getattr(a, section), getattr(b, section)
        for path in sorted(old.keys() | new.keys()):
            ea, eb = old.get(path), new.get(path)
            if ea is None or eb is None or (ea.id, ea.kind) != (eb.id, eb.kind):
                out.append(Change(section, path, ea, eb))
    if templated(a, b):
        for key in sorted(a.params.keys() | b.params.keys()):
            if a.params.get(key) != b.params.get(key) or (key in a.params) != (key in b.params):
                out.append(Change("params", key, a.params.get(key), b.params.get(key)))
        if a.template != b.template:
            out.append(Change("command", "template", a.template, b.template))
    elif a.command != b.command:
        out.append(Change("command", "argv", a.command, b.command))
    for name in sorted(a.variables.keys() | b.variables.keys()):
        if a.variables.get(name) != b.variables.get(name):
            out.append(Change("env", name, a.variables.get(name), b.variables.get(name)))
    return out


def templated(a: Side, b: Side) -> bool:
    """Whether params can be varied one by one: both runs ran an entry point whose template
    renders their recorded command lines again (else the command line is one change)."""
    return all(s.template is not None and render(s.template, s.params) == s.command for s in (a, b))


@dataclass
class Probe:
    """The inputs of one probe: A with the changes in ``from_b`` taken from B."""

    from_b: frozenset[int]  # indexes into the bisect's list of changes
    code: ObjectId | None
    data: ObjectId | None
    argv: tuple[str, ...]
    params: dict[str, Any]
    variables: dict[str, str]
    key: str


def mix(ctx: RepoContext, a: Side, b: Side, all_changes: list[Change], from_b) -> Probe:
    """The probe taking ``from_b`` from B: its trees are stored (callers hold ``writing``
    and pin them until the probe is recorded)."""
    picked = [all_changes[i] for i in sorted(from_b)]
    files = {"code": dict(a.code), "data": dict(a.data)}
    params, variables = dict(a.params), dict(a.variables)
    template, command = a.template, a.command
    for c in picked:
        if c.section in files:
            _put(files[c.section], c.name, c.b)
        elif c.section == "params":
            _put(params, c.name, c.b)
        elif c.section == "env":
            _put(variables, c.name, c.b)
        elif c.name == "template":
            template = c.b
        else:
            command = c.b
    trees = {s: build_tree(ctx.store, ctx.root, [], extra=f) for s, f in files.items()}
    argv = render(template, params) if templated(a, b) else tuple(command)
    key = probe_key(trees["code"], trees["data"], argv, params, variables, a.run.cwd)
    return Probe(frozenset(from_b), trees["code"], trees["data"], argv, params, variables, key)


def _put(target: dict, name: str, value: Any) -> None:
    if value is None:
        target.pop(name, None)
    else:
        target[name] = value


def render(template: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """An entry point's command line for these params (mlvc.workspace.project_spec)."""
    declared = {k: ParamSpec(k) for k in params}  # render needs only the names
    return EntryPoint(name="bisect", command=template, params=declared).render(params)


def probe_key(code, data, argv, params, variables, cwd: str) -> str:
    body = {
        "format": PROBE_FORMAT,
        "code": code.hex if code else None,
        "data": data.hex if data else None,
        "argv": list(argv),
        "params": params,
        "variables": variables,
        "cwd": cwd,
    }
    text = json.dumps(body, sort_keys=True, default=str)
    return blake3.blake3(text.encode()).hexdigest()


def run_probe(
    ctx: RepoContext,
    a: Side,
    b: Side,
    probe: Probe,
    message: str,
    tags: Mapping[str, str],
    echo: Echo,
) -> ObjectId:
    """Check the probe's inputs out into a scratch folder, run A's command there and record
    the run (A and B its parents); returns the run id (a failing command is recorded too)."""
    from ..workspace.checkout import checkout

    wt = ctx.layout.worktrees / new_key()
    try:
        checkout(ctx.store, Run(code=probe.code, data=probe.data), wt, ("code", "data"))
        remove_paths(wt, a.outputs() | b.outputs())
        cfg = load_project(wt)
        environ, _ = restore_variables(
            child_environ(os.environ, hashseed=False), probe.variables, cfg.env_variables
        )
        if isinstance(a.run.params.get(SEED_PARAM), int):
            environ[SEED_ENV] = str(a.run.params[SEED_PARAM])
        ep = dict(a.run.extra.get("entry_point") or {})
        if ep:
            ep["params"] = probe.params
        paths = a.run.extra.get("paths", {})
        data = {*paths.get("data", ()), *b.run.extra.get("paths", {}).get("data", ())}
        launch = Launch(
            argv=relocate(probe.argv, ctx.root, wt),
            params=probe.params,
            entry=ep.get("name", ""),
            outputs=tuple(ep.get("outputs") or paths.get("artifacts", ())),
            metrics_files=tuple(ep.get("metrics", ())),
            data=tuple(sorted(p for p in data if os.path.lexists(wt / p))),
            message=message,
            tags=tags,
            environ=environ,
            cwd=a.run.cwd,
            parents=(a.oid, b.oid),
            move_head=False,
            log_name=a.run.extra.get("log", "logs/command.log"),
            extra={**({"entry_point": ep} if ep else {}), "bisect": dict(tags)},
            show_output=False,
        )
        outcome = execute(ctx.fresh(worktree=wt), launch, echo=echo, interactive=False)
        return outcome.run_id
    finally:
        shutil.rmtree(wt, ignore_errors=True)


def probe_log(ctx: RepoContext, run_id: ObjectId) -> str:
    """Where a probe's output is: the command that prints its log."""
    run = read_run(ctx.store, run_id)
    name = run.extra.get("log") or log_name(Launch(argv=()))
    return f"`mlvc show {run_id.short}:{name}`"
