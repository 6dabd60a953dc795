"""Tests for mlvc.diff.runs: runs built from real files in tmp dirs, compared section by section."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc.core.ids import ObjectId
from mlvc.core.objects import Env, Run
from mlvc.diff.runs import BINARY, PATCH_MAX_BYTES, TOO_LARGE, diff_runs
from mlvc.errors import MissingObject
from mlvc.render.diff import render_diff
from mlvc.store.odb import LocalStore, MemoryStore
from mlvc.store.typed import lookup, write_object
from mlvc.workspace.trees import build_tree

# -- helpers ---------------------------------------------------------------------------------


class CountingStore:
    """Wraps a store and records every object whose content is read."""

    def __init__(self, inner):
        self.inner = inner
        self.reads: list[ObjectId] = []

    def read_bytes(self, oid):
        self.reads.append(oid)
        return self.inner.read_bytes(oid)

    def iter_content(self, oid):
        self.reads.append(oid)
        return self.inner.iter_content(oid)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def write_files(root: Path, files: dict) -> list[str]:
    """Write files into root. A value is bytes/str, or ("exec", content) / ("link", target)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, spec in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        kind, content = spec if isinstance(spec, tuple) else ("file", spec)
        if kind == "link":
            os.symlink(content, path)
            continue
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(0o755 if kind == "exec" else 0o644)
    return list(files)


_counter = iter(range(1_000_000))


def make_tree(store, tmp: Path, files: dict) -> ObjectId | None:
    root = tmp / f"t{next(_counter)}"
    return build_tree(store, root, write_files(root, files))


def make_run(store, **fields) -> ObjectId:
    if isinstance(fields.get("env"), dict):
        fields["env"] = write_object(store, Env(fields["env"]))
    return write_object(store, Run(**fields))


@pytest.fixture
def store():
    return MemoryStore()


# -- params ----------------------------------------------------------------------------------


def test_params_changed_added_removed(store):
    a = make_run(store, params={"lr": 0.01, "epochs": 10, "old": "x", "same": 1})
    b = make_run(store, params={"lr": 0.001, "epochs": 10, "new": True, "same": 1})
    p = diff_runs(store, a, b).params
    assert p == {"changed": {"lr": [0.01, 0.001]}, "added": {"new": True}, "removed": {"old": "x"}}


def test_param_type_change_is_a_change(store):
    a = make_run(store, params={"i": 1, "f": 1.0, "s": "1", "b": True, "nan": math.nan})
    b = make_run(store, params={"i": 1.0, "f": "1", "s": 1, "b": 1, "nan": math.nan})
    changed = diff_runs(store, a, b).params["changed"]
    assert set(changed) == {"i", "f", "s", "b"}  # NaN == NaN is no change
    assert changed["i"] == [1, 1.0] and type(changed["i"][1]) is float


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_delta_pct_and_unchanged_count(store):
    a = make_run(store, metrics={"loss": 0.5, "acc": 0.8, "same": 1.0, "gone": 3.0, "int": 2})
    b = make_run(store, metrics={"loss": 0.4, "acc": 0.8, "same": 1.0, "new": 7.0, "int": 2.0})
    d = diff_runs(store, a, b)
    assert set(d.metrics) == {"loss", "gone", "new"}
    loss = d.metrics["loss"]
    assert (loss["old"], loss["new"]) == (0.5, 0.4)
    assert loss["delta"] == pytest.approx(-0.1)
    assert loss["pct"] == pytest.approx(-20.0)
    assert d.metrics["gone"] == {"old": 3.0, "new": None, "delta": None, "pct": None}
    assert d.metrics["new"] == {"old": None, "new": 7.0, "delta": None, "pct": None}
    assert d.unchanged_metrics == 3  # acc, same, and int (2 == 2.0)


def test_metrics_nan_and_zero(store):
    a = make_run(store, metrics={"n": math.nan, "m": math.nan, "z": 0.0, "neg": -2.0})
    b = make_run(store, metrics={"n": math.nan, "m": 1.0, "z": 5.0, "neg": -3.0})
    d = diff_runs(store, a, b)
    assert "n" not in d.metrics
    assert d.metrics["m"]["delta"] is None and d.metrics["m"]["pct"] is None
    assert d.metrics["z"]["delta"] == 5.0 and d.metrics["z"]["pct"] is None
    assert d.metrics["neg"]["pct"] == pytest.approx(-50.0)  # relative to |old|


# -- files -----------------------------------------------------------------------------------


def test_files_added_removed_modified_nested(store, tmp_path):
    old = make_tree(
        store,
        tmp_path,
        {"train.py": "a\n", "lib/util.py": "u\n", "lib/deep/x.py": "x\n", "gone.txt": "g"},
    )
    new = make_tree(
        store,
        tmp_path,
        {"train.py": "a\nb\n", "lib/util.py": "u\n", "lib/deep/x.py": "y\n", "lib/new.py": "n"},
    )
    code = diff_runs(store, make_run(store, code=old), make_run(store, code=new)).code
    assert [i["path"] for i in code["added"]] == ["lib/new.py"]
    assert [i["path"] for i in code["removed"]] == ["gone.txt"]
    assert [i["path"] for i in code["modified"]] == ["lib/deep/x.py", "train.py"]
    m = code["modified"][1]
    assert (m["old_size"], m["new_size"]) == (2, 4)
    assert m["old_id"] == lookup(store, old, "train.py").id.hex
    assert m["new_id"] == lookup(store, new, "train.py").id.hex
    assert code["added"][0] == {
        "path": "lib/new.py",
        "kind": "file",
        "size": 1,
        "id": lookup(store, new, "lib/new.py").id.hex,
    }


def test_kind_change_counts_as_modified(store, tmp_path):
    old = make_tree(store, tmp_path, {"run.sh": "echo\n", "link": "target"})
    new = make_tree(store, tmp_path, {"run.sh": ("exec", "echo\n"), "link": ("link", "target")})
    mods = diff_runs(store, make_run(store, code=old), make_run(store, code=new)).code["modified"]
    kinds = {m["path"]: (m["old_kind"], m["new_kind"]) for m in mods}
    assert kinds == {"link": ("file", "symlink"), "run.sh": ("file", "exec")}
    assert mods[1]["old_id"] == mods[1]["new_id"]  # same content, only the mode changed


def test_file_replaced_by_folder(store, tmp_path):
    old = make_tree(store, tmp_path, {"x": "file"})
    new = make_tree(store, tmp_path, {"x/inner": "file"})
    d = diff_runs(store, make_run(store, data=old), make_run(store, data=new)).data
    assert [i["path"] for i in d["removed"]] == ["x"]
    assert [i["path"] for i in d["added"]] == ["x/inner"]


def test_section_missing_on_one_side(store, tmp_path):
    t = make_tree(store, tmp_path, {"model.pkl": b"\0weights", "sub/a": "a"})
    d = diff_runs(store, make_run(store), make_run(store, artifacts=t))
    assert [i["path"] for i in d.artifacts["added"]] == ["model.pkl", "sub/a"]
    back = diff_runs(store, make_run(store, artifacts=t), make_run(store))
    assert [i["path"] for i in back.artifacts["removed"]] == ["model.pkl", "sub/a"]


def test_identical_subtrees_are_not_read(tmp_path):
    inner = MemoryStore()
    big = {f"dataset/part{i}/f{j}.csv": f"{i},{j}\n" for i in range(5) for j in range(5)}
    old = make_tree(inner, tmp_path, {**big, "train.py": "v1"})
    new = make_tree(inner, tmp_path, {**big, "train.py": "v2"})
    shared = lookup(inner, old, "dataset").id
    assert shared == lookup(inner, new, "dataset").id
    a, b = make_run(inner, data=old), make_run(inner, data=new)
    store = CountingStore(inner)
    d = diff_runs(store, a, b)
    assert [m["path"] for m in d.data["modified"]] == ["train.py"]
    assert sorted(store.reads) == sorted([a, b, old, new])  # two runs, two root trees


def test_identical_subtree_may_be_missing_from_a_local_store(tmp_path):
    """Stronger than counting: delete the shared subtree's object; the diff still works."""
    store = LocalStore(tmp_path / "objects")
    shared_files = {"data/a.csv": "1\n", "data/b/c.csv": "2\n"}
    old = make_tree(store, tmp_path, {**shared_files, "x": "1"})
    new = make_tree(store, tmp_path, {**shared_files, "x": "2"})
    shared = lookup(store, old, "data").id
    a, b = make_run(store, code=old), make_run(store, code=new)
    path = tmp_path / "objects" / shared.hex[:2] / shared.hex[2:]
    path.unlink()
    assert [m["path"] for m in diff_runs(store, a, b).code["modified"]] == ["x"]
    c = make_run(store, code=make_tree(store, tmp_path, {"x": "2"}))
    with pytest.raises(MissingObject):
        diff_runs(store, a, c)  # here the subtree differs, so it must be read


# -- patches ---------------------------------------------------------------------------------


def _code_diff(store, tmp_path, old, new):
    a = make_run(store, code=make_tree(store, tmp_path, old))
    b = make_run(store, code=make_tree(store, tmp_path, new))
    return diff_runs(store, a, b, patch=True).code


def test_text_patch_like_git(store, tmp_path):
    old_lines = "".join(f"line {i}\n" for i in range(10))
    new_lines = old_lines.replace("line 5\n", "line five\n")
    code = _code_diff(
        store, tmp_path, {"m.py": old_lines, "gone.py": "bye\n"}, {"m.py": new_lines, "n.py": "hi"}
    )
    patch = code["modified"][0]["patch"]
    assert patch.startswith("--- a/m.py\n+++ b/m.py\n@@ -3,7 +3,7 @@\n")
    assert "-line 5\n+line five\n" in patch
    assert " line 2\n" in patch and " line 1\n" not in patch  # 3 lines of context
    assert code["added"][0]["patch"] == (
        "--- /dev/null\n+++ b/n.py\n@@ -0,0 +1 @@\n+hi\n\\ No newline at end of file\n"
    )
    assert code["removed"][0]["patch"] == "--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"


def test_binary_and_large_patches(store, tmp_path):
    big = "x\n" * (PATCH_MAX_BYTES // 2 + 1)
    code = _code_diff(
        store,
        tmp_path,
        {"w.bin": b"ab\0cd", "latin.txt": "caf\xe9".encode("latin-1"), "big.txt": "small\n"},
        {"w.bin": b"ab\0ce", "latin.txt": "cafe", "big.txt": big},
    )
    patches = {m["path"]: m["patch"] for m in code["modified"]}
    assert patches == {"big.txt": TOO_LARGE, "latin.txt": BINARY, "w.bin": BINARY}


def test_patches_only_when_asked_and_only_for_code(store, tmp_path):
    t1 = make_tree(store, tmp_path, {"a.py": "1\n"})
    t2 = make_tree(store, tmp_path, {"a.py": "2\n"})
    a, b = make_run(store, code=t1, data=t1), make_run(store, code=t2, data=t2)
    assert "patch" not in diff_runs(store, a, b).code["modified"][0]
    d = diff_runs(store, a, b, patch=True)
    assert "patch" in d.code["modified"][0] and "patch" not in d.data["modified"][0]


# -- env -------------------------------------------------------------------------------------

FACTS = {
    "python": {"version": "3.11.7", "implementation": "CPython", "executable": "/a/python"},
    "platform": {"system": "Linux", "release": "5.15", "machine": "x86_64"},
    "packages": {"numpy": "1.26.0", "torch": "2.1.0", "gone": "2.0", "same": "1.0"},
    "variables": {"CUDA_VISIBLE_DEVICES": "0", "OLD": "x"},
    "requirements": {"requirements.txt": "numpy\ntorch\n"},
    "hardware": {"cpu": {"count": 2}, "gpus": []},
}


def test_env_diff_sections(store):
    new = json.loads(json.dumps(FACTS))
    new["python"]["version"] = "3.12.1"
    new["platform"]["release"] = "6.1"
    new["packages"] = {"numpy": "2.0.1", "torch": "2.0.1", "pkg": "1.0", "same": "1.0"}
    new["variables"] = {"CUDA_VISIBLE_DEVICES": "1", "NEW": "y"}
    new["requirements"] = {"requirements.txt": "numpy\ntorch==2.0.1\n"}
    new["hardware"]["cpu"]["count"] = 4
    d = diff_runs(store, make_run(store, env=FACTS), make_run(store, env=new))
    e = d.env
    assert e["python"] == {"old": FACTS["python"], "new": new["python"]}
    assert e["platform"] == {"release": ["5.15", "6.1"]}
    packages = {k: v for k, v in e["packages"].items() if k not in ("sources", "installers")}
    assert packages == {
        "added": {"pkg": "1.0"},
        "removed": {"gone": "2.0"},
        "upgraded": {"numpy": ["1.26.0", "2.0.1"]},
        "downgraded": {"torch": ["2.1.0", "2.0.1"]},
    }
    assert e["variables"]["CUDA_VISIBLE_DEVICES"] == ["0", "1"]
    assert e["requirements"] == ["requirements.txt"]
    lines = render_diff(d).splitlines()
    for expected in [
        "  python 3.11.7 → 3.12.1",
        "  platform.release 5.15 → 6.1",
        "  numpy 1.26.0 → 2.0.1 (upgraded)",
        "  torch 2.1.0 → 2.0.1 (downgraded)",
        "+ pkg 1.0",
        "- gone 2.0",
        "  $CUDA_VISIBLE_DEVICES 0 → 1",
        "+ $NEW y",
        "- $OLD x",
        "  requirements requirements.txt changed",
        "  hardware.cpu.count 2 → 4",
    ]:
        assert expected in lines, expected


def test_same_env_is_not_read(tmp_path):
    inner = MemoryStore()
    env = write_object(inner, Env(FACTS))
    a = make_run(inner, env=env, params={"x": 1})
    b = make_run(inner, env=env, params={"x": 2})
    store = CountingStore(inner)
    d = diff_runs(store, a, b)
    assert env not in store.reads
    assert d.env["python"] is None and not any(d.env["packages"].values())
    assert not d.is_empty()


def test_env_on_one_side_only(store):
    e = diff_runs(store, make_run(store), make_run(store, env=FACTS)).env
    assert e["python"] == {"old": None, "new": FACTS["python"]}
    assert e["packages"]["added"] == FACTS["packages"]


def test_package_version_order(store):
    ordered = ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1", "1.10", "2"]
    older = {"packages": {f"p{i}": v for i, v in enumerate(ordered[:-1])}}
    newer = {"packages": {f"p{i}": v for i, v in enumerate(ordered[1:])}}
    a, b = make_run(store, env=older), make_run(store, env=newer)
    up = diff_runs(store, a, b).env["packages"]
    down = diff_runs(store, b, a).env["packages"]
    assert list(up["upgraded"]) == list(down["downgraded"]) == list(older["packages"])
    assert not up["downgraded"] and not down["upgraded"]


# -- whole diff: emptiness, JSON, rendering --------------------------------------------------


def test_to_dict_is_json_with_exact_keys(store):
    a = make_run(store, metrics={"m": math.nan, "i": 1.0}, params={"p": math.inf})
    b = make_run(store, metrics={"m": 1.0, "i": math.inf}, params={"p": -math.inf})
    d = diff_runs(store, a, b).to_dict()
    assert set(d) == {"a", "b", "params", "metrics", "code", "data", "artifacts", "env"}
    json.dumps(d, allow_nan=False)
    assert d["a"] == a.hex
    assert d["metrics"]["m"]["old"] == "nan" and d["metrics"]["i"]["new"] == "inf"
    assert d["params"]["changed"]["p"] == ["inf", "-inf"]


def test_render_report(store, tmp_path):
    old = make_tree(store, tmp_path, {"train.py": "x" * 1229, "gone.py": "g", "s.sh": "e"})
    new = make_tree(store, tmp_path, {"train.py": "x" * 1331, "new.py": "n", "s.sh": ("exec", "e")})
    env_a = {"python": {"version": "3.11.7"}, "packages": {"numpy": "1.26.0", "old": "2.0"}}
    env_b = {"python": {"version": "3.12.1"}, "packages": {"numpy": "2.0.1", "pkg": "1.0"}}
    params_a, metrics_a = {"lr": 0.01, "gone": 1}, {"loss": 0.5, "acc": 1.0}
    params_b, metrics_b = {"lr": 0.001, "k": "v"}, {"loss": 0.25, "acc": 1.0}
    a = make_run(store, params=params_a, metrics=metrics_a, code=old, env=env_a)
    b = make_run(store, params=params_b, metrics=metrics_b, code=new, env=env_b)
    text = render_diff(diff_runs(store, a, b))
    lines = text.splitlines()
    assert lines[0] == f"diff {a.hex[:10]} {b.hex[:10]}"
    for expected in [
        "params",
        "  lr: 0.01 → 0.001",
        '+ k: "v"',
        "- gone: 1",
        "  M train.py (1.2 KB → 1.3 KB)",
        "  A new.py (1 B)",
        "  D gone.py",
        "  M s.sh (1 B → 1 B, file → exec)",
        "  python 3.11.7 → 3.12.1",
        "  numpy 1.26.0 → 2.0.1 (upgraded)",
        "+ pkg 1.0",
        "- old 2.0",
        "  (1 unchanged)",
    ]:
        assert expected in lines, expected
    header, row = lines[lines.index("metrics") + 1 : lines.index("metrics") + 3]
    assert header.split() == ["metric", "old", "new", "delta", "%"]
    assert row.split() == ["loss", "0.5", "0.25", "-0.25", "-50.0%"]
    assert len(header) == len(row)  # aligned
    assert "data" not in lines  # sections without differences are left out


def test_render_patch_and_color(store, tmp_path):
    code = {"a.py": "1\n"}, {"a.py": "2\n"}
    a = make_run(store, code=make_tree(store, tmp_path, code[0]))
    b = make_run(store, code=make_tree(store, tmp_path, code[1]))
    d = diff_runs(store, a, b, patch=True)
    plain = render_diff(d)
    assert plain.endswith(
        "  M a.py (2 B → 2 B)\n    --- a/a.py\n    +++ b/a.py\n    @@ -1 +1 @@\n    -1\n    +2"
    )
    colored = render_diff(d, color=True)
    assert "\x1b[" in colored and "\x1b[" not in plain
    assert "\x1b[33m  M a.py" in colored  # yellow for modified


def test_render_empty(store):
    a = make_run(store, params={"x": 1})
    text = render_diff(diff_runs(store, a, a))
    assert text == f"diff {a.hex[:10]} {a.hex[:10]}\n  (no differences)"


# -- properties ------------------------------------------------------------------------------

scalars = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "1", "a"]),
    st.none(),
)
keys = st.sampled_from(["lr", "bs", "x.y", "seed", "opt"])
file_paths = st.tuples(st.lists(st.sampled_from(["d", "e"]), max_size=2), st.sampled_from("abc"))
file_trees = st.dictionaries(
    file_paths.map(lambda p: "/".join([*p[0], p[1]])),
    st.tuples(st.sampled_from(["file", "exec"]), st.binary(max_size=8)),
    max_size=6,
)
run_specs = st.fixed_dictionaries(
    {
        "params": st.dictionaries(keys, scalars, max_size=4),
        "metrics": st.dictionaries(keys, st.floats(allow_nan=True), max_size=4),
        "code": file_trees,
        "data": file_trees,
    }
)


def _build(store, tmp: Path, spec: dict) -> ObjectId:
    return make_run(
        store,
        params=spec["params"],
        metrics=spec["metrics"],
        code=make_tree(store, tmp, spec["code"]),
        data=make_tree(store, tmp, spec["data"]),
    )


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(run_specs)
def test_a_run_does_not_differ_from_itself(spec):
    store = MemoryStore()
    with tempfile.TemporaryDirectory() as tmp:
        a = _build(store, Path(tmp), spec)
    d = diff_runs(store, a, a, patch=True)
    assert d.is_empty()
    assert "(no differences)" in render_diff(d)


def _swap(item: dict) -> dict:
    """A modified entry seen from the other side: old_* and new_* exchanged."""
    flip = {"old_": "new_", "new_": "old_"}
    return {flip.get(k[:4], k[:4]) + k[4:]: v for k, v in item.items()}


@FAST
@given(run_specs, run_specs)
def test_diff_is_symmetric(spec_a, spec_b):
    store = MemoryStore()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _build(store, Path(tmp), spec_a), _build(store, Path(tmp), spec_b)
    ab, ba = diff_runs(store, a, b), diff_runs(store, b, a)
    assert ab.is_empty() == ba.is_empty()
    assert ab.is_empty() or a != b
    assert ab.unchanged_metrics == ba.unchanged_metrics
    x, y = ab.to_dict(), ba.to_dict()  # plain values: NaN compares equal as "nan"
    assert x["params"]["added"] == y["params"]["removed"]
    assert x["params"]["removed"] == y["params"]["added"]
    assert x["params"]["changed"] == {k: v[::-1] for k, v in y["params"]["changed"].items()}
    assert x["metrics"].keys() == y["metrics"].keys()
    for k, m in x["metrics"].items():
        assert (m["old"], m["new"]) == (y["metrics"][k]["new"], y["metrics"][k]["old"])
        assert (m["delta"] is None) == (y["metrics"][k]["delta"] is None)
    for section in ("code", "data"):
        assert x[section]["added"] == y[section]["removed"]
        assert x[section]["removed"] == y[section]["added"]
        assert [_swap(m) for m in x[section]["modified"]] == y[section]["modified"]
