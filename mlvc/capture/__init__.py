"""Capture: what a run used, read from the machine before and after it runs.

Terms:
    code files   the project's source: what git tracks plus untracked files it does not
                 ignore, or, outside git, every file no ``.gitignore`` excludes; never
                 caches, virtualenvs, ``.git``/``.mlvc``, files excluded by ``.mlvcignore``,
                 nor the run's data and artifact paths (``code_files``).
    git facts    the commit, branch, dirty patch and remote of the enclosing git work tree,
                 ``{}`` outside one (``git_facts``).
    environment  interpreter, platform, installed distributions, requirement and lock files,
                 selected environment variables (never secrets) and CPU/GPU facts: a
                 deterministic plain dict that becomes an ``Env`` object (``capture_env``);
                 ``env_diff`` says what changed between two.

Capture only reads; storing what it finds is the caller's job (``mlvc.workspace.trees.build_tree``,
``mlvc.core.objects.Env``).
"""

from .env import capture_env, env_diff
from .files import code_files
from .git import git_facts

__all__ = ["capture_env", "code_files", "env_diff", "git_facts"]
