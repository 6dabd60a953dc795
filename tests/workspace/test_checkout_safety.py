"""Checkout and commit refuse what they cannot do safely, in one line, before touching anything.

Issue 9: unreadable folders and files (8c, 21), links that leave the project (8d, 9), reserved
names (10), symbolic refs (11), ``checkout --only`` and HEAD (14), deep trees and odd targets
(21), the store committed into itself (13a).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.core.objects import FORMAT_VERSION, DecodeError, Run, Tree, TreeEntry, decode, encode
from mlvc.errors import MlvcError, UnsafePath, UsageError

# -- helpers ---------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env.update(MLVC_INDEX_SYNC="inline", GIT_CONFIG_NOSYSTEM="1", MLVC_AUTHOR="T <t@e.x>")
    return env


@pytest.fixture
def shared_project(tmp_path):
    """A project whose permissions the tests change (and restore before cleanup)."""
    root = tmp_path / "proj"
    (root / "data" / "secret").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "train.py").write_text("print(1)\n")
    (root / "src" / "m.py").write_text("x = 1\n")
    (root / "data" / "a.csv").write_text("a\n1\n")
    (root / "data" / "secret" / "b.csv").write_text("b\n2\n")
    Repo.init(root)
    yield root
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)


_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _drop_root_override() -> None:
    """In the child: give up root's right to ignore file permissions (the tests' subject)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_unprivileged(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``mlvc ARGS`` in a subprocess that file permissions bind, even when tests run as root."""
    kw = {"preexec_fn": _drop_root_override} if os.geteuid() == 0 else {}
    try:
        return subprocess.run(
            [sys.executable, "-m", "mlvc", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
            **kw,
        )
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot drop root's permission override here: {e}")


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def raw_tree(repo: Repo, entries) -> ObjectId:
    """A tree object built from raw (name, kind, id, size) rows, bypassing every check."""
    body = [[n, k, bytes(i), s] for n, k, i, s in sorted(entries, key=lambda e: e[0])]
    return repo.store.add_bytes(msgpack.packb(["tree", FORMAT_VERSION, body], use_bin_type=True))


def blob(repo: Repo, data: bytes | str) -> tuple[ObjectId, int]:
    data = data.encode() if isinstance(data, str) else data
    return repo.store.add_bytes(data), len(data)


def crafted_run(repo: Repo, code=None, data=None, tag: str = "evil") -> ObjectId:
    """Record a run over hand-made trees and tag it, as a pulled run could arrive."""
    rid = repo.store.add_bytes(encode(Run(code=code, data=data, message="crafted")))
    repo.store.sync()
    repo.refs.add_run(rid)
    repo.refs.write(f"refs/tags/{tag}", rid, "test")
    return rid


def listing(folder: Path) -> dict[str, str]:
    """Every path below folder (links not followed, .mlvc left out) with its content/target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) == folder and ".mlvc" in dirnames:
            dirnames.remove(".mlvc")
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes().decode(errors="replace")
    return out


# -- 8c / 21: unreadable folders and files -------------------------------------------------


def test_commit_refuses_unlistable_data_folder(shared_project):
    os.chmod(shared_project / "data" / "secret", 0o000)
    r = run_unprivileged(shared_project, "commit", "-m", "x", "--data", "data")
    line = one_line_error(r)
    assert "data/secret" in line and "permission" in line.lower()
    assert os.listdir(shared_project / ".mlvc" / "refs" / "runs") == []


def test_commit_refuses_unlistable_code_folder(shared_project):
    os.chmod(shared_project / "src", 0o000)
    r = run_unprivileged(shared_project, "commit", "-m", "x")
    assert "src" in one_line_error(r)
    assert os.listdir(shared_project / ".mlvc" / "refs" / "runs") == []


def test_commit_refuses_unlistable_code_folder_in_git(shared_project):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(shared_project)], check=True)
    os.chmod(shared_project / "src", 0o000)
    r = run_unprivileged(shared_project, "commit", "-m", "x")
    assert "src" in one_line_error(r)
    assert os.listdir(shared_project / ".mlvc" / "refs" / "runs") == []


def test_commit_refuses_unreadable_file_naming_it(shared_project):
    os.chmod(shared_project / "data" / "a.csv", 0o000)
    r = run_unprivileged(shared_project, "commit", "-m", "x", "--data", "data")
    line = one_line_error(r)
    assert "data/a.csv" in line
    os.chmod(shared_project / "data" / "a.csv", 0o644)


def test_status_refuses_unlistable_folder(shared_project):
    assert run_unprivileged(shared_project, "commit", "-m", "x", "--data", "data").returncode == 0
    os.chmod(shared_project / "data" / "secret", 0o000)
    r = run_unprivileged(shared_project, "status")
    assert "data/secret" in one_line_error(r)


# -- 8d: links that leave the project are refused at commit --------------------------------


LEAVING = {
    "absolute": "/etc",
    "parent": "../../outside",
    "lexical": "sub/../../../outside",
    # sub/deeper/up -> ../../.. is the project root, so sub/deeper/up/.. is its parent, though
    # the lexical reading (data/sub/deeper) stays inside: the filesystem's answer counts
    "through-link": "sub/deeper/up/..",
}


@pytest.mark.parametrize("case", sorted(LEAVING))
def test_commit_refuses_symlink_leaving_project(project, cli, case):
    (project / "data" / "sub" / "deeper").mkdir(parents=True)
    os.symlink("../../..", project / "data" / "sub" / "deeper" / "up")
    os.symlink(LEAVING[case], project / "data" / "x")
    r = cli("commit", "-m", "x", "--data", "data", ok=False)
    assert r.exit_code == UnsafePath.exit_code, r.output
    assert "data/x" in r.output and "outside" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert Repo(project).head() is None


def test_commit_keeps_links_inside_and_checkout_restores_them(project, cli, tmp_path):
    (project / "data" / "sub").mkdir()
    os.symlink("train.csv", project / "data" / "latest")
    os.symlink("sub", project / "data" / "dirlink")
    os.symlink("../data/test.csv", project / "data" / "sub" / "t")
    os.symlink("dirlink/t", project / "data" / "via")
    os.symlink("missing", project / "data" / "dangling")
    cli("commit", "-m", "x", "--data", "data")
    out = tmp_path / "out"
    cli("checkout", "HEAD", "--to", str(out))
    assert listing(out / "data") == listing(project / "data")


# -- 8d / 9: checkout validates everything before writing ----------------------------------


def test_refused_checkout_leaves_target_unchanged(repo, project, tmp_path):
    a = blob(repo, "a\n")
    evil = blob(repo, "/etc")
    tree = raw_tree(repo, [("a.txt", "file", a[0], a[1]), ("zz", "symlink", evil[0], evil[1])])
    crafted_run(repo, code=tree)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine\n")
    with pytest.raises(UnsafePath, match="zz"):
        repo.checkout("evil", to=out)
    assert listing(out) == {"keep": "mine\n"}
    before = listing(project)
    with pytest.raises(UnsafePath, match="zz"):
        repo.checkout("evil", force=True)
    assert listing(project) == before


@pytest.mark.parametrize("in_place", [False, True], ids=["to", "in-place"])
def test_symlink_chain_escape_refused(repo, project, tmp_path, in_place):
    # d/e/l -> ../.. is the root (lexically and really); esc -> d/e/l/.. is lexically d/e,
    # but really the parent of the root: outside
    up = blob(repo, "../..")
    esc = blob(repo, "d/e/l/..")
    e = raw_tree(repo, [("l", "symlink", up[0], up[1])])
    d = raw_tree(repo, [("e", "dir", e, 0)])
    tree = raw_tree(repo, [("d", "dir", d, 0), ("esc", "symlink", esc[0], esc[1])])
    crafted_run(repo, code=tree)
    target = project if in_place else tmp_path / "out"
    target.mkdir(exist_ok=True)
    before = listing(target)
    with pytest.raises(UnsafePath, match="esc"):
        repo.checkout("evil", to=None if in_place else target, force=True)
    assert listing(target) == before


def test_symlink_through_existing_link_in_target_refused(repo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("/", out / "root")
    link = blob(repo, "root/etc")
    crafted_run(repo, code=raw_tree(repo, [("x", "symlink", link[0], link[1])]))
    with pytest.raises(UnsafePath, match="x"):
        repo.checkout("evil", to=out)
    assert listing(out) == {"root": "-> /"}


def test_write_through_linked_folder_refused_before_writing(repo, tmp_path):
    a = blob(repo, "a\n")
    sub = raw_tree(repo, [("f", "file", a[0], a[1])])
    tree = raw_tree(repo, [("a", "file", a[0], a[1]), ("sub", "dir", sub, 2)])
    crafted_run(repo, code=tree)
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    os.symlink(tmp_path / "elsewhere", out / "sub")
    with pytest.raises(UnsafePath, match="sub"):
        repo.checkout("evil", to=out)
    assert listing(out) == {"sub": f"-> {tmp_path / 'elsewhere'}"}
    assert os.listdir(tmp_path / "elsewhere") == []


def test_file_and_folder_at_same_path_refused_before_writing(repo, tmp_path):
    a = blob(repo, "a\n")
    code = raw_tree(repo, [("a", "file", a[0], a[1]), ("data", "file", a[0], a[1])])
    data = raw_tree(repo, [("data", "dir", raw_tree(repo, [("x", "file", a[0], a[1])]), 2)])
    crafted_run(repo, code=code, data=data)
    out = tmp_path / "out"
    with pytest.raises(UnsafePath, match="data"):
        repo.checkout("evil", to=out)
    assert not out.exists() or listing(out) == {}


def test_folder_in_the_way_of_a_file_refused_before_writing(repo, tmp_path):
    a = blob(repo, "a\n")
    crafted_run(repo, code=raw_tree(repo, [("a", "file", a[0], a[1]), ("b", "file", a[0], 2)]))
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b" / "mine").write_text("mine\n")
    with pytest.raises(MlvcError, match="folder"):
        repo.checkout("evil", to=out)
    assert listing(out) == {"b": "dir", "b/mine": "mine\n"}


@pytest.mark.damages_repo
def test_missing_object_refused_before_writing(repo, tmp_path):
    a = blob(repo, "a\n")
    gone = ObjectId.of(b"never stored")
    crafted_run(repo, code=raw_tree(repo, [("a", "file", a[0], a[1]), ("b", "file", gone, 5)]))
    out = tmp_path / "out"
    with pytest.raises(MlvcError, match="missing"):
        repo.checkout("evil", to=out)
    assert not out.exists() or listing(out) == {}


# -- 10: reserved names ----------------------------------------------------------------------

RESERVED = [".git", ".GIT", ".Git", ".mlvc", ".MLVC", ".git.", ".git ", ".git. .", "git~1"]
RESERVED += ["MLVC~1", ".git::$INDEX_ALLOCATION", "\u200c.git", ".g\u200dit", ".mlvc\ufeff"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_refused_in_decode(name):
    a = ObjectId.of(b"x")
    raw = msgpack.packb(["tree", FORMAT_VERSION, [[name, "dir", bytes(a), 0]]], use_bin_type=True)
    with pytest.raises(DecodeError, match="reserved"):
        decode(raw)
    with pytest.raises(DecodeError):
        TreeEntry(name, "file", a, 0)


@pytest.mark.parametrize("name", ["git", ".gitignore", ".github", ".mlvcignore", "a.git", "x:y"])
def test_ordinary_names_near_reserved_ones_are_fine(name):
    e = TreeEntry(name, "file", ObjectId.of(b"x"), 0)
    assert decode(encode(Tree((e,)))) == Tree((e,))


@pytest.mark.damages_repo
@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("name", [".git", ".Mlvc"])
def test_checkout_refuses_reserved_name_at_any_depth(repo, project, tmp_path, name, depth):
    hook = blob(repo, "#!/bin/sh\necho pwned\n")
    tree = raw_tree(repo, [("post-checkout", "exec", hook[0], hook[1])])
    tree = raw_tree(repo, [("hooks", "dir", tree, 0)])
    tree = raw_tree(repo, [(name, "dir", tree, 0)])
    for i in range(depth):
        tree = raw_tree(repo, [(f"d{i}", "dir", tree, 0)])
    crafted_run(repo, code=tree)
    before = listing(project)
    with pytest.raises(MlvcError, match="reserved|corrupt"):
        repo.checkout("evil", force=True)
    assert listing(project) == before
    with pytest.raises(MlvcError):
        repo.checkout("evil", to=tmp_path / "out")
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == {}


def test_commit_skips_case_variants_of_git_in_data(repo, project):
    for name in (".GIT", ".Git", ".mlvc"):
        (project / "data" / "nested" / name).mkdir(parents=True)
        (project / "data" / "nested" / name / "config").write_text("x\n")
    oid = repo.commit("x", data=["data"])
    assert repo.show(oid)["data"]["files"] == 2  # train.csv and test.csv only


# -- 13a: the store (or git's) committed into itself -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--data", ".mlvc"),
        ("--data", ".mlvc/refs"),
        ("--artifacts", ".mlvc/config"),
        ("--data", ".git"),
        ("--data", "sub/.git/config"),
        ("--params", ".mlvc/config.json"),
        ("--metrics", ".mlvc/m.json"),
    ],
)
def test_commit_refuses_store_paths(project, cli, args):
    (project / ".git").mkdir()
    (project / "sub" / ".git").mkdir(parents=True)
    (project / "sub" / ".git" / "config").write_text("[core]\n")
    (project / ".mlvc" / "config.json").write_text('{"a": 1}')
    (project / ".mlvc" / "m.json").write_text('{"a": 1}')
    r = cli("commit", "-m", "x", *args, ok=False)
    assert r.exit_code == UsageError.exit_code, r.output
    assert ".mlvc" in r.output or ".git" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert Repo(project).head() is None


# -- 11: symbolic refs stay under refs/ ------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["../config", "/etc/passwd", "refs/../config", "config", "refs//x", "refs/./x"]
)
@pytest.mark.damages_repo
def test_symbolic_ref_outside_refs_refused(repo, project, target):
    (project / ".mlvc" / "config").write_text("SECRET-CONTENT-123\n")
    ref = project / ".mlvc" / "refs" / "tags" / "bad"
    ref.write_text(f"ref: {target}\n")
    with pytest.raises(MlvcError) as e:
        repo.refs.read("refs/tags/bad")
    assert "SECRET" not in str(e.value) and "root:" not in str(e.value)
    assert "refs/tags/bad" in str(e.value)


def test_symbolic_ref_inside_refs_is_followed(repo):
    oid = repo.commit("x")
    repo.refs.write("refs/tags/alias", None, "t", symbolic="refs/tags/real")
    repo.refs.write("refs/tags/real", oid, "t")
    assert repo.refs.read("refs/tags/alias") == oid
    with pytest.raises(MlvcError):
        repo.refs.write("refs/tags/alias2", None, "t", symbolic="../config")


# -- 14: --only leaves HEAD alone ------------------------------------------------------------


def test_checkout_only_leaves_head_alone(repo, project, cli):
    old = repo.commit("old", data=["data"])
    (project / "data" / "train.csv").write_text("x,y\n9,9\n")
    (project / "train.py").write_text("print('new')\n")
    new = repo.commit("new", data=["data"])
    cli("checkout", old.hex, "--only", "data")
    assert repo.head() == new
    assert (project / "data" / "train.csv").read_text() == "x,y\n1,2\n2,4\n"
    assert (project / "train.py").read_text() == "print('new')\n"
    st = repo.status()
    assert st["data"]["modified"] == ["data/train.csv"]
    assert st["code"] == {"added": [], "removed": [], "modified": []}
    # the data came from a recorded run: a plain checkout may replace it without --force
    cli("checkout", "HEAD")
    assert (project / "data" / "train.csv").read_text() == "x,y\n9,9\n"
    assert repo.status()["data"]["modified"] == []


def test_checkout_only_then_checkout_of_another_run(repo, project, cli):
    old = repo.commit("old", data=["data"])
    (project / "data" / "extra.csv").write_text("e\n")
    (project / "data" / "train.csv").write_text("x,y\n9,9\n")
    mid = repo.commit("mid", data=["data"])
    (project / "train.py").write_text("print('new')\n")
    repo.commit("new", data=["data"])
    cli("checkout", old.hex, "--only", "data")
    assert not (project / "data" / "extra.csv").exists()
    cli("checkout", mid.hex)
    assert repo.head() == mid
    assert (project / "data" / "extra.csv").read_text() == "e\n"
    assert (project / "train.py").read_text() == "print('training')\n"
    assert repo.status()["data"] == {"added": [], "removed": [], "modified": []}


def test_checkout_only_still_protects_edits(repo, project, cli):
    old = repo.commit("old", data=["data"])
    (project / "data" / "train.csv").write_text("x,y\n9,9\n")
    repo.commit("new", data=["data"])
    cli("checkout", old.hex, "--only", "data")
    (project / "data" / "train.csv").write_text("my edit\n")
    r = cli("checkout", "HEAD", ok=False)
    assert r.exit_code == 6 and "data/train.csv" in r.output
    assert (project / "data" / "train.csv").read_text() == "my edit\n"


# -- 21: deep trees, odd targets -------------------------------------------------------------


def make_deep(base: Path, depth: int) -> Path:
    """base/d/d/.../d, made one level at a time (pathlib and os.makedirs recurse)."""
    path = base
    for _ in range(depth):
        path = path / "d"
        path.mkdir()
    return path


def remove_deep(folder: Path) -> None:
    """Remove a folder too deep for shutil.rmtree's recursion (Python 3.11)."""
    stack = [os.fspath(folder)]
    while stack:
        top = stack[-1]
        subdirs = [e.path for e in os.scandir(top) if e.is_dir(follow_symlinks=False)]
        if subdirs:
            stack.extend(subdirs)
            continue
        for e in os.scandir(top):
            os.unlink(e.path)
        os.rmdir(top)
        stack.pop()


def test_deep_tree_commit_checkout_fsck(repo, project, tmp_path):
    (project / "data" / "deep").mkdir()
    path = make_deep(project / "data" / "deep", 1100)
    (path / "leaf.txt").write_text("leaf\n")
    out = tmp_path / "out"
    try:
        oid = repo.commit("deep", data=["data/deep"])
        assert repo.fsck() == []
        assert repo.show(oid)["data"]["files"] == 1
        assert repo.diff(oid.hex, oid.hex).is_empty()
        assert repo.du([oid.hex])
        assert repo.status()["data"] == {"added": [], "removed": [], "modified": []}
        repo.checkout(oid.hex, to=out, only="data")
        assert (out / path.relative_to(project) / "leaf.txt").read_text() == "leaf\n"
    finally:
        remove_deep(project / "data" / "deep")
        if out.exists():
            remove_deep(out)


def test_hostile_very_deep_tree_is_refused_in_one_line(repo, tmp_path):
    a = blob(repo, "a\n")
    tree = raw_tree(repo, [("f", "file", a[0], a[1])])
    for _ in range(5000):
        tree = raw_tree(repo, [("d", "dir", tree, 0)])
    rid = crafted_run(repo, code=tree)
    assert repo.fsck() == []
    assert repo.show(rid)["code"]["files"] == 1
    with pytest.raises(MlvcError, match="too long"):
        repo.checkout("evil", to=tmp_path / "out")
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == {}


def test_checkout_to_below_a_file_is_one_line(project, cli):
    cli("commit", "-m", "x")
    r = cli("checkout", "HEAD", "--to", "train.py/sub", ok=False)
    assert r.exit_code == UsageError.exit_code, r.output
    assert "train.py" in r.output and len(r.output.strip().splitlines()) == 1


# -- folders and files trading places; link-cache checkouts ---------------------------------


def test_in_place_checkout_where_a_file_becomes_a_folder_and_back(repo, project, cli):
    (project / "model").write_text("v1\n")
    one = repo.commit("file", artifacts=["model"])
    os.unlink(project / "model")
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_text("v2\n")
    two = repo.commit("folder", artifacts=["model"])
    cli("checkout", one.hex)
    assert (project / "model").read_text() == "v1\n"
    cli("checkout", two.hex)
    assert (project / "model" / "w.bin").read_text() == "v2\n"
    assert repo.status()["artifacts"] == {"added": [], "removed": [], "modified": []}


def test_file_in_the_way_of_a_folder_needs_force(repo, project, tmp_path):
    a = blob(repo, "a\n")
    sub = raw_tree(repo, [("f", "file", a[0], a[1])])
    crafted_run(repo, code=raw_tree(repo, [("a", "file", a[0], a[1]), ("sub", "dir", sub, 2)]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("mine\n")
    with pytest.raises(MlvcError, match="sub"):
        repo.checkout("evil", to=out)
    assert listing(out) == {"sub": "mine\n"}
    repo.checkout("evil", to=out, force=True)
    assert listing(out) == {"a": "a\n", "sub": "dir", "sub/f": "a\n"}


def test_force_replaces_a_linked_folder_never_what_it_points_to(repo, tmp_path):
    a = blob(repo, "a\n")
    sub = raw_tree(repo, [("f", "file", a[0], a[1])])
    crafted_run(repo, code=raw_tree(repo, [("sub", "dir", sub, 2)]))
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "f").write_text("keep me\n")
    os.symlink(elsewhere, out / "sub")
    repo.checkout("evil", to=out, force=True)
    assert listing(out) == {"sub": "dir", "sub/f": "a\n"}
    assert (elsewhere / "f").read_text() == "keep me\n"


def test_commit_after_symlink_checkout_records_the_files(repo, project, tmp_path):
    one = repo.commit("x", data=["data"])
    os.unlink(project / "data" / "train.csv")
    repo.checkout(one.hex, link="symlink", force=True)
    assert (project / "data" / "train.csv").is_symlink()
    two = repo.commit("y", data=["data"])
    kinds = {e["path"]: e["kind"] for e in repo.show(two)["data"]["entries"]}
    assert kinds == {"data/test.csv": "file", "data/train.csv": "file"}
    assert repo.run(two.hex).data == repo.run(one.hex).data
    repo.checkout(two.hex, to=tmp_path / "out")
    assert (tmp_path / "out" / "data" / "train.csv").read_text() == "x,y\n1,2\n2,4\n"


def test_model_tree_with_escaping_link_is_refused(repo, project):
    from mlvc.models.loading import materialize_tree

    up = blob(repo, "../..")
    esc = blob(repo, "d/e/l/..")
    e = raw_tree(repo, [("l", "symlink", up[0], up[1])])
    d = raw_tree(repo, [("e", "dir", e, 0)])
    tree = raw_tree(repo, [("d", "dir", d, 0), ("esc", "symlink", esc[0], esc[1])])
    with pytest.raises(UnsafePath, match="esc"):
        materialize_tree(repo, tree)
    assert not (project / ".mlvc" / "cache" / "models" / tree.hex).exists()


def test_status_refuses_unreadable_file_naming_it(shared_project):
    assert run_unprivileged(shared_project, "commit", "-m", "x", "--data", "data").returncode == 0
    (shared_project / "data" / "a.csv").write_text("a\n2\n")  # changed: status must read it
    os.chmod(shared_project / "data" / "a.csv", 0o000)
    r = run_unprivileged(shared_project, "status")
    assert "data/a.csv" in one_line_error(r)
    os.chmod(shared_project / "data" / "a.csv", 0o644)


def test_folder_of_yours_where_a_recorded_file_was_is_kept(repo, project, cli):
    zero = repo.commit("without model")
    (project / "model").write_text("v1\n")
    repo.commit("with model", artifacts=["model"])
    os.unlink(project / "model")
    (project / "model").mkdir()
    (project / "model" / "mine.txt").write_text("mine\n")
    cli("checkout", zero.hex, "--force")
    assert (project / "model" / "mine.txt").read_text() == "mine\n"
    assert repo.head() == zero


def test_commit_refuses_unreadable_ignore_file(shared_project):
    (shared_project / "secret.key").write_text("k\n")
    (shared_project / ".mlvcignore").write_text("secret.key\n")
    os.chmod(shared_project / ".mlvcignore", 0o000)
    r = run_unprivileged(shared_project, "commit", "-m", "x")
    assert ".mlvcignore" in one_line_error(r)
    os.chmod(shared_project / ".mlvcignore", 0o644)
