"""Paths inside a project: one normal, safe, POSIX form (``safe_relpath``)."""

from __future__ import annotations

from pathlib import PurePosixPath

from ..errors import UnsafePath
from .objects import is_reserved_name


def safe_relpath(path: str) -> str:
    """Normalize a project-relative POSIX path, refusing absolute paths, '..' and the
    reserved names ``.git``/``.mlvc`` (``objects.is_reserved_name``) at any depth."""
    parts = path.split("/")
    if path and "\0" not in path and not {"", ".", ".."} & set(parts):
        normal = path  # already normal: the common case, without pathlib's cost
    else:
        p = PurePosixPath(path)
        if p.is_absolute() or any(part in ("..", "") for part in p.parts) or "\0" in path:
            raise UnsafePath(
                f"path {path!r} is absolute or leaves the project; use a path inside it"
            )
        normal = p.as_posix()
        parts = normal.split("/")
    for part in parts:
        if is_reserved_name(part):
            raise UnsafePath(
                f"path {normal!r} is inside {part}, git's or mlvc's own folder; mlvc never "
                "records or writes those"
            )
    return normal
