"""Capture: which files are code, git facts, the environment and its diff, on real folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlvc
from mlvc.capture import capture_env, code_files, env_diff, git_facts
from mlvc.capture.env import is_newer, is_secret_name, normalize_name
from mlvc.capture.files import _IgnoreFile
from mlvc.capture.git import strip_credentials
from mlvc.core.objects import Env, decode, encode, pack

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch, tmp_path_factory):
    """No user or system git config (a global excludesFile would change what git lists)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    # tests that expect no repository must not find one above the temporary folders
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path_factory.getbasetemp()))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        + list(args),
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def make(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


JUNK = {
    ".mlvc/objects/ab/cd": "x",
    ".git/HEAD": "x",
    "pkg/__pycache__/m.cpython-311.pyc": "x",
    "pkg/stray.pyc": "x",
    "nb/.ipynb_checkpoints/a-checkpoint.ipynb": "x",
    ".pytest_cache/v": "x",
    ".mypy_cache/x": "x",
    ".ruff_cache/x": "x",
    ".tox/py/x": "x",
    ".nox/s/x": "x",
    "web/node_modules/left-pad/index.js": "x",
    ".DS_Store": "x",
    "sub/.DS_Store": "x",
    "mlvc_demo.egg-info/PKG-INFO": "x",
    ".hypothesis/examples/x": "x",
    ".venv/pyvenv.cfg": "home = /usr\n",
    ".venv/lib/site.py": "x",
    "venv/pyvenv.cfg": "x",
    "env/pyvenv.cfg": "x",
    "tools/myenv/pyvenv.cfg": "x",
    "tools/myenv/bin/python": "x",
    "condaenv/conda-meta/history": "x",
    "condaenv/lib/x.py": "x",
}


# -- code_files outside git ------------------------------------------------------------------


def test_walk_lists_every_file_sorted_and_relative(tmp_path):
    make(tmp_path, {"train.py": "", "src/model.py": "", "src/util/io.py": "", "w.bin": b"\0"})
    assert code_files(tmp_path) == ["src/model.py", "src/util/io.py", "train.py", "w.bin"]


def test_walk_drops_junk_caches_and_environments(tmp_path):
    make(tmp_path, {**JUNK, "main.py": "", "sub/keep.py": "", "env.py": ""})
    assert code_files(tmp_path) == ["env.py", "main.py", "sub/keep.py"]


def test_walk_applies_nested_gitignores_relative_to_their_folder(tmp_path):
    make(
        tmp_path,
        {
            ".gitignore": "*.log\nbuild/\n/top.txt\n",
            "top.txt": "",
            "a.log": "",
            "build/out.o": "",
            "build.py": "",
            "sub/top.txt": "",  # /top.txt is anchored to the root's folder
            "sub/a.log": "",
            "sub/keep.log": "",
            "sub/.gitignore": "!keep.log\n/local.txt\n*.csv\n",
            "sub/local.txt": "",
            "sub/deep/local.txt": "",  # anchored in sub/, so deeper ones stay
            "sub/deep/x.csv": "",
            "x.csv": "",  # sub's *.csv does not reach up
            "other/build": "",  # a file named build is not the folder pattern build/
        },
    )
    assert code_files(tmp_path) == [
        ".gitignore",
        "build.py",
        "other/build",
        "sub/.gitignore",
        "sub/deep/local.txt",
        "sub/keep.log",
        "sub/top.txt",
        "x.csv",
    ]


def test_walk_ignored_folder_is_pruned_and_cannot_be_reincluded(tmp_path):
    make(tmp_path, {".gitignore": "out/\n!out/keep.txt\n", "out/keep.txt": "", "a.py": ""})
    assert code_files(tmp_path) == [".gitignore", "a.py"]


def test_mlvcignore_removes_files_nested_and_cannot_reinclude_gitignored(tmp_path):
    make(
        tmp_path,
        {
            ".gitignore": "*.tmp\n",
            ".mlvcignore": "notebooks/\n*.md\n!README.md\n!x.tmp\n",
            "README.md": "",
            "NOTES.md": "",
            "x.tmp": "",
            "notebooks/a.ipynb": "",
            "lib/.mlvcignore": "gen_*.py\n",
            "lib/gen_a.py": "",
            "lib/core.py": "",
            "gen_top.py": "",  # lib's rule does not apply above lib/
        },
    )
    assert code_files(tmp_path) == [
        ".gitignore",
        ".mlvcignore",
        "README.md",
        "gen_top.py",
        "lib/.mlvcignore",
        "lib/core.py",
    ]


def test_exclude_drops_paths_at_and_below_them(tmp_path):
    make(
        tmp_path,
        {"a.py": "", "data/x.csv": "", "data/sub/y.csv": "", "out/model.pkl": "", "dataset.py": ""},
    )
    assert code_files(tmp_path, ["./data/", "out/model.pkl"]) == ["a.py", "dataset.py"]
    assert code_files(tmp_path, [str(tmp_path / "data")]) == ["a.py", "dataset.py", "out/model.pkl"]
    assert code_files(tmp_path, ["."]) == []
    assert code_files(tmp_path, ["../elsewhere"]) == code_files(tmp_path)


def test_symlinks_are_listed_not_followed(tmp_path):
    make(tmp_path, {"real/a.py": "", "b.py": ""})
    (tmp_path / "link.py").symlink_to("b.py")
    (tmp_path / "linkdir").symlink_to("real", target_is_directory=True)
    (tmp_path / "dangling").symlink_to("nowhere")
    assert code_files(tmp_path) == ["b.py", "dangling", "link.py", "linkdir", "real/a.py"]


def many_files(root: Path, folders: int, per_folder: int) -> None:
    for i in range(folders):
        folder = root / f"pkg{i}"
        folder.mkdir()
        for j in range(per_folder):
            (folder / f"m{j}.py").touch()
    make(root, {".gitignore": "*.log\nbuild/\n!keep.log\n", ".mlvcignore": "pkg9/\n"})


@pytest.mark.parametrize(
    "folders, per_folder",
    [(20, 100), pytest.param(100, 200, marks=pytest.mark.heavy)],  # 20k files takes 7 s to make
)
def test_walk_is_fast(tmp_path, folders, per_folder):
    many_files(tmp_path, folders, per_folder)
    code_files(tmp_path)  # warm the page cache and imports
    start = time.perf_counter()
    files = code_files(tmp_path, ["pkg1"])
    elapsed = time.perf_counter() - start
    assert len(files) == (folders - 2) * per_folder + 2
    assert elapsed < 0.5, f"code_files took {elapsed:.3f}s for {folders * per_folder} files"


# -- ignore-file matching --------------------------------------------------------------------


def ignore_file(*patterns: str) -> _IgnoreFile:
    from pathspec import GitIgnoreSpec

    return _IgnoreFile("", GitIgnoreSpec.from_lines(patterns).patterns)


@pytest.mark.parametrize(
    "patterns, path, is_dir, decision",
    [
        (["*", "!*/", "!*.py"], "src", True, False),  # the whitelist idiom
        (["*", "!*/", "!*.py"], "src/a.py", False, False),
        (["*", "!*/", "!*.py"], "src/a.txt", False, True),
        (["build/"], "build", False, None),  # a file named build
        (["build/"], "x/build", True, True),
        (["build/"], "build/out.o", False, None),  # inside: the walk pruned build/ already
        (["a/**", "!a/keep"], "a", True, None),  # a/** names what is in a, not a
        (["a/**", "!a/keep"], "a/keep", False, False),
        (["a/**", "!a/keep"], "a/other", False, True),
        (["a/**/"], "a", True, None),
        (["a/**/"], "a/b", True, True),
        (["/top"], "sub/top", False, None),
        (["sub/*.py"], "sub/x.py", False, True),
        (["sub/*.py"], "sub/deep/x.py", False, None),
        (["*.log", "!keep.log"], "d/keep.log", False, False),
        (["# comment", ""], "x", False, None),
    ],
)
def test_ignore_rules_match_paths_exactly(patterns, path, is_dir, decision):
    assert ignore_file(*patterns).decide(path, is_dir) == decision


PATTERNS = st.sampled_from(
    ["*.log", "!keep.log", "build/", "/top", "a/**/b", "*", "!*/", "!*.py", "d?t", "[ab]*", "x/y"]
)
PARTS = st.sampled_from(["a", "b", "x", "y", "top", "build", "dat", "keep.log", "m.py", "z.log"])


@given(st.lists(PATTERNS, max_size=6), st.lists(PARTS, min_size=1, max_size=4))
def test_quick_regex_never_changes_a_decision(patterns, parts):
    fast = ignore_file(*patterns)
    slow = ignore_file(*patterns)
    slow.quick = None
    path = "/".join(parts)
    assert fast.decide(path, False) == slow.decide(path, False)


# -- code_files inside git -------------------------------------------------------------------


@needs_git
def test_git_mode_lists_tracked_and_untracked_not_ignored(tmp_path):
    make(
        tmp_path,
        {
            ".gitignore": "*.log\nsecret/\n",
            "a.py": "",
            "gone.py": "",
            "new.py": "",
            "x.log": "",
            "secret/k": "",
            "forced.log": "",
        },
    )
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".gitignore", "a.py", "gone.py")
    git(tmp_path, "add", "-f", "forced.log")  # tracked though ignored: git lists it
    git(tmp_path, "commit", "-qm", "one")
    (tmp_path / "gone.py").unlink()
    assert code_files(tmp_path) == [".gitignore", "a.py", "forced.log", "new.py"]


@needs_git
def test_git_mode_drops_junk_venvs_mlvcignore_and_excludes(tmp_path):
    junk = {k: v for k, v in JUNK.items() if not k.startswith(".git/")}
    make(tmp_path, {**junk, "main.py": "", "data/d.csv": "", ".mlvcignore": "*.md\n", "R.md": ""})
    make(tmp_path, {"lib/.mlvcignore": "gen/\n", "lib/gen/g.py": "", "lib/ok.py": ""})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-f", "pkg", "tools", "condaenv", "main.py")  # tracked junk goes too
    assert code_files(tmp_path, ["data"]) == [
        ".mlvcignore",
        "lib/.mlvcignore",
        "lib/ok.py",
        "main.py",
    ]


@needs_git
def test_git_mode_from_a_subfolder_is_relative_to_it(tmp_path):
    make(tmp_path, {".gitignore": "*.log\n", "top.py": "", "proj/a.py": "", "proj/b.log": ""})
    git(tmp_path, "init", "-q")
    assert code_files(tmp_path / "proj") == ["a.py"]


@needs_git
def test_git_mode_keeps_symlinks_as_paths(tmp_path):
    make(tmp_path, {"real/a.py": "", "b.py": ""})
    (tmp_path / "link.py").symlink_to("b.py")
    (tmp_path / "linkdir").symlink_to("real", target_is_directory=True)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    assert code_files(tmp_path) == ["b.py", "link.py", "linkdir", "real/a.py"]


@needs_git
def test_git_mode_descends_into_nested_repositories(tmp_path):
    make(tmp_path, {"a.py": "", "inner/b.py": "", "inner/.gitignore": "*.o\n", "inner/c.o": ""})
    git(tmp_path / "inner", "init", "-q")
    git(tmp_path, "init", "-q")
    assert code_files(tmp_path) == ["a.py", "inner/.gitignore", "inner/b.py"]
    assert code_files(tmp_path, ["inner/b.py"]) == ["a.py", "inner/.gitignore"]


@needs_git
def test_project_ignored_by_an_enclosing_repository_falls_back_to_the_walk(tmp_path):
    make(tmp_path, {".gitignore": "/*\n", "proj/a.py": "", "proj/.gitignore": "*.log\n"})
    make(tmp_path, {"proj/b.log": ""})
    git(tmp_path, "init", "-q")
    assert code_files(tmp_path / "proj") == [".gitignore", "a.py"]


@needs_git
def test_without_git_on_path_the_walk_is_used(tmp_path, monkeypatch):
    make(tmp_path, {".gitignore": "*.log\n", "a.py": "", "b.log": ""})
    git(tmp_path, "init", "-q")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert code_files(tmp_path) == [".gitignore", "a.py"]
    assert git_facts(tmp_path) == {}


TREE_FILES = st.sampled_from(
    ["a.py", "a.log", "keep.log", "top", "build/o", "dat", "sub/a.py", "sub/x.log",
     "sub/top", "sub/keep.log", "sub/build/o", "sub/deep/top", "sub/deep/m.py", "bx/y"]
)  # fmt: skip
RULES = st.lists(
    st.sampled_from(
        [
            "*.log",
            "!keep.log",
            "build/",
            "/top",
            "sub/*.py",
            "d?t",
            "deep/",
            "b*/",
            "*",
            "!*/",
            "!*.py",
            "!sub/",
            "!deep/",
            "/deep/*",
            "**/o",
            "!**/top",
            "a/**",
            "!sub/**",
            "sub/**/",
            "!build/o",
            "/*",
            "!/sub",
        ]
    ),  # fmt: skip
    max_size=5,
)


@needs_git
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=st.sets(TREE_FILES, min_size=1), root_rules=RULES, sub_rules=RULES)
def test_walk_agrees_with_git_on_what_gitignore_files_exclude(
    tmp_path_factory, files, root_rules, sub_rules
):
    root = tmp_path_factory.mktemp("agree")
    make(root, {f: "" for f in files})
    make(root, {".gitignore": "\n".join(root_rules) + "\n"})
    if (root / "sub").is_dir():
        make(root, {"sub/.gitignore": "\n".join(sub_rules) + "\n"})
    walked = code_files(root)
    git(root, "init", "-q")
    assert code_files(root) == walked


# -- git facts -------------------------------------------------------------------------------


def test_git_facts_outside_a_repository_is_empty(tmp_path):
    assert git_facts(tmp_path) == {}


@needs_git
def test_git_facts_before_the_first_commit(tmp_path):
    git(tmp_path, "init", "-q")
    facts = git_facts(tmp_path)
    assert facts == {"commit": "", "branch": "main", "dirty": False, "patch": "", "remote": ""}
    make(tmp_path, {"a.py": "print(1)\n"})
    git(tmp_path, "add", "a.py")
    facts = git_facts(tmp_path)
    assert facts["dirty"] and "+print(1)" in facts["patch"]


@needs_git
def test_git_facts_clean_dirty_and_the_patch_applies(tmp_path):
    make(tmp_path, {"a.py": "x = 1\n", "w.bin": bytes(range(256)), "notes.txt": "n\n"})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert git_facts(tmp_path) == {
        "commit": head,
        "branch": "main",
        "dirty": False,
        "patch": "",
        "remote": "",
    }
    make(tmp_path, {"untracked.py": ""})
    assert git_facts(tmp_path)["dirty"] is False  # untracked files live in the code tree

    make(tmp_path, {"a.py": "x = 2\n", "w.bin": bytes(range(255, -1, -1))})
    (tmp_path / "notes.txt").unlink()
    facts = git_facts(tmp_path)
    assert facts["dirty"] is True and facts["commit"] == head
    assert "GIT binary patch" in facts["patch"]

    # the patch on top of the commit gives back the dirty tree
    want = {p: (tmp_path / p).read_bytes() for p in ("a.py", "w.bin")}
    git(tmp_path, "reset", "-q", "--hard")
    (tmp_path / "p.diff").write_text(facts["patch"])
    git(tmp_path, "apply", "--binary", "p.diff")
    assert {p: (tmp_path / p).read_bytes() for p in want} == want
    assert not (tmp_path / "notes.txt").exists()


@needs_git
def test_git_facts_detached_head_and_stripped_remote(tmp_path):
    make(tmp_path, {"a.py": ""})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    git(tmp_path, "remote", "add", "origin", "https://bob:hunter2@example.com/team/repo.git")
    git(tmp_path, "checkout", "-q", "--detach")
    facts = git_facts(tmp_path)
    assert facts["branch"] == ""
    assert facts["remote"] == "https://example.com/team/repo.git"
    assert "hunter2" not in repr(facts)


@needs_git
def test_git_facts_ignore_a_git_dir_set_by_a_hook(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert git_facts(proj) == {}


@pytest.mark.parametrize(
    "url, clean",
    [
        ("https://user:pw@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_token123@github.com/o/r.git", "https://github.com/o/r.git"),
        ("http://u:p@host:8080/r", "http://host:8080/r"),
        ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"),
        ("ssh://git:pw@github.com/o/r.git", "ssh://git@github.com/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
    ],
)
def test_strip_credentials(url, clean):
    assert strip_credentials(url) == clean


# -- environment -----------------------------------------------------------------------------

PLAIN = (str, int, float, bool, type(None))


def only_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and only_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(only_plain(v) for v in value)
    return isinstance(value, PLAIN)


def test_capture_env_is_deterministic_plain_and_encodable(tmp_path):
    make(tmp_path, {"requirements.txt": "numpy==2.0\n"})
    first, second = capture_env(tmp_path), capture_env(tmp_path)
    assert first == second
    assert pack(first) == pack(second)
    assert only_plain(first)
    assert decode(encode(Env(first))).facts == first
    assert set(first) >= {"python", "platform", "packages", "package_sources", "requirements"}
    assert set(first) >= {"variables", "hardware", "mlvc"}


def test_capture_env_facts(tmp_path):
    env = capture_env(tmp_path)
    assert env["python"]["executable"] == sys.executable
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["python"]["is_venv"] == (sys.prefix != sys.base_prefix)
    assert env["packages"]["pytest"] == pytest.__version__
    assert all(name == normalize_name(name) for name in env["packages"])
    assert env["mlvc"] == mlvc.__version__
    assert env["hardware"]["cpu_count"] == os.cpu_count()
    assert isinstance(env["hardware"]["gpu"], list)


def test_capture_env_is_fast(tmp_path):
    capture_env(tmp_path)
    start = time.perf_counter()
    capture_env(tmp_path)
    assert time.perf_counter() - start < 0.25


def test_packages_sources_and_torch_cuda_from_site_folders(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    make(
        first,
        {
            "My_Pkg.Name-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: My_Pkg.Name\n"
            "Version: 1.0\n\nName: not-this\n",
            "My_Pkg.Name-1.0.dist-info/INSTALLER": "pip\n",
            "My_Pkg.Name-1.0.dist-info/direct_url.json": '{"url": "https://tok@example.com/'
            'r.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}',
            "edit-0.1.dist-info/METADATA": "Name: edit\nVersion: 0.1\n",
            "edit-0.1.dist-info/direct_url.json": '{"url": "file:///src/edit", '
            '"dir_info": {"editable": true}}',
            "torch-2.1.0.dist-info/METADATA": "Name: torch\nVersion: 2.1.0+cu121\n",
            "torch/__init__.py": "raise ImportError('capture must never import torch')\n",
            "torch/version.py": "__version__ = '2.1.0+cu121'\ncuda: Optional[str] = '12.1'\n",
            "legacy.egg-info": "Metadata-Version: 1.0\nName: legacy\nVersion: 3\n",
        },
    )
    make(second, {"my_pkg_name-9.9.dist-info/METADATA": "Name: my-pkg-name\nVersion: 9.9\n"})
    monkeypatch.setattr(sys, "path", [str(first), str(second), *sys.path])
    env = capture_env(tmp_path)
    assert env["packages"]["my-pkg-name"] == "1.0"  # the first on sys.path wins, as for imports
    assert env["packages"]["legacy"] == "3"
    assert env["packages"]["torch"] == "2.1.0+cu121"
    assert env["package_sources"]["my-pkg-name"] == {
        "installer": "pip",
        "url": "https://example.com/r.git",
        "editable": False,
        "vcs": "git",
        "commit": "abc123",
    }
    assert env["package_sources"]["edit"]["editable"] is True
    assert env["installers"]["my-pkg-name"] == "pip"
    assert env["installers"]["edit"] == ""  # no INSTALLER file
    assert "torch" not in env["package_sources"]
    assert env["hardware"]["cuda"] == "12.1"
    assert "torch" not in sys.modules


@pytest.mark.parametrize(
    "raw, name",
    [("Foo_Bar", "foo-bar"), ("zope.interface", "zope-interface"), ("A--_.b", "a-b")],
)
def test_normalize_name(raw, name):
    assert normalize_name(raw) == name


def test_requirement_files_at_the_root(tmp_path, monkeypatch):
    monkeypatch.setattr("mlvc.capture.env.MAX_REQUIREMENT_BYTES", 100)
    make(
        tmp_path,
        {
            "requirements.txt": "numpy==2.0\n",
            "requirements-dev.txt": "pytest\n",
            "pyproject.toml": "[project]\nname='x'\n",
            "uv.lock": "x" * 101,
            "environment.yml": "name: x\n",
            "sub/requirements.txt": "nope\n",
            "notes.txt": "nope\n",
        },
    )
    env = capture_env(tmp_path)
    assert env["requirements"] == {
        "environment.yml": "name: x\n",
        "pyproject.toml": "[project]\nname='x'\n",
        "requirements-dev.txt": "pytest\n",
        "requirements.txt": "numpy==2.0\n",
    }
    assert list(env["requirements_skipped"]) == ["uv.lock"]
    assert "101 bytes" in env["requirements_skipped"]["uv.lock"]


def test_variables_defaults_patterns_and_never_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("MYAPP_MODE", "fast")
    monkeypatch.setenv("MYAPP_DB", "postgres://admin:pw123@db:5432/x")
    for secret in ("MYAPP_API_KEY", "MYAPP_TOKEN", "MYAPP_PASSWORD", "GITHUB_TOKEN"):
        monkeypatch.setenv(secret, "s3cr3t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    asked = ["MYAPP_*", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "UNSET_THING"]
    variables = capture_env(tmp_path, asked)["variables"]
    assert variables["OMP_NUM_THREADS"] == "4"
    assert variables["MYAPP_MODE"] == "fast"
    assert variables["MYAPP_DB"] == "postgres://db:5432/x"
    assert "PYTHONHASHSEED" not in variables and "UNSET_THING" not in variables
    assert "s3cr3t" not in repr(variables) and "pw123" not in repr(variables)
    assert list(variables) == sorted(variables)


SECRETISH = st.sampled_from(
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "API_KEY", "CREDENTIAL", "AUTH", "APIKEY"]
)
WORDS = st.sampled_from(["MY", "APP", "AWS", "access", "db", "HF", "x1", "OPENAI"])


@given(st.lists(WORDS, max_size=3), SECRETISH, st.lists(WORDS, max_size=3), st.booleans())
def test_names_with_secret_words_are_always_secret(before, word, after, lower):
    name = "_".join([*before, word, *after])
    assert is_secret_name(name.lower() if lower else name)


@pytest.mark.parametrize("name", ["OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "LANG", "TZ"])
def test_default_variables_are_not_secret(name):
    assert not is_secret_name(name)


# -- env_diff --------------------------------------------------------------------------------


def env(**overrides) -> dict:
    base = {
        "python": {"version": "3.11.7", "implementation": "CPython"},
        "platform": {"system": "Linux", "release": "6.1", "machine": "x86_64"},
        "packages": {"numpy": "1.26.4", "torch": "2.1.0", "six": "1.16.0", "rc": "2.0"},
        "package_sources": {},
        "requirements": {"requirements.txt": "numpy\n"},
        "requirements_skipped": {},
        "variables": {"OMP_NUM_THREADS": "4"},
        "hardware": {"cpu": "EPYC", "cpu_count": 2, "gpu": [], "cuda": None},
        "mlvc": "0.1.0",
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def all_empty(diff: dict) -> bool:
    """Nothing changed: every section empty or None, and packages' buckets all empty."""
    packages = diff.pop("packages")
    return not any(diff.values()) and not any(packages.values())


def test_env_diff_of_an_env_with_itself_is_empty(tmp_path):
    real = capture_env(tmp_path)
    assert all_empty(env_diff(real, real))
    assert all_empty(env_diff(env(), env()))
    assert all_empty(env_diff({}, {}))


def test_env_diff_packages():
    old = env()
    new = env(packages={"numpy": "2.0.0", "torch": "1.13.1", "rc": "2.0rc1"})
    del new["packages"]["six"]
    new["packages"]["pandas"] = "2.2.0"
    diff = env_diff(old, new)
    assert diff["packages"] == {
        "added": {"pandas": "2.2.0"},
        "removed": {"six": "1.16.0"},
        "upgraded": {"numpy": ["1.26.4", "2.0.0"]},
        "downgraded": {"rc": ["2.0", "2.0rc1"], "torch": ["2.1.0", "1.13.1"]},
        "sources": {},
        "installers": {},
    }
    assert diff["python"] is None and diff["platform"] == {} and diff["variables"] == {}


def test_env_diff_other_sections():
    new = env(
        python={"version": "3.12.1"},
        platform={"release": "6.5"},
        requirements={"requirements.txt": "numpy>=2\n", "uv.lock": "x"},
        variables={"OMP_NUM_THREADS": "8", "TZ": "UTC"},
        hardware={"cuda": "12.1"},
        package_sources={"torch": {"url": "file:///x", "editable": True}},
        mlvc="0.2.0",
    )
    diff = env_diff(env(), new)
    assert diff["python"]["old"]["version"] == "3.11.7"
    assert diff["python"]["new"]["version"] == "3.12.1"
    assert diff["platform"] == {"release": ["6.1", "6.5"]}
    assert diff["requirements"] == ["requirements.txt", "uv.lock"]
    assert diff["variables"] == {"OMP_NUM_THREADS": ["4", "8"], "TZ": [None, "UTC"]}
    assert diff["hardware"] == {"cuda": [None, "12.1"]}
    assert diff["packages"]["sources"] == {"torch": [None, {"url": "file:///x", "editable": True}]}
    assert diff["mlvc"] == {"old": "0.1.0", "new": "0.2.0"}


VERSIONS = st.sampled_from(
    ["1.0", "1.0.0", "1.9", "1.10", "2.0rc1", "2.0", "2.0.post1", "2.1.0+cu121", "0.9.dev3", "x"]
)


@given(
    st.dictionaries(st.sampled_from("abcdef"), VERSIONS),
    st.dictionaries(st.sampled_from("abcdef"), VERSIONS),
)
def test_env_diff_is_antisymmetric(old, new):
    a, b = env(packages=None), env(packages=None)
    a["packages"], b["packages"] = old, new
    forth, back = env_diff(a, b)["packages"], env_diff(b, a)["packages"]
    assert forth["added"] == back["removed"] and forth["removed"] == back["added"]
    assert forth["upgraded"] == {k: v[::-1] for k, v in back["downgraded"].items()}
    assert all_empty(env_diff(a, a))


@pytest.mark.parametrize(
    "old, new",
    [
        ("1.9", "1.10"),
        ("2.0rc1", "2.0"),
        ("2.0", "2.0.post1"),
        ("0.9.dev3", "0.9"),
        ("1.0", "1.0.0"),
    ],
)
def test_is_newer_follows_pep_440(old, new):
    assert is_newer(new, old) and not is_newer(old, new)


def test_is_newer_without_packaging_compares_numbers(monkeypatch):
    monkeypatch.setitem(sys.modules, "packaging.version", None)
    assert is_newer("1.10", "1.9") and not is_newer("1.9", "1.10")
    assert is_newer("1.0.0", "1.0")
