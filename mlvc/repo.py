"""``Repo``: the public library API. The CLI and any future server call only this.

A repository is a project folder holding ``.mlvc/``: the object store, refs, the journal of
runs not yet in the index, and the DuckDB index (a cache rebuilt from objects and refs).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import AlreadyARepository, NotARepository
from .ids import HASH_ALGORITHM
from .objects import FORMAT_VERSION
from .odb import LocalStore
from .refs import RefStore

MLVC_DIR = ".mlvc"


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` that holds ``.mlvc/``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MLVC_DIR / "config").is_file():
            return folder
    raise NotARepository(str(here))


class Repo:
    """An mlvc repository: ``Repo()`` finds it from the working directory."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.root = find_root(path)
        self.dir = self.root / MLVC_DIR
        self.store = LocalStore(self.dir / "objects", self.dir / "tmp")
        self.refs = RefStore(self.dir)

    @classmethod
    def init(cls, path: str | os.PathLike = ".") -> Repo:
        root = Path(path).resolve()
        d = root / MLVC_DIR
        if (d / "config").exists():
            raise AlreadyARepository(f"{root} is already an mlvc repository ({d} exists)")
        for sub in ("objects", "refs/runs", "refs/names", "refs/tags", "logs", "journal", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "config").write_text(
            "# mlvc repository settings\n"
            "[core]\n"
            f"format_version = {FORMAT_VERSION}\n"
            f'hash = "{HASH_ALGORITHM}"\n'
        )
        (d / ".gitignore").write_text("# mlvc's store is versioned by mlvc, not git\n*\n")
        return cls(root)

    def __repr__(self) -> str:
        return f"Repo({str(self.root)!r})"
