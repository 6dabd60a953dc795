"""True end-to-end runs of the `mlvc` command in subprocesses, and whole-tree properties."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc import Repo


def mlvc(cwd, *args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "mlvc", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if check:
        assert r.returncode == 0, f"mlvc {args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_new_user_session(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "train.py").write_text("print('v1')\n")
    (proj / "data" / "d.csv").write_text("a,b\n1,2\n")
    (proj / "params.json").write_text(json.dumps({"lr": 0.1, "opt": {"beta": 0.9}}))
    mlvc(proj, "init")
    (proj / "sub").mkdir()
    first = mlvc(
        proj / "sub",
        "commit",
        "-m",
        "one",
        "--params",
        "../params.json",
        "-M",
        "acc=0.5",
        "--data",
        "../data",
        "-q",
    ).stdout.strip()
    assert len(first) == 64
    (proj / "train.py").write_text("print('v2')\n")
    (proj / "params.json").write_text(json.dumps({"lr": 0.2, "opt": {"beta": 0.9}}))
    mlvc(proj, "commit", "-m", "two", "--params", "params.json", "-M", "acc=0.7", "--data", "data")
    d = json.loads(mlvc(proj, "diff", first[:8], "HEAD", "--json").stdout)
    assert d["params"]["changed"] == {"lr": [0.1, 0.2]}
    assert [m["path"] for m in d["code"]["modified"]] == ["params.json", "train.py"]
    rows = json.loads(
        mlvc(
            proj,
            "query",
            'SELECT message, "params.opt.beta" AS b FROM runs_wide ORDER BY created',
            "-f",
            "json",
        ).stdout
    )
    assert rows == [{"message": "one", "b": 0.9}, {"message": "two", "b": 0.9}]
    out = tmp_path / "replay"
    mlvc(proj, "checkout", first, "--to", str(out))
    recorded = json.loads(mlvc(proj, "show", first, "--json").stdout)
    for section in ("code", "data"):
        for e in recorded[section]["entries"]:
            assert blake3.blake3((out / e["path"]).read_bytes()).hexdigest() == e["id"]
    assert (out / "train.py").read_text() == "print('v1')\n"
    os.unlink(proj / ".mlvc" / "index.duckdb")
    assert len(json.loads(mlvc(proj, "log", "--json").stdout)) == 2
    assert mlvc(proj, "fsck").stdout.startswith("ok")
    bad = mlvc(tmp_path, "log", check=False)
    assert bad.returncode == 3 and bad.stderr.startswith("mlvc: error: not an mlvc repository")
    assert "Traceback" not in bad.stderr


names = st.text(
    st.characters(codec="ascii", categories=["L", "N"], include_characters="-_."),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", "..") and not s.startswith("."))
trees = st.recursive(
    st.tuples(st.binary(max_size=300), st.booleans()),  # (content, executable)
    lambda children: st.dictionaries(names, children, min_size=1, max_size=4),
    max_leaves=12,
).filter(lambda t: isinstance(t, dict))


def _write(base: Path, tree: dict) -> None:
    for name, node in tree.items():
        if isinstance(node, dict):
            (base / name).mkdir()
            _write(base / name, node)
        else:
            content, executable = node
            (base / name).write_bytes(content)
            os.chmod(base / name, 0o755 if executable else 0o644)


def _read(base: Path) -> dict:
    out = {}
    for p in sorted(base.rglob("*")):
        if p.is_file():
            out[p.relative_to(base).as_posix()] = (
                p.read_bytes(),
                bool(p.stat().st_mode & stat.S_IXUSR),
            )
    return out


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_checkout_of_commit_is_the_tree(tmp_path_factory, tree):
    base = tmp_path_factory.mktemp("prop")
    proj = base / "p"
    (proj / "data").mkdir(parents=True)
    _write(proj / "data", tree)
    repo = Repo.init(proj)
    rid = repo.commit("prop", data=["data"], cwd=proj, capture_code=False, capture_env=False)
    out = base / "out"
    repo.checkout(rid.hex, to=out)
    assert _read(out / "data") == _read(proj / "data")
    assert repo.diff(rid.hex, rid.hex).is_empty()
    assert repo.fsck() == []
