"""Properties over hostile objects and trees (issue 9, item 25).

- Decoding any bytes raises nothing but DecodeError; what decodes re-encodes to itself.
- Checking out a crafted run (names, links, depth, sizes chosen by an attacker; objects built
  directly, bypassing commit's checks) never creates, changes or removes anything outside
  the target, never plants ``.git``/``.mlvc``, leaves no link that resolves outside, and
  either writes exactly the run's files or refuses with an MlvcError leaving the target as
  it was. In place and with ``--to`` alike.
- For legitimate trees: checkout(commit(tree)) == tree (names, nesting, exec bits, links).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.core.objects import (
    FORMAT_VERSION,
    DecodeError,
    Run,
    Tree,
    TreeEntry,
    decode,
    encode,
    is_reserved_name,
)
from mlvc.errors import MlvcError

SLOW_OK = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- decoding --------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes) -> None:
    try:
        obj = decode(data)
    except DecodeError:
        return
    assert decode(encode(obj)) == obj


@given(st.binary(max_size=300))
def test_decode_random_bytes(data):
    _decodes_or_refuses(data)


leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=34)
)
values = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=3), kids, max_size=4)
    ),
    max_leaves=16,
)
hostile_names = st.sampled_from(
    [
        "",
        ".",
        "..",
        "a",
        ".git",
        ".GIT",
        ".mlvc",
        ".git.",
        "git~1",
        "a/b",
        "/",
        "x\0",
        "é",
        "n" * 300,
    ]
) | st.text(max_size=6)
kinds = st.sampled_from(["file", "exec", "symlink", "dir", "bogus", ""])
raw_ids = st.binary(min_size=32, max_size=32) | st.binary(max_size=40) | st.text(max_size=3)
sizes = st.integers(-2, 2**64 - 1) | st.booleans() | st.none()
tree_bodies = st.lists(st.lists(hostile_names | kinds | raw_ids | sizes, max_size=5), max_size=4)
tree_bodies |= st.lists(st.tuples(hostile_names, kinds, raw_ids, sizes).map(list), max_size=4)
run_fields = st.sampled_from(
    [*Run.__dataclass_fields__, "bogus"]  # every field, and an unknown one
)
run_bodies = st.dictionaries(run_fields, values | raw_ids, max_size=6)


@SLOW_OK
@given(
    kind=st.sampled_from(["tree", "run", "env", "blob", 3]),
    version=st.sampled_from([FORMAT_VERSION, 0, 2, "1", None]),
    body=values | tree_bodies | run_bodies,
)
# a run body whose unknown keys mix str and bytes once made the error message itself raise
@example(kind="run", version=FORMAT_VERSION, body={"": None, b"": None})
def test_decode_structured_garbage(kind, version, body):
    _decodes_or_refuses(msgpack.packb([kind, version, body], use_bin_type=True))


@given(body=run_bodies)
def test_decode_run_bodies(body):
    _decodes_or_refuses(msgpack.packb(["run", FORMAT_VERSION, body], use_bin_type=True))


def test_decode_deeply_nested_run_is_refused():
    body: object = 1
    for _ in range(900):
        body = [body]
    data = msgpack.packb(["run", FORMAT_VERSION, {"extra": {"x": body}}], use_bin_type=True)
    _decodes_or_refuses(data)


safe_names = st.text(
    st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=12
).filter(lambda n: n not in (".", "..") and not is_reserved_name(n))
ids = st.binary(min_size=32, max_size=32).map(ObjectId)


@given(
    st.lists(
        st.tuples(safe_names, st.sampled_from(["file", "exec", "symlink", "dir"]), ids),
        max_size=12,
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 2**64 - 1),
)
def test_tree_round_trip(entries, size):
    tree = Tree.of(TreeEntry(n, k, i, size) for n, k, i in entries)
    assert decode(encode(tree)) == tree


# -- hostile checkouts -----------------------------------------------------------------------

NAMES = ["a", "b", "c", "..", ".", "", ".git", ".GIT", ".mlvc", ".Mlvc", "git~1", ".git "]
NAMES += ["a/b", "/etc", "x\0y", "n" * 256, "keep.txt", "hooks", "é"]
STEPS = ["..", ".", "a", "b", "c", "hooks", ".git", "keep.txt", "", "hop"]
targets = st.sampled_from(["/", "/etc", "..", "../..", ".", "", "x" * 5000]) | st.lists(
    st.sampled_from(STEPS), min_size=1, max_size=6
).map("/".join)
files = st.tuples(st.sampled_from(["file", "exec"]), st.binary(max_size=20), st.booleans())
links = st.tuples(st.just("symlink"), targets)
trees = st.recursive(
    st.dictionaries(st.sampled_from(NAMES), files | links, max_size=4),
    lambda kids: st.dictionaries(st.sampled_from(NAMES), files | links | kids, max_size=4),
    max_leaves=12,
)


def store_tree(repo: Repo, spec: dict) -> ObjectId:
    """Raw tree objects for a spec, written without any of the library's checks."""
    rows = []
    for name, item in spec.items():
        if isinstance(item, dict):
            rows.append([name, "dir", bytes(store_tree(repo, item)), 0])
        elif item[0] == "symlink":
            raw = item[1].encode()
            rows.append([name, "symlink", bytes(repo.store.add_bytes(raw)), len(raw)])
        else:
            kind, content, lie = item
            size = len(content) + (7 if lie else 0)  # a size that lies now and then
            rows.append([name, kind, bytes(repo.store.add_bytes(content)), size])
    rows.sort(key=lambda r: r[0])
    data = msgpack.packb(["tree", FORMAT_VERSION, rows], use_bin_type=True)
    return repo.store.add_bytes(data)


def expected(spec: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for name, item in spec.items():
        path = prefix + name
        if isinstance(item, dict):
            sub = expected(item, path + "/")
            out.update(sub)
            if sub:
                out[path] = "dir"
        elif item[0] == "symlink":
            out[path] = "-> " + item[1]
        else:
            out[path] = f"{item[0]} {item[1]!r}"
    return out


def snapshot(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every path below folder (links not followed) with what it is or holds."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = p.relative_to(folder).as_posix()
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = "dir"
            else:
                kind = "exec" if st_.st_mode & 0o111 else "file"
                out[rel] = f"{kind} {p.read_bytes()!r}"
    return out


def assert_links_inside(target: Path, written=None) -> None:
    """Every link (of ``written``, if given) resolves, on the real filesystem, inside."""
    real = os.path.realpath(target)
    for rel, what in snapshot(target).items():
        if what.startswith("-> ") and (written is None or rel in written):
            resolved = os.path.realpath(target / rel)
            assert resolved == real or resolved.startswith(real + os.sep), (rel, what, resolved)


class Sandbox:
    """tmp/{canary/, sandbox/{proj/ (repo with .git/hooks), out/}}: a crafted run is checked
    out; everything but the target must stay as it was."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        (tmp / "canary").mkdir()
        (tmp / "canary" / "c.txt").write_text("canary\n")
        self.project = tmp / "sandbox" / "proj"
        (self.project / ".git" / "hooks").mkdir(parents=True)
        (self.project / ".git" / "hooks" / "README").write_text("hooks\n")
        (self.project / "keep.txt").write_text("keep\n")
        Repo.init(self.project)
        self.repo = Repo(self.project)
        self.out = tmp / "sandbox" / "out"
        self.out.mkdir()
        (self.out / "pre.txt").write_text("pre\n")
        for target in (self.out, self.project):  # a user's own link, leading out
            os.symlink("..", target / "hop")

    def run(self, spec: dict) -> str:
        tree = store_tree(self.repo, spec)
        rid = self.repo.store.add_bytes(encode(Run(code=tree, message="crafted")))
        self.repo.store.flush()  # visible; durability is not what is tested here
        self.repo.refs.add_run(rid)
        return rid.hex

    def outside(self, target: Path) -> dict[str, str]:
        """Everything but the target, the store's own moving parts skipped."""
        mlvc = self.project / ".mlvc"
        return snapshot(self.tmp, skip=(target, mlvc / "tmp", mlvc / "logs")) | {
            k: v
            for k, v in snapshot(mlvc).items()
            if k.startswith(("objects", "refs/runs", "config"))
        }


def check_checkout(box: Sandbox, spec: dict, in_place: bool) -> None:
    rid = box.run(spec)
    target = box.project if in_place else box.out
    skip = (box.project / ".mlvc", box.project / ".git")
    before_target = snapshot(target, skip)
    before_outside = box.outside(target)
    git_before = snapshot(box.project / ".git")
    try:
        box.repo.checkout(rid, to=None if in_place else target, force=in_place)
    except MlvcError:
        assert snapshot(target, skip) == before_target  # refused: nothing half-written
    else:
        got = snapshot(target, skip)
        want = expected(spec)
        assert {k: v for k, v in got.items() if k in want} == want
        extra = set(got) - set(want)
        assert extra <= set(before_target), extra  # nothing beyond the run's files is new
        assert_links_inside(target, want)
    assert box.outside(target) == before_outside
    assert snapshot(box.project / ".git") == git_before


@SLOW_OK
@given(spec=trees, in_place=st.booleans())
def test_hostile_checkout_stays_inside(spec, in_place):
    with tempfile.TemporaryDirectory(prefix="mlvc-test-hostile-") as tmp:
        check_checkout(Sandbox(Path(tmp)), spec, in_place)


@SLOW_OK
@given(depth=st.integers(1, 40), target=targets)
def test_hostile_link_below_deep_folders(depth, target):
    spec: dict = {"l": ("symlink", target), "f": ("file", b"f", False)}
    for i in range(depth):
        spec = {"d" if i % 2 else "a": spec, "up": ("symlink", "../" * (i % 3) + "a")}
    with tempfile.TemporaryDirectory(prefix="mlvc-test-hostile-") as tmp:
        check_checkout(Sandbox(Path(tmp)), spec, in_place=False)


# Links that lead through links: each resolves inside on its own, their chain leaves.
LINK_AT = ["l1", "a/l2", "a/b/l3", "c/l4", "a/b/l1"]
chain_targets = st.builds(  # climb, go through a link (or a folder), climb from there
    lambda up, via, back, tail: "/".join([*[".."] * up, via, *[".."] * back, tail]).strip("/"),
    st.integers(0, 3),
    st.sampled_from([*LINK_AT, "a", "a/b", "c", "hop"]),
    st.integers(0, 3),
    st.sampled_from(["", "f", "b"]),
) | st.sampled_from(["..", "../..", "."])


def _hop_and_through(hop, hop_target, through, back, extra):
    """``hop`` leads somewhere shallower than it stands; ``through`` goes to the root, into
    hop, then climbs ``back``: lexically inside, really outside when hop is shallow.
    ``hop`` may be the link already in the target (``Sandbox``), which leads out."""
    links = {**extra, hop: hop_target} if hop != "hop" else dict(extra)
    if through != hop:
        links[through] = "/".join([".."] * through.count("/") + [hop] + [".."] * back)
    return links


chains = st.builds(
    _hop_and_through,
    st.sampled_from([*LINK_AT, "hop"]),
    st.sampled_from(["..", "../..", ".", "b", "f"]),
    st.sampled_from(LINK_AT),
    st.integers(1, 3),
    st.dictionaries(st.sampled_from(LINK_AT), chain_targets, max_size=2),
)


def nest(links: dict[str, str]) -> dict:
    spec: dict = {"a": {"b": {"f": ("file", b"f", False)}}, "c": {"g": ("file", b"g", False)}}
    for path, target in links.items():
        *folders, name = path.split("/")
        node = spec
        for f in folders:
            node = node[f]
        node[name] = ("symlink", target)
    return spec


@SLOW_OK
@given(links=chains, in_place=st.booleans())
def test_hostile_link_chains_stay_inside(links, in_place):
    with tempfile.TemporaryDirectory(prefix="mlvc-test-hostile-") as tmp:
        check_checkout(Sandbox(Path(tmp)), nest(links), in_place)


# -- legitimate trees: checkout(commit(tree)) == tree ----------------------------------------

JUNK = {"__pycache__", ".ipynb_checkpoints", ".DS_Store"}
legit_names = st.text(
    st.characters(codec="utf-8", exclude_characters="/\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=10,
).filter(
    lambda n: n not in (".", "..") and n not in JUNK and not is_reserved_name(n)
    # a name ending in the temp suffix checkout writes beside a file is not a concern here
)
legit_files = st.tuples(st.sampled_from(["file", "exec"]), st.binary(max_size=30))
legit_trees = st.recursive(
    st.dictionaries(legit_names, legit_files, min_size=1, max_size=4),
    lambda kids: st.dictionaries(legit_names, legit_files | kids, min_size=1, max_size=4),
    max_leaves=10,
)


def write_spec(folder: Path, spec: dict) -> list[str]:
    """Write a legit spec; returns the folders made (to hang links from)."""
    folders = [""]
    for name, item in spec.items():
        path = folder / name
        if isinstance(item, dict):
            path.mkdir()
            folders += [f"{name}/{f}".rstrip("/") for f in write_spec(path, item)]
        else:
            path.write_bytes(item[1])
            os.chmod(path, 0o755 if item[0] == "exec" else 0o644)
    return folders


links_at = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 3), st.lists(st.sampled_from(["x", ".", "y"]))),
    max_size=4,
)


@settings(SLOW_OK, max_examples=25)  # a commit costs a sync and an index update
@given(spec=legit_trees, link_specs=links_at, data=st.data())
def test_commit_then_checkout_gives_the_same_tree(spec, link_specs, data):
    """Relative links that climb only at their start and stay inside are kept as they are."""
    with tempfile.TemporaryDirectory(prefix="mlvc-test-legit-") as tmp:
        project = Path(tmp) / "proj"
        top = project / "data"
        top.mkdir(parents=True)
        folders = write_spec(top, spec)
        for i, (at, ups, tail) in enumerate(link_specs):
            folder = folders[at % len(folders)]
            parts = folder.split("/") if folder else []
            ups = min(ups, len(parts) + 1)  # one more climbs to the project root: still inside
            base = top.parent if ups > len(parts) else top.joinpath(*parts[: len(parts) - ups])
            pick = data.draw(st.sampled_from(sorted(os.listdir(base))))
            path = top.joinpath(*parts, f"link{i}")
            if not os.path.lexists(path):
                os.symlink("/".join([".."] * ups + [pick, *tail]), path)
        repo = Repo.init(project)
        oid = repo.commit("legit", data=["data"], cwd=project, capture_env=False)
        out = Path(tmp) / "out"
        repo.checkout(oid.hex, to=out)
        assert snapshot(out / "data") == snapshot(top)
        assert_links_inside(out)
