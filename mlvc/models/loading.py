"""Finding a model from its URI and loading it as an object with ``predict``.

URIs:
    run:RUN/PATH          a model folder in a run's artifacts (``run:best/models/clf``);
                          RUN is anything ``mlvc`` accepts, or a live run's key
    models:/NAME/VERSION  a registered version (``models:/clf/3``, ``models:/clf/latest``)
    models:/NAME@ALIAS    the version an alias points at (``models:/clf@champion``)
    PATH                  a model directory on disk (mlvc's or MLflow's)

Models stored in a repository are materialized, verified, into ``.mlvc/cache/models/<tree
id>/`` (read-only files) and loaded from there; the cache is disposable.

Whether a model's pickles may be loaded depends on where it comes from: see
mlvc.models.trust. ``run:`` URIs are trusted, ``models:/`` URIs as their version was
registered, folders only by an explicit opt-in.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..core.ids import ObjectId
from ..core.objects import DIR
from ..errors import MlvcError, PathNotInRun
from ..runs.staging import StagedRun, is_key
from . import flavors
from .errors import ModelError, ModelFailed, UnknownModel
from .format import MANIFEST, MLFLOW_MANIFEST, is_model_dir, load_example, read_manifest
from .signature import Signature, enforce

CACHE = "cache/models"


@dataclass(frozen=True)
class Location:
    """Where a model is: a folder on disk, and its tree id when it is stored."""

    path: Path
    model_id: ObjectId | None
    uri: str
    version: object = None  # registry.ModelVersion for models:/ URIs
    run_id: str | None = None
    trusted: bool = False  # comes from this repository (mlvc.models.trust)


def _repo(repo):
    if repo is not None:
        return repo
    from ..api.repo import Repo

    return Repo()


def locate(uri: str, repo=None, materialize: bool = True) -> Location:
    """Resolve a URI to a model folder (materialized from the store when needed)."""
    uri = str(uri)
    if uri.startswith("models:/"):
        r = _repo(repo)
        tree, version = registry_tree(r, uri)
        path = _dir(r, tree, materialize)
        return Location(path, tree, uri, version, version.run_id, version.trusted)
    if uri.startswith("run:"):
        r = _repo(repo)
        tree, run_id = run_tree(r, uri)
        return Location(_dir(r, tree, materialize), tree, uri, None, run_id, trusted=True)
    path = Path(uri).expanduser()
    if path.is_dir():
        if not is_model_dir(path):
            raise ModelError(
                f"{path} is not a model directory: it has no {MANIFEST} or {MLFLOW_MANIFEST}"
            )
        return Location(path.resolve(), None, uri)
    raise UnknownModel(
        f"no model at {uri!r}: not a folder, nor a run:RUN/PATH or models:/NAME/VERSION URI"
    )


def _dir(repo, tree: ObjectId, materialize: bool) -> Path:
    return materialize_tree(repo, tree) if materialize else repo.dir / CACHE / tree.hex


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME/V`` → (NAME, V, None); ``models:/NAME@A`` → (NAME, None, A)."""
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return name, None, alias
    name, _, version = rest.partition("/")
    if not name or not version or "/" in version:
        raise UnknownModel(
            f"bad model URI {uri!r}: use models:/NAME/VERSION, models:/NAME/latest or "
            "models:/NAME@ALIAS"
        )
    return name, version, None


def registry_tree(repo, uri: str):
    from ..refs import registry

    name, version, alias = parse_registry_uri(uri)
    info = registry.get(repo.refs, name, version, alias)
    return ObjectId.parse(info.model_id), info


def run_tree(repo, uri: str) -> tuple[ObjectId, str | None]:
    """The model tree at ``run:RUN/PATH``, and the run's id (a live key while it runs)."""
    from ..store.typed import lookup, read_run

    spec, _, path = uri[len("run:") :].partition("/")
    path = path.strip("/")
    if not spec:
        raise UnknownModel(f"bad run URI {uri!r}: use run:RUN/PATH, e.g. run:HEAD/models/clf")
    staged = StagedRun.load(repo.layout.staged(spec)) if is_key(spec) else None
    if staged is not None:
        return _live_tree(repo, staged, path, uri), spec
    if is_key(spec) and repo.refs.read(f"refs/names/{spec}") is None:
        oid = _run_of_live_key(repo, spec)
    else:
        oid = repo.resolve(spec)
    run = read_run(repo.store, oid)
    candidates = [path]
    if not path and len(run.models) == 1:
        candidates = [next(iter(run.models.values())).get("path", "")]
    elif path in run.models:
        candidates.insert(0, run.models[path].get("path", path))
    if path.startswith("artifacts/"):
        candidates.append(path[len("artifacts/") :])
    for p in candidates:
        entry = lookup(repo.store, run.artifacts, p) if p else None
        if entry is not None and entry.kind == DIR:
            return entry.id, oid.hex
    known = ", ".join(sorted(run.models)) or "none"
    raise PathNotInRun(
        f"run {oid.short} has no model folder {path!r} in its artifacts (logged models: {known})"
    )


def _live_tree(repo, staged: StagedRun, path: str, uri: str) -> ObjectId:
    from ..workspace.trees import build_tree

    models = staged.models
    if not path and len(models) == 1:
        path = next(iter(models.values()))["path"]
    elif path in models:
        path = models[path]["path"]
    prefix = path + "/"
    artifacts, _ = staged.artifact_entries()
    entries = {p[len(prefix) :]: e for p, e in artifacts.items() if p.startswith(prefix)}
    if not entries:
        raise PathNotInRun(f"live run {staged.key} has no model folder {path!r} ({uri})")
    from ..store.locks import writing

    with writing(repo.dir, repo.store):
        return build_tree(repo.store, repo.root, [], extra=entries)


def _run_of_live_key(repo, key: str) -> ObjectId:
    """The recorded run that was live under ``key`` (its ``extra.live_key``), looked up in
    the index's ``live_keys`` table."""
    with repo.index.connect_readonly() as con:
        rows = con.execute(
            "SELECT run_id FROM live_keys WHERE live_key = ? ORDER BY run_id", [key]
        ).fetchall()
    if not rows:
        raise UnknownModel(f"no live or recorded run has the key {key!r}")
    return ObjectId.parse(rows[0][0])


def materialize_tree(repo, tree: ObjectId) -> Path:
    """The model tree's files under ``.mlvc/cache/models/<id>``, verified; built once."""
    from ..store.typed import walk
    from ..workspace.checkout import current_entry_matches, preflight, write_entry

    dest = repo.dir / CACHE / tree.hex
    files = list(walk(repo.store, tree))
    if dest.is_dir() and all(current_entry_matches(dest / p, e) for p, e in files):
        return dest
    tmp = repo.dir / "tmp" / f"model-{tree.short}-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    try:
        preflight(repo.store, tmp, dict(files), dict(files))  # names, paths, links: all safe
        for rel, entry in files:
            write_entry(repo.store, tmp, rel, entry)
            if entry.kind != "symlink":
                os.chmod(tmp / rel, 0o555 if entry.kind == "exec" else 0o444)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a stale or damaged copy: replace it
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another process won the rename with the same content
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def store_dir(repo, path: Path) -> ObjectId:
    """Store a model folder's files; returns its tree id."""
    from ..workspace.trees import build_tree

    files = sorted(
        p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink()
    )
    tree = build_tree(repo.store, path, files)
    if tree is None:
        raise ModelError(f"the model folder {path} is empty")
    repo.store.sync()
    return tree


# -- the loaded model -----------------------------------------------------------------------


class Model:
    """A loaded model. ``predict(data)`` takes a pandas DataFrame, pyarrow Table, numpy array,
    dict of columns or list of records; input is checked against the signature first."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        uri: str = "",
        model_id: str | None = None,
        trusted: bool = False,
    ):
        """``trusted``: the model's pickles may be loaded (mlvc.models.trust)."""
        self.path = Path(path)
        self.trusted = trusted
        self.metadata = manifest
        self.uri = uri or str(path)
        self.model_id = model_id
        self.flavor = manifest["flavor"]
        self.signature = Signature.from_dict(manifest.get("signature"))
        self.input_kind = manifest.get("input_kind")
        self._mod = flavors.get(self.flavor)
        self._conf = manifest.get("flavors", {}).get(self.flavor, {})
        pyfunc = manifest.get("flavors", {}).get(flavors.PYFUNC, {})
        if pyfunc.get("code") and trusted:  # code/ modules could shadow any import
            code = str(self.path / pyfunc["code"])
            if code not in sys.path:
                sys.path.insert(0, code)
        _check_python(pyfunc.get("python_version"), self.uri)
        try:
            self._native = self._mod.load(self.path, self._conf, trusted)
        except MlvcError:
            raise
        except (ImportError, AttributeError) as e:
            raise ModelError(
                f"cannot load the model {self.uri}: {e}; install its requirements "
                "(requirements.txt), or save it with code_paths= for code of your own"
            ) from None
        except Exception as e:
            raise ModelError(f"cannot load the model {self.uri}: {type(e).__name__}: {e}") from None

    def predict(self, data):
        """Score ``data``; raises SignatureError when it does not fit the signature, and
        whatever the model raises."""
        return self._mod.predict(self._native, self.prepare(data), self.input_kind, self._conf)

    def prepare(self, data):
        """``data`` checked against the signature and cast to it (SignatureError if it
        does not fit): what ``predict_prepared`` takes."""
        inputs = self.signature.inputs if self.signature else None
        return enforce(inputs, data) if inputs is not None else data

    def predict_prepared(self, data):
        """Score prepared input; an exception the model raises becomes ``ModelFailed``,
        one line without a traceback (for the CLI and the server)."""
        try:
            return self._mod.predict(self._native, data, self.input_kind, self._conf)
        except MlvcError:
            raise
        except Exception as e:
            raise ModelFailed.of(e) from e

    def predict_payload(self, body: bytes, content_type: str | None):
        """Score a request body in one of the scoring formats (mlvc.models.payload: JSON,
        CSV, Arrow; ``content_type`` as ``payload.content_type_of`` gives it), guided by
        the signature's inputs; what ``mlvc models predict`` does with a file."""
        from .payload import parse

        schema = self.signature.inputs if self.signature else None
        return self.predict_prepared(self.prepare(parse(body, content_type, schema)))

    def for_serving(self) -> Model:
        """Let the flavor take its serving shortcuts (see flavors.sklearn.predict)."""
        self._conf = {**self._conf, "serving": True}
        return self

    def unwrap(self):
        """The native model (the estimator, module, session or object that was saved)."""
        return self._native[0] if self.flavor == "mlflow_pyfunc" else self._native

    @property
    def input_example(self):
        if self.metadata.get("source_format") == "mlflow":
            from .mlflow import load_example as mlflow_example

            return mlflow_example(self.path, self.metadata.get("mlflow_input_example"))
        return load_example(self.path, self.metadata.get("input_example"))

    @property
    def requirements(self) -> list[str]:
        return list(self.metadata.get("requirements") or [])

    def __repr__(self) -> str:
        return f"<mlvc Model {self.uri} flavor={self.flavor}>"


def _check_python(version: str | None, uri: str) -> None:
    here = platform.python_version_tuple()[:2]
    if version and tuple(version.split(".")[:2]) != here:
        warnings.warn(
            f"model {uri} was saved with Python {version}; this is Python {'.'.join(here)} "
            "(pickled code may not load)",
            stacklevel=3,
        )


def manifest_of(path: Path) -> dict:
    """The manifest of an mlvc or MLflow model directory."""
    if (path / MANIFEST).is_file():
        return read_manifest(path)
    if (path / MLFLOW_MANIFEST).is_file():
        from .mlflow import read_mlmodel

        return read_mlmodel(path)
    raise ModelError(f"{path} is not a model directory: it has no {MANIFEST} or {MLFLOW_MANIFEST}")


def load(uri: str | os.PathLike, repo=None, trust: bool | None = None) -> Model:
    """Load the model at a URI (see the module docstring) for scoring.

    ``trust=True`` allows unpickling a model that does not come from this repository (a
    folder, an MLflow model, a version registered from one); pickles run code, so only for
    a source you trust. ``None`` reads the opt-in from MLVC_TRUST_PICKLE.
    """
    from . import trust as trust_model

    loc = locate(str(uri), repo)
    trusted = loc.trusted or (trust_model.from_env() if trust is None else bool(trust))
    model_id = loc.model_id.hex if loc.model_id else None
    return Model(loc.path, manifest_of(loc.path), str(uri), model_id, trusted)
