"""The models API: log a model into a live run, and register, alias, list and get versions.

``log_model`` saves the model into the active run's artifacts under ``models/<name>/`` and
records it in the run's ``models`` field. Its ``ModelInfo.uri`` names the live run
(``run:<live key>/models/<name>``) while the run is in progress and the recorded run
(``run:<run id>/models/<name>``) once it has ended; both forms load the model at any time.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.names import safe_relpath
from ..events import pre
from ..events import registry as model_events
from ..refs import registry
from ..runs.staging import is_key
from ..store.locks import writing
from .format import save
from .loading import locate, store_dir
from .signature import Signature


def _repo(repo):
    if repo is not None:
        return repo
    from ..api.repo import Repo

    return Repo()


@dataclass
class ModelInfo:
    """A model logged into a run. ``uri`` loads it (see the module docstring)."""

    name: str
    path: str
    model_id: str
    flavor: str
    signature: Signature | None
    metadata: dict
    run: object = field(repr=False)
    registered_version: int | None = None

    @property
    def run_id(self) -> str:
        """The run's id: its live key until it ends, then the recorded run's id."""
        return self.run.id

    @property
    def uri(self) -> str:
        return f"run:{self.run.id}/{self.path}"

    model_uri = uri


def log_model(
    model,
    name: str,
    flavor: str | None = None,
    signature=None,
    input_example=None,
    requirements=None,
    code_paths=(),
    registered_model_name: str | None = None,
    run=None,
) -> ModelInfo:
    """Save ``model`` into the active run (one is started if none is) as ``models/<name>``.

    Arguments are those of ``mlvc.models.save``; ``registered_model_name`` also registers
    the model as the next version of that name. Returns a ``ModelInfo``.
    """
    from ..api import fluent

    run = run or fluent.active_run_or_start()
    registry.check_name(name)
    rel = safe_relpath(f"models/{name}")
    from ..api.repo import Repo

    repo = Repo._view(run.ctx)
    tmp = repo.dir / "tmp" / f"model-{secrets.token_hex(6)}"
    with writing(repo.dir, repo.store):  # gc waits until meta.json names the tree
        try:
            manifest = save(model, tmp, flavor, signature, input_example, requirements, code_paths)
            tree = store_dir(repo, tmp)
            run.forget_artifacts(rel)  # logging a name again replaces the model, not merges it
            run.log_artifact(tmp, rel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        sig = Signature.from_dict(manifest.get("signature"))
        run.record_model(
            name,
            {
                "path": rel,
                "tree": tree.hex,
                "flavor": manifest["flavor"],
                "flavors": sorted(manifest["flavors"]),
                "signature": _readable(manifest.get("signature")),
            },
        )
    info = ModelInfo(name, rel, tree.hex, manifest["flavor"], sig, manifest, run)
    if registered_model_name:
        info.registered_version = register(registered_model_name, info.uri, repo=repo)
    return info


def _readable(sig: dict | None) -> dict | None:
    if not sig:
        return None
    return {k: {x: y for x, y in v.items() if x != "arrow"} if v else None for k, v in sig.items()}


def register(name: str, uri: str, repo=None, trust: bool = False) -> int:
    """Register the model at ``uri`` as the next version of ``name``; returns the number.

    A model from a run of this repository (or a trusted version) makes a trusted version:
    its pickles load without an opt-in. One from a folder does so only with ``trust=True``
    (mlvc.models.trust); without it, loading its pickles will need ``trust=True``.
    """
    repo = _repo(repo)
    registry.check_name(name)
    with writing(repo.dir, repo.store):  # gc waits until the version ref names the tree
        return _register(repo, name, uri, trust)


def _register(repo, name: str, uri: str, trust: bool) -> int:
    loc = locate(uri, repo, materialize=False)
    tree, source, run_id = loc.model_id, str(uri), loc.run_id
    if tree is None:  # a folder on disk: store it
        tree = store_dir(repo, Path(loc.path))
        source = str(Path(loc.path).resolve())
    elif uri.startswith("run:") and run_id and not is_key(run_id):
        source = f"run:{run_id}/{uri.split('/', 1)[1]}" if "/" in uri else f"run:{run_id}"
    _check_model_tree(repo, tree, uri)
    live = run_id if run_id and is_key(run_id) else None
    version = model_events.create_version(
        repo.ctx,
        name,
        tree,
        source,
        None if live else run_id,
        repo.ctx.author(),
        loc.trusted or trust,
    )
    if live:
        _note_run_at_end(repo, live, name, version)
    repo.index.try_ingest()
    return version


def _check_model_tree(repo, tree, uri: str) -> None:
    from ..store.typed import read_tree
    from .errors import ModelError
    from .format import MANIFEST, MLFLOW_MANIFEST

    names = {e.name for e in read_tree(repo.store, tree).entries}
    if MANIFEST not in names and MLFLOW_MANIFEST not in names:
        raise ModelError(f"{uri} is not a model folder: it has no {MANIFEST} or {MLFLOW_MANIFEST}")


def _note_run_at_end(repo, key: str, name: str, version: int) -> None:
    """Once the live run ends, log its run id on the version (registered before it had one)."""
    from ..api import fluent

    run = fluent.live_run(key)
    if run is not None:
        run.on_end.append(
            lambda rid: registry.note_run(repo.refs, name, version, rid.hex, repo.ctx.author())
        )


def set_alias(name: str, alias: str, version: int | str, repo=None) -> registry.ModelVersion:
    """Point ``alias`` at a version (moving it if it exists); logged with who and when."""
    repo = _repo(repo)
    pre.alias(repo.ctx, name, alias, version, repo.ctx.author())
    info = model_events.set_alias(repo.ctx, name, alias, version, repo.ctx.author())
    repo.index.try_ingest()
    return info


def delete_alias(name: str, alias: str, repo=None) -> int:
    """Remove an alias; returns the version it pointed at."""
    repo = _repo(repo)
    pre.alias(repo.ctx, name, alias, None, repo.ctx.author())
    version = model_events.delete_alias(repo.ctx, name, alias, repo.ctx.author())
    repo.index.try_ingest()
    return version


def list_models(repo=None) -> list[dict]:
    """Every registered model with its version count, latest version and aliases."""
    return registry.list_models(_repo(repo).refs)


def get(name: str, version: int | str | None = None, alias: str | None = None, repo=None):
    """A registered version: by number, by alias, or the latest. ``name`` may also be
    written ``NAME/VERSION`` or ``NAME@ALIAS``."""
    if version is None and alias is None:
        if "@" in name:
            name, _, alias = name.partition("@")
        elif "/" in name:
            name, _, version = name.partition("/")
    return registry.get(_repo(repo).refs, name, version, alias)


def alias_history(name: str, alias: str | None = None, repo=None) -> list[dict]:
    """Every alias move of a model, oldest first: alias, action, version, previous, by, at."""
    registry.check_name(name)
    return registry.alias_history(_repo(repo).refs, name, alias)


def model_uri(target: str) -> str:
    """A URI from what a user typed: a URI or folder as is; ``NAME``, ``NAME/VERSION`` and
    ``NAME@ALIAS`` as registry URIs (``NAME`` alone is its latest version)."""
    if target.startswith(("models:/", "run:")) or Path(target).is_dir():
        return target
    if "@" in target or "/" in target:
        return f"models:/{target}"
    return f"models:/{target}/latest"


def describe(target: str, repo=None) -> dict:
    """Everything about a model (``mlvc models show``): manifest summary, and for a
    registered version its registration and the history of the model's aliases."""
    import json

    from ..store.typed import lookup
    from .format import MANIFEST
    from .loading import manifest_of

    uri = model_uri(target)
    needs_repo = uri.startswith(("models:/", "run:"))
    repo = _repo(repo) if needs_repo else repo
    loc = locate(uri, repo, materialize=False)
    manifest = None
    if loc.model_id is not None:
        entry = lookup(repo.store, loc.model_id, MANIFEST)
        if entry is not None:
            manifest = json.loads(repo.store.read_bytes(entry.id))
        else:
            manifest = manifest_of(locate(uri, repo).path)
    else:
        manifest = manifest_of(loc.path)
    out = {
        "uri": uri,
        "model_id": loc.model_id.hex if loc.model_id else None,
        "path": None if loc.model_id else str(loc.path),
        "flavor": manifest.get("flavor"),
        "flavors": sorted(manifest.get("flavors", {})),
        "signature": _readable(manifest.get("signature")),
        "input_kind": manifest.get("input_kind"),
        "requirements": manifest.get("requirements") or [],
        "created": manifest.get("created"),
        "format": manifest.get("source_format", "mlvc"),
        "trusted": loc.trusted,
        "version": None,
        "alias_history": [],
    }
    if loc.version is not None:
        out["version"] = loc.version.to_dict()
        out["alias_history"] = registry.alias_history(repo.refs, loc.version.name)
    return out
