"""The project's own settings: ``mlvc.toml`` at the project root (optional).

``[track]`` gives defaults for ``mlvc commit``: ``data``, ``artifacts`` (paths), ``params``,
``metrics`` (files). ``[env]`` ``variables`` lists extra environment variables to capture.
``[environment]`` ``requirements`` names requirement files captured with the environment;
entry points and the rest of ``[environment]`` are read by ``mlvc.workspace.project_spec``. What an
entry point declares it writes (``outputs``, ``metrics`` files and its log,
``logs/<name>.log``) and the ``[track] metrics`` files count as artifacts for every command,
never as code; ``[track] params`` files are code even when ``.gitignore`` ignores them. So
both are stored, restored by checkout and compared by status whatever git ignores.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from ..core.params import _toml
from ..errors import UsageError

PROJECT_FILE = "mlvc.toml"


@dataclass(frozen=True)
class ProjectConfig:
    data: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    env_variables: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict)


def load_project(root: Path) -> ProjectConfig:
    path = root / PROJECT_FILE
    if not path.is_file():
        return ProjectConfig()
    try:
        raw = _toml().loads(path.read_text())
    except Exception as e:
        raise UsageError(f"cannot parse {path}: {e}") from None
    track = raw.get("track", {})
    env = raw.get("env", {})
    environment = raw.get("environment", {})
    if not isinstance(environment, dict):
        raise UsageError(f"{path}: [environment] must be a table")

    def strings(section: dict, key: str) -> tuple[str, ...]:
        value = section.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{path}: {key} must be a list of strings")
        return tuple(value)

    return ProjectConfig(
        data=strings(track, "data"),
        artifacts=tuple(
            dict.fromkeys(
                [*strings(track, "artifacts"), *_entry_outputs(raw), *strings(track, "metrics")]
            )
        ),
        params=strings(track, "params"),
        metrics=strings(track, "metrics"),
        env_variables=strings(env, "variables"),
        env_files=strings(environment, "requirements"),
        raw=raw,
    )


def _entry_outputs(raw: dict) -> list[str]:
    """The paths entry points write, read leniently: mlvc.workspace.project_spec reports bad ones
    when the entry point runs, and ``mlvc commit`` must not fail over them."""
    out = []
    entries = raw.get("entry_points", {})
    for name, body in entries.items() if isinstance(entries, dict) else ():
        if not isinstance(body, dict):
            continue
        for key in ("outputs", "metrics"):
            value = body.get(key, [])
            for v in (
                [value] if isinstance(value, str) else value if isinstance(value, list) else []
            ):
                parts = str(v).replace("\\", "/").split("/")
                if (
                    isinstance(v, str)
                    and not v.startswith("/")
                    and ".." not in parts
                    and v.strip("./")
                ):
                    out.append(posixpath.normpath(v))
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name)).lstrip(".")
        out.append(f"logs/{safe or 'command'}.log")
    return out
