"""Settings read once at the edge, and the repository's own config, checked.

``Settings.from_env()`` is called by the shells (the CLI's ``main``, a server's app factory,
``mlvc.start_run``) and carried down in a ``RepoContext``; library code below never reads
the process environment for them. The author is a setting, not a fact of the process: a
server sets it to the authenticated user.

``RepoConfig.load`` reads ``.mlvc/config`` and refuses one this mlvc would misread (not TOML,
another format version, another hash algorithm): ``UnsupportedRepository``, exit 14.
"""

from __future__ import annotations

import functools
import getpass
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import MlvcError, UnsupportedRepository
from .ids import HASH_ALGORITHM
from .objects import FORMAT_VERSION

INDEX_SYNC = ("background", "inline")


@dataclass(frozen=True)
class Settings:
    """What a process may configure: who writes, how many hashing threads, whether
    commits ingest into the index in a detached worker (``background``) or inline, and how
    many small packs make a commit merge them in the background (mlvc.store.pack.merge)."""

    author: str | None = None  # None: git's user.name <user.email>, else user@host
    threads: int = 1
    index_sync: str = "background"
    gc_auto: int = 50  # small packs that make a commit merge them in the background (0: never)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        try:
            threads = max(1, int(env.get("MLVC_THREADS", "1")))
        except ValueError:
            threads = 1
        sync = env.get("MLVC_INDEX_SYNC", "background")
        try:
            gc_auto = max(0, int(env.get("MLVC_GC_AUTO", "50")))
        except ValueError:
            gc_auto = 50
        return cls(
            author=env.get("MLVC_AUTHOR") or None,
            threads=threads,
            index_sync=sync if sync in INDEX_SYNC else "background",
            gc_auto=gc_auto,
            environ=dict(env),
        )

    def who(self) -> str:
        """The author to record: the setting, else git's identity, else user@host."""
        return self.author or configured_author()

    def as_user(self, author: str) -> Settings:
        """These settings on behalf of another author (a server's authenticated user)."""
        return replace(self, author=author)


def _hostname() -> str:
    """socket.gethostname() without importing socket (~10 ms) where uname gives the same."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


@functools.lru_cache(maxsize=1)
def configured_author() -> str:
    """git's ``user.name <user.email>``, else ``user@host`` (asked once per process)."""
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
        return f"{getpass.getuser()}@{_hostname()}"
    except Exception:
        return "unknown"


@dataclass(frozen=True)
class RepoConfig:
    """``.mlvc/config``: the format version and hash algorithm a repository was made with."""

    format_version: int = FORMAT_VERSION
    hash: str = HASH_ALGORITHM

    def text(self) -> str:
        return (
            "# mlvc repository settings\n"
            "[core]\n"
            f"format_version = {self.format_version}\n"
            f'hash = "{self.hash}"\n'
        )

    @classmethod
    def load(cls, path: Path) -> RepoConfig:
        """Read and check a config; refuse what this mlvc would misread."""
        supports = (
            f'this mlvc reads format_version = {FORMAT_VERSION} and hash = "{HASH_ALGORITHM}"'
        )
        try:
            core = _toml().loads(path.read_text()).get("core", {})
        except UnicodeDecodeError:
            raise UnsupportedRepository(
                f"{path} is not valid TOML (not UTF-8); {supports}"
            ) from None
        except OSError as e:
            raise MlvcError(f"cannot read {path}: {e.strerror}") from None
        except ValueError as e:  # tomllib.TOMLDecodeError
            raise UnsupportedRepository(f"{path} is not valid TOML ({e}); {supports}") from None
        if not isinstance(core, dict):
            raise UnsupportedRepository(f"{path}: [core] is not a table; {supports}")
        for key, want in (("format_version", FORMAT_VERSION), ("hash", HASH_ALGORITHM)):
            value = core.get(key, want)
            if value != want or type(value) is not type(want):
                shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
                raise UnsupportedRepository(
                    f"{path} declares {key} = {shown}; {supports} (a newer mlvc may read it)"
                )
        return cls()


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib
