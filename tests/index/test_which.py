"""`mlvc which`: runs and model versions found by a file's content, through the provenance
view; checked through the library and the CLI."""

from __future__ import annotations

import json
import os

import blake3
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import mlvc.models as mm
from mlvc import Repo
from mlvc.errors import AmbiguousObject, UnknownObject, UsageError


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def test_consumers_producers_paths_and_first_producer(repo, project, cli, tmp_path):
    (project / "out").mkdir()
    (project / "out" / "model.bin").write_bytes(b"weights v1")
    first = repo.commit("produce", name="maker", data=["data"], artifacts=["out"])
    # the same bytes under another path, as an input of a later run, and produced again
    (project / "data" / "copy.bin").write_bytes(b"weights v1")
    (project / "out" / "model.bin").write_bytes(b"weights v2")
    (project / "out" / "again.bin").write_bytes(b"weights v1")
    second = repo.commit("consume", data=["data"], artifacts=["out"])

    outside = tmp_path / "downloaded.bin"  # a copy outside the repository
    outside.write_bytes(b"weights v1")
    res = repo.which(outside)
    assert res.object_id == b3(b"weights v1") and res.size == 10
    assert res.path == str(outside.resolve())
    assert [(p["run"], p["path"]) for p in res.produced] == [
        (first, "out/model.bin"),
        (second, "out/again.bin"),
    ]
    assert [(p["run"], p["section"], p["path"]) for p in res.consumed] == [
        (second, "data", "data/copy.bin")
    ]
    assert res.first_producer["run"] == first and res.first_producer["name"] == "maker"

    # code is consumed too, and a file only ever used as input has no producer
    code = repo.which(project / "train.py")
    assert {p["run"] for p in code.consumed} == {first, second} and code.produced == []
    assert all(p["section"] == "code" for p in code.consumed)

    # the CLI: text and JSON say the same
    text = cli("which", str(outside)).output
    assert f"first produced by run {first[:10]} (maker)" in text and "out/model.bin" in text
    assert "3 runs: 2 produced it, 1 consumed it" in text and "data/copy.bin" in text
    doc = json.loads(cli("which", str(outside), "--json").output)
    assert doc["id"] == res.object_id and doc["first_producer"]["run"] == first
    assert len(doc["produced"]) == 2 and len(doc["consumed"]) == 1


def _colliding_contents() -> tuple[bytes, bytes]:
    """Two contents whose ids share their first 4 hex digits (a birthday search)."""
    seen: dict[str, bytes] = {}
    for i in range(1 << 20):
        data = f"file {i}\n".encode()
        prefix = b3(data)[:4]
        if prefix in seen:
            return seen[prefix], data
        seen[prefix] = data
    raise AssertionError("no collision")


def test_hash_prefix_ambiguity_and_bad_input(repo, project, cli):
    one, two = _colliding_contents()
    (project / "data" / "one.txt").write_bytes(one)
    (project / "data" / "two.txt").write_bytes(two)
    repo.commit("two files", data=["data"])
    full = b3(one)
    assert [p["path"] for p in repo.which(full).consumed] == ["data/one.txt"]  # a full id
    assert repo.which(full[:12].upper()).object_id == full  # a unique prefix, any case
    shared = full[:4]
    with pytest.raises(AmbiguousObject, match=rf"prefix {shared} is ambiguous: 2 files match"):
        repo.which(shared)
    taken = {b3(one)[:4]} | {
        b3(p.read_bytes())[:4] for p in project.rglob("*") if p.is_file() and ".mlvc" not in p.parts
    }
    free = next(f"{n:04x}" for n in range(0x10000) if f"{n:04x}" not in taken)
    with pytest.raises(UnknownObject, match=f"no file of any run .* starting with {free}"):
        repo.which(free)
    absent_full = b3(b"never stored")
    assert not repo.which(absent_full).found  # a full id nobody has: an empty answer
    assert "no run consumed or produced this file" in cli("which", absent_full).output
    with pytest.raises(UsageError, match="is a folder"):
        repo.which(project / "data")
    with pytest.raises(UsageError, match="neither a file nor a file id"):
        repo.which("no-such-file.txt")
    r = cli("which", "data", ok=False)
    assert r.exit_code == 2 and "is a folder" in r.output and "Traceback" not in r.output
    r = cli("which", shared, ok=False)
    assert r.exit_code == 4 and r.output.count("\n") == 1 and "give more digits" in r.output


def test_a_large_chunked_file_is_found_by_its_file_id(repo, project, tmp_path):
    big = os.urandom(5 << 20)  # over the chunking threshold: stored as content-defined chunks
    (project / "data" / "big.bin").write_bytes(big)
    run = repo.commit("big", data=["data"])
    copy = tmp_path / "big-copy.bin"
    copy.write_bytes(big)
    res = repo.which(copy)
    assert res.object_id == b3(big)
    assert [(p["run"], p["path"]) for p in res.consumed] == [(run, "data/big.bin")]


def test_registered_model_versions_containing_the_file(repo, project, tmp_path):
    folder = tmp_path / "model"
    mm.save(lambda d: d, folder)
    (folder / "weights.bin").write_bytes(b"model weights")
    assert mm.register("ident", str(folder), repo=repo, trust=True) == 1
    assert mm.register("ident", str(folder), repo=repo, trust=True) == 2
    res = repo.which(folder / "weights.bin")
    assert [(m["name"], m["version"], m["path"]) for m in res.models] == [
        ("ident", 1, "weights.bin"),
        ("ident", 2, "weights.bin"),
    ]
    assert res.produced == [] and res.consumed == []
    # the index is a cache: a rebuild gives the same answer
    repo.rebuild_index()
    assert repo.which(folder / "weights.bin").models == res.models


def test_the_lookup_is_served_by_the_object_id_index(repo, project):
    repo.commit("one", data=["data"])
    rows = repo.query(
        "SELECT index_name, expressions FROM duckdb_indexes() WHERE table_name = 'tree_files'"
    ).to_pylist()
    assert rows and "object_id" in rows[0]["expressions"]
    views = repo.query("SELECT view_name FROM duckdb_views() WHERE NOT internal").to_pylist()
    assert {"provenance", "files"} <= {v["view_name"] for v in views}


@hsettings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), name=st.sampled_from(["a b.txt", "ü.bin", "x"]))
def test_any_content_under_any_name_is_found(project, content, name):
    repo = Repo(project)
    folder = project / "data" / "h"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / name).write_bytes(content)
    run = repo.commit("h", data=["data/h"])
    res = repo.which(folder / name)
    assert res.object_id == b3(content)
    assert (run, f"data/h/{name}") in {(p["run"], p["path"]) for p in res.consumed}
