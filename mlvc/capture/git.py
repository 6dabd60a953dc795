"""Facts about the git work tree a run's code lives in: commit, branch, dirty patch, remote.

Git runs as a subprocess with a timeout, with no terminal prompt and no optional locks (so a
capture never blocks, nor is blocked by, the user's own git commands), and with the
environment variables that relocate a repository removed, so the facts are always those of
the repository that holds ``root``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

TIMEOUT = 30.0
MAX_PATCH_BYTES = 32 << 20  # bigger patches are left out; the code tree holds the files anyway

# Set by git hooks and wrappers; they would point git at another repository than root's.
_RELOCATING = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RELOCATING}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


def in_git_work_tree(root: str | os.PathLike) -> bool:
    """False when no folder from root up holds a ``.git``: git would find no work tree.

    Git finds its repository only through a ``.git`` folder or file in root or a parent
    (the variables that point it elsewhere are removed, ``_RELOCATING``), so this saves
    starting git (milliseconds, more on a loaded machine) in projects outside git. True
    means git may find one: it is asked.
    """
    folder = os.path.realpath(root)
    while True:
        if os.path.lexists(os.path.join(folder, ".git")):
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def run_git(
    root: Path, *args: str, timeout: float = TIMEOUT, stderr: list[str] | None = None
) -> bytes | None:
    """stdout of ``git ARGS`` run in root, or None if git is missing, fails or times out
    (or root is in no git work tree: ``in_git_work_tree``).

    ``stderr``, if given, receives git's warnings line by line, in English (``LC_ALL=C``).
    """
    if not in_git_work_tree(root):
        return None
    env = _git_env()
    if stderr is not None:
        env["LC_ALL"] = "C"
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if stderr is not None:
        stderr.extend(done.stderr.decode(errors="replace").splitlines())
    return done.stdout if done.returncode == 0 else None


def strip_credentials(url: str) -> str:
    """The URL without a password, and for http(s) without any user (often a token)."""
    if "://" not in url:
        return url  # scp-like ``git@host:path`` carries no password
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    # over http(s) a lone user part is often a token; elsewhere keep the user, drop a password
    user = "" if parts.scheme in ("http", "https") else userinfo.split(":", 1)[0]
    netloc = f"{user}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc))


def git_facts(root: Path) -> dict:
    """``{commit, branch, dirty, patch, remote}`` for the work tree holding root, else ``{}``.

    ``commit`` is "" before the first commit and ``branch`` is "" on a detached HEAD.
    ``dirty`` means tracked files differ from HEAD (staged or not); untracked files do not
    count, as the code tree records them. ``patch`` is ``git diff HEAD --binary``, decoded as
    UTF-8 (undecodable bytes replaced); a patch over MAX_PATCH_BYTES is left out and
    ``patch_omitted`` says why. ``remote`` is origin's URL without credentials.
    """
    status = run_git(root, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=no")
    if status is None:
        return {}
    commit, branch, dirty = "", "", False
    for record in status.decode("utf-8", "replace").split("\0"):
        if record.startswith("# branch.oid "):
            oid = record[len("# branch.oid ") :]
            commit = "" if oid == "(initial)" else oid
        elif record.startswith("# branch.head "):
            head = record[len("# branch.head ") :]
            branch = "" if head == "(detached)" else head
        elif record and not record.startswith("#"):
            dirty = True
    facts = {"commit": commit, "branch": branch, "dirty": dirty, "patch": "", "remote": ""}
    if dirty:
        facts.update(_patch(root, commit))
    remote = run_git(root, "remote", "get-url", "origin", timeout=10)
    if remote:
        facts["remote"] = strip_credentials(remote.decode("utf-8", "replace").strip())
    return facts


# The same changes give the same patch whatever the user's diff settings, and it applies.
_PLAIN_DIFF = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=short",
)


def _patch(root: Path, commit: str) -> dict:
    """The diff of tracked files against HEAD (the empty tree before the first commit)."""
    base = commit
    if not base:
        empty = run_git(root, "hash-object", "-t", "tree", "/dev/null", timeout=10)
        if empty is None:
            return {"patch_omitted": "git could not name the empty tree"}
        base = empty.decode().strip()
    import tempfile

    # git writes to a file so a huge binary diff never has to fit in memory
    with tempfile.TemporaryDirectory(prefix="mlvc-diff-") as tmp:
        out = os.path.join(tmp, "patch")
        args = ["diff", "--binary", *_PLAIN_DIFF, f"--output={out}", base, "--"]
        if run_git(root, *args) is None:
            return {"patch_omitted": "git diff failed or timed out"}
        size = os.path.getsize(out)
        if size > MAX_PATCH_BYTES:
            return {"patch_omitted": f"patch of {size} bytes exceeds {MAX_PATCH_BYTES} bytes"}
        with open(out, "rb") as f:
            return {"patch": f.read().decode("utf-8", "replace")}
