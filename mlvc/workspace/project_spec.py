"""Projects: entry points with typed params, declared outputs and an environment.

Terms:
    entry point  a named command template, ``python train.py --lr {lr}``, with typed params
                 (int, float, str, bool, path, choice), a default each or required, and the
                 files it writes (``outputs``, recorded as the run's artifacts) and the
                 metrics files it leaves (read into the run's metrics).
    environment  what the project asks of the interpreter: a python version and the
                 requirement files that describe its packages (captured with every run).

Read from ``mlvc.toml`` (``[entry_points.NAME]``, ``[environment]``) and from an MLflow
``MLproject`` file, so that an existing MLflow project runs unchanged. Where both name the
same entry point, ``mlvc.toml`` wins. Pure: files in, values out.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.params import _toml, typed_value
from ..errors import UsageError

PROJECT_FILE = "mlvc.toml"
MLPROJECT_FILES = ("MLproject", "MLProject", "mlproject")
TYPES = ("int", "float", "str", "bool", "path", "choice")
MLFLOW_TYPES = {"string": "str", "float": "float", "path": "path", "uri": "str"}
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][\w.\-]*)\}")
_SHELL_CHARS = set("|&;<>()$`*?[]~!#\\\n")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


@dataclass(frozen=True)
class ParamSpec:
    """One declared param: its type, default (None: none) and whether it must be given."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    choices: tuple = ()

    def convert(self, value: Any) -> Any:
        """The typed value of ``value`` (text from ``-P`` or a value from a file), or a
        one-line UsageError saying what was expected."""
        text = _text(value)
        if self.type == "choice":
            for c in self.choices:
                if value == c or text == _text(c):
                    return c
            shown = ", ".join(_text(c) for c in self.choices)
            raise UsageError(f"param {self.name}={text} is not one of the choices: {shown}")
        try:
            if self.type == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                return int(value) if isinstance(value, int | float) else int(text.strip())
            if self.type == "float":
                if isinstance(value, bool):
                    raise ValueError
                return float(value) if isinstance(value, int | float) else float(text.strip())
            if self.type == "bool":
                if isinstance(value, bool):
                    return value
                low = text.strip().lower()
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE
                raise ValueError
        except ValueError:
            example = {"int": "10", "float": "0.01", "bool": "true"}[self.type]
            raise UsageError(
                f"param {self.name}={text} is not a valid {self.type}; "
                f"expected e.g. {self.name}={example}"
            ) from None
        return text  # str and path: kept as given, so a relative path stays relative


@dataclass(frozen=True)
class EntryPoint:
    """A named command template with typed params and declared outputs."""

    name: str
    command: str
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    description: str = ""
    source: str = PROJECT_FILE
    append_extra: bool = False  # MLflow style: undeclared params become ``--key value``

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``given`` (name -> text or value) against the declared params and fill in
        defaults; returns name -> typed value, declared params first."""
        unknown = [k for k in given if k not in self.params]
        if unknown and not self.append_extra:
            known = ", ".join(self.params) or "none"
            raise UsageError(
                f"entry point {self.name!r} has no param {unknown[0]!r} (its params: {known})"
            )
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            if name in given:
                out[name] = spec.convert(given[name])
            elif spec.default is not None:
                out[name] = spec.default
            elif spec.required:
                raise UsageError(
                    f"entry point {self.name!r} needs param {name!r} ({spec.type}); "
                    f"pass -P {name}=VALUE"
                )
        for name in unknown:
            out[name] = (
                typed_value(str(given[name])) if isinstance(given[name], str) else given[name]
            )
        return out

    def render(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        """The command line for typed ``values``: each ``{name}`` becomes the shell-quoted
        value; a template that needs a shell (pipes, ``&&``, ``$VAR``...) runs as ``sh -c``."""

        def sub(m: re.Match) -> str:
            name = m.group(1)
            return shlex.quote(_text(values[name])) if name in values else ""

        text = _PLACEHOLDER.sub(sub, self.command)
        extra = [k for k in values if k not in self.params]
        if extra:
            text += "".join(f" --{k} {shlex.quote(_text(values[k]))}" for k in extra)
        return command_argv(text, _PLACEHOLDER.sub("X", self.command))


def command_argv(text: str, template: str | None = None) -> tuple[str, ...]:
    """``text`` as an argv: split like a shell would, or ``sh -c text`` when the template
    (placeholders filled in, values quoted) uses anything only a shell understands."""
    template = text if template is None else template
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise UsageError(f"cannot parse command {template!r}: {e}") from None
    if not words:
        raise UsageError("the command is empty")
    if _SHELL_CHARS & set(template) or _ASSIGNMENT.match(words[0]):
        return ("sh", "-c", text)
    return tuple(shlex.split(text))


def _text(value: Any) -> str:
    """How a value appears on a command line: booleans as true/false, floats by repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class Environment:
    """The ``[environment]`` section: a python version (prefix or specifier) and
    requirement files, project-relative."""

    python: str = ""
    requirements: tuple[str, ...] = ()
    docker: str = ""  # an MLproject's docker_env image: mlvc runs without Docker, and says so

    def python_mismatch(self, version: str) -> str:
        """Why python ``version`` does not satisfy ``self.python``, or "" when it does."""
        want = self.python.strip()
        if not want or not version:
            return ""
        if want[0].isdigit():
            ok = version == want or version.startswith(want + ".")
        else:
            try:
                from packaging.specifiers import SpecifierSet

                ok = SpecifierSet(want).contains(version, prereleases=True)
            except Exception:  # no packaging, or a malformed specifier: do not block the run
                return ""
        return "" if ok else f"the project asks for python {want}, but python is {version}"


@dataclass(frozen=True)
class ProjectSpec:
    name: str = ""
    entry_points: Mapping[str, EntryPoint] = field(default_factory=dict)
    environment: Environment = field(default_factory=Environment)

    def entry(self, name: str, root: Path | None = None) -> EntryPoint:
        """The entry point ``name``; a ``.py`` or ``.sh`` file in the project runs as one
        with no declared params (each ``-P k=v`` becomes ``--k v``), as in MLflow."""
        if name in self.entry_points:
            return self.entry_points[name]
        if root is not None and name.endswith((".py", ".sh")) and (root / name).is_file():
            runner = "python" if name.endswith(".py") else "bash"
            return EntryPoint(name, f"{runner} {shlex.quote(name)}", source=name, append_extra=True)
        known = ", ".join(sorted(self.entry_points)) or "none are defined"
        raise UsageError(
            f"no entry point {name!r} (entry points: {known}); define it under "
            f"[entry_points.{name}] in {PROJECT_FILE}, or name a .py/.sh file"
        )


# -- mlvc.toml -------------------------------------------------------------------------------


def load_spec(root: Path) -> ProjectSpec:
    """The project's entry points and environment from mlvc.toml and MLproject."""
    root = Path(root)
    entries: dict[str, EntryPoint] = {}
    env = Environment()
    name = ""
    mlp = next((root / n for n in MLPROJECT_FILES if (root / n).is_file()), None)
    if mlp is not None:
        name, entries, env = _load_mlproject(mlp)
    toml_path = root / PROJECT_FILE
    if toml_path.is_file():
        try:
            raw = _toml().loads(toml_path.read_text())
        except Exception as e:
            raise UsageError(f"cannot parse {toml_path}: {e}") from None
        where = PROJECT_FILE
        for ep_name, body in _table(raw, "entry_points", where).items():
            entries[ep_name] = _toml_entry(ep_name, body, f"{where} [entry_points.{ep_name}]")
        if "environment" in raw:
            env = _toml_environment(_table(raw, "environment", where), where)
        name = (
            str(raw.get("project", {}).get("name", name))
            if isinstance(raw.get("project"), dict)
            else name
        )
    return ProjectSpec(name, entries, env)


def _table(raw: Mapping, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where}: [{key}] must be a table")
    return value


def _strings(body: Mapping, key: str, where: str) -> tuple[str, ...]:
    """A list of project-relative paths (a single string is a list of one)."""
    value = body.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}: {key} must be a list of paths")
    for v in value:
        parts = v.replace("\\", "/").split("/")
        if v.startswith("/") or ".." in parts or not v.strip("./"):
            raise UsageError(f"{where}: {key} {v!r} must be a path inside the project")
    return tuple(posixpath.normpath(v) for v in value)


def _toml_entry(name: str, body: Any, where: str) -> EntryPoint:
    if not isinstance(body, dict):
        raise UsageError(f"{where} must be a table with a command")
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        raise UsageError(f'{where}: command must be a string, e.g. "python train.py --lr {{lr}}"')
    known = {"command", "params", "outputs", "metrics", "data", "description"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(known))})")
    params = {
        k: _toml_param(k, v, f"{where} param {k!r}")
        for k, v in _table(body, "params", where).items()
    }
    ep = EntryPoint(
        name,
        command,
        params,
        outputs=_strings(body, "outputs", where),
        metrics=_strings(body, "metrics", where),
        data=_strings(body, "data", where),
        description=str(body.get("description", "")),
    )
    _check_placeholders(ep, where)
    return ep


def _toml_param(name: str, body: Any, where: str) -> ParamSpec:
    if not isinstance(body, dict):  # shorthand: `lr = 0.01` declares a float defaulting to 0.01
        return _param(name, _type_of(body, where), body, None, (), where)
    unknown = sorted(set(body) - {"type", "default", "required", "choices"})
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (type, default, required, choices)")
    default = body.get("default")
    kind = body.get("type") or ("choice" if "choices" in body else _type_of(default, where))
    required = body.get("required")
    if required is not None and not isinstance(required, bool):
        raise UsageError(f"{where}: required must be true or false")
    choices = body.get("choices", [])
    if not isinstance(choices, list):
        raise UsageError(f"{where}: choices must be a list")
    return _param(name, kind, default, required, tuple(choices), where)


def _type_of(value: Any, where: str) -> str:
    if value is None:
        return "str"
    for t, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, t):
            return kind
    raise UsageError(f"{where}: a default must be a number, true/false or a string")


def _param(name, kind, default, required, choices, where) -> ParamSpec:
    if kind not in TYPES:
        raise UsageError(f"{where}: unknown type {kind!r}; use one of {', '.join(TYPES)}")
    if kind == "choice" and not choices:
        raise UsageError(f"{where}: a choice param needs choices = [...]")
    spec = ParamSpec(name, kind, None, default is None if required is None else required, choices)
    if default is not None:
        try:
            default = spec.convert(default)
        except UsageError as e:
            raise UsageError(f"{where}: bad default: {e}") from None
    return ParamSpec(name, kind, default, spec.required, choices)


def _check_placeholders(ep: EntryPoint, where: str) -> None:
    for m in _PLACEHOLDER.finditer(ep.command):
        if m.group(1) not in ep.params:
            raise UsageError(
                f"{where}: the command uses {{{m.group(1)}}}, which is not a declared param"
            )


def _toml_environment(body: Mapping, where: str) -> Environment:
    python = body.get("python", "")
    if not isinstance(python, str):
        raise UsageError(f'{where}: [environment] python must be a string, e.g. "3.11"')
    return Environment(python, _strings(body, "requirements", f"{where} [environment]"))


# -- MLproject -------------------------------------------------------------------------------


def _load_mlproject(path: Path) -> tuple[str, dict[str, EntryPoint], Environment]:
    """An MLflow MLproject file (YAML): name, entry_points, python_env / conda_env."""
    try:
        import yaml
    except ImportError:
        raise UsageError(
            f"{path.name} is an MLflow project file (YAML) but PyYAML is not installed; "
            "`pip install pyyaml` (or `pip install mlvc[yaml]`)"
        ) from None
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot parse {path.name}: {first}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path.name} must be a YAML map with entry_points")
    where = path.name
    entries = {}
    eps = raw.get("entry_points") or {}
    if not isinstance(eps, dict):
        raise UsageError(f"{where}: entry_points must be a map")
    for name, body in eps.items():
        w = f"{where} entry point {name!r}"
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            raise UsageError(f"{w} needs a command")
        params = {}
        for pname, pbody in (body.get("parameters") or {}).items():
            params[str(pname)] = _mlflow_param(str(pname), pbody, f"{w} parameter {pname!r}")
        ep = EntryPoint(str(name), body["command"], params, source=where, append_extra=True)
        _check_placeholders(ep, w)
        entries[str(name)] = ep
    files = tuple(str(raw[k]) for k in ("python_env", "conda_env") if isinstance(raw.get(k), str))
    python = ""
    for f in files:
        python = python or _python_from_env_file(path.parent / f)
    return str(raw.get("name", "")), entries, Environment(python, files, _docker_image(raw))


def _docker_image(raw: dict) -> str:
    """The image an MLproject's ``docker_env`` names ("" without one)."""
    docker = raw.get("docker_env")
    if docker is None:
        return ""
    image = docker.get("image") if isinstance(docker, dict) else docker
    return str(image or "an unnamed image")


def _mlflow_param(name: str, body: Any, where: str) -> ParamSpec:
    """``name: type`` or ``name: {type: float, default: 0.1}``; no default means required."""
    if isinstance(body, str):
        body = {"type": body}
    if not isinstance(body, dict):
        raise UsageError(f"{where} must be a type or a map with type and default")
    kind = str(body.get("type", "string"))
    kind = MLFLOW_TYPES.get(kind, kind)
    return _param(name, kind, body.get("default"), None, tuple(body.get("choices", ())), where)


def _python_from_env_file(path: Path) -> str:
    """The python version an MLflow python_env.yaml (``python: 3.10``) or conda file pins."""
    try:
        import yaml

        raw = yaml.safe_load(path.read_text())
    except Exception:
        return ""
    if not isinstance(raw, dict):
        return ""
    if raw.get("python"):
        return str(raw["python"])
    for dep in raw.get("dependencies") or []:
        m = re.match(r"^python\s*=*\s*([\d.]+)", dep) if isinstance(dep, str) else None
        if m:
            return m.group(1)
    return ""
