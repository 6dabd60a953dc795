"""The ``refs`` table kept up to date without reading every ref file (ingest.refresh_refs):
after any sequence of ref changes it equals a full read of refs/names and refs/tags, and an
unchanged ref is not read again once its mtime is settled."""

from __future__ import annotations

import os

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc.core.ids import ObjectId
from mlvc.errors import MlvcError
from mlvc.index.ingest import refresh_refs
from mlvc.index.journal import refs_match
from mlvc.refs.resolve import named_runs

LATER = 1 << 62  # a clock far ahead: every ref's mtime is settled


def table(con) -> list[tuple]:
    return sorted(con.execute("SELECT kind, name, run_id FROM refs").fetchall())


def full(refs) -> list[tuple]:
    return sorted(
        (kind, name, oid.hex)
        for kind, ns in (("name", "names"), ("tag", "tags"))
        for name, oid in named_runs(refs, ns).items()
    )


def fresh_con():
    con = duckdb.connect()
    con.execute("CREATE TABLE refs (kind VARCHAR, name VARCHAR, run_id VARCHAR)")
    con.execute(
        "CREATE TABLE ref_files (kind VARCHAR, name VARCHAR, ino UBIGINT, mtime_ns BIGINT, "
        "size BIGINT)"
    )
    return con


RUNS = [ObjectId.parse(f"{i:02x}" * 32) for i in range(1, 5)]
NAMES = ["a", "b", "c"]
ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "symbolic", "damage", "garbage"]),
        st.sampled_from(["names", "tags"]),
        st.sampled_from(NAMES),
        st.sampled_from(range(len(RUNS))),
        st.booleans(),  # refresh with a settled clock (True) or the real one
    ),
    max_size=25,
)


def cleared(repo):
    """The repository's refs, with no name or tag."""
    refs = repo.refs
    for ns in ("names", "tags"):
        for name in refs.names(ns):
            os.unlink(refs.dir / "refs" / ns / name)
    return refs


def apply(refs, op: str, ns: str, name: str, run: int) -> None:
    """One step of ``ops`` on the refs."""
    path = refs.dir / "refs" / ns / name
    try:
        if op == "set":
            refs.write(f"refs/{ns}/{name}", RUNS[run])
        elif op == "delete":
            refs.delete(f"refs/{ns}/{name}")
        elif op == "symbolic":  # to another name, which may change alone later
            other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
            refs.write(f"refs/{ns}/{name}", None, symbolic=f"refs/{ns}/{other}")
    except MlvcError:  # written through a damaged ref: it is replaced by hand instead
        path.unlink(missing_ok=True)
    if op == "damage" and path.exists():
        path.write_bytes(b"\xff\xfe not text")
    elif op == "garbage":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a run id\n")


@pytest.mark.damages_repo  # refs damaged on purpose are left behind
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_the_table_equals_a_full_read_after_any_changes(repo, steps):
    refs = cleared(repo)
    con = fresh_con()
    for op, ns, name, run, settled in steps:
        apply(refs, op, ns, name, run)
        refresh_refs(con, refs, now_ns=LATER if settled else None)
        assert table(con) == full(refs), (op, ns, name)


@pytest.mark.damages_repo  # refs to runs the store does not hold
def test_a_settled_unchanged_ref_is_not_read_again(repo, monkeypatch, settle_window):
    refs = repo.refs
    for i in range(50):
        refs.write(f"refs/names/n{i}", RUNS[i % len(RUNS)])
    refs.write("refs/tags/best", None, symbolic="refs/names/n1")
    con = fresh_con()
    refresh_refs(con, refs, now_ns=LATER)
    reads = []
    real = type(refs).read_direct

    def counting(self, ref):
        reads.append(ref)
        return real(self, ref)

    monkeypatch.setattr(type(refs), "read_direct", counting)
    refresh_refs(con, refs, now_ns=LATER)
    assert reads == ["refs/tags/best"]  # a symbolic ref is always read: its target may move
    refs.write("refs/names/n7", RUNS[0])
    refs.write("refs/names/n1", RUNS[3])  # what the symbolic tag points through
    reads.clear()
    refresh_refs(con, refs, now_ns=LATER)
    assert sorted(reads) == ["refs/names/n1", "refs/names/n7", "refs/tags/best"]
    assert table(con) == full(refs)
    assert ("tag", "best", RUNS[3].hex) in table(con)
    # just written: a coarse clock could blur a second rewrite, so it is read every time
    settle_window(3600 * 10**9)  # "just": whatever the machine's load between the calls
    refs.write("refs/names/n8", RUNS[1])
    reads.clear()
    refresh_refs(con, refs)
    refresh_refs(con, refs)
    assert reads.count("refs/names/n8") == 2 and reads.count("refs/names/n7") == 0


def test_the_index_shows_renamed_runs_through_the_incremental_refresh(repo):
    """Through the public path: names given and moved between commits show in SQL."""
    first = repo.commit("one", name="alpha")
    second = repo.commit("two", name="beta")
    assert repo.query(
        "SELECT name, run_id FROM refs WHERE kind = 'name' ORDER BY name"
    ).to_pylist() == [
        {"name": "alpha", "run_id": first},
        {"name": "beta", "run_id": second},
    ]
    repo.refs.write("refs/names/alpha", ObjectId.parse(second))
    repo.refs.delete("refs/names/beta")
    rows = repo.query("SELECT name, run_id FROM refs WHERE kind = 'name'").to_pylist()
    assert rows == [{"name": "alpha", "run_id": second}]


@pytest.mark.damages_repo  # refs damaged on purpose are left behind
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_refs_match_answers_whether_a_refresh_would_change_a_row(repo, steps):
    """``refs_match`` (a reader's check while names are too recent for the fingerprint to be
    trusted) says True exactly when the table is what a full read gives, whatever changed
    since the last refresh: sets, deletes, symbolic refs whose target moved, damage."""
    refs = cleared(repo)
    con = fresh_con()
    for op, ns, name, run, refresh in steps:
        apply(refs, op, ns, name, run)
        assert refs_match(con, refs) == (table(con) == full(refs)), (op, ns, name)
        if refresh:  # with a settled clock: files noted in ref_files, matched by identity
            refresh_refs(con, refs, now_ns=LATER)
            assert refs_match(con, refs)


def test_a_name_through_a_ref_outside_names_and_tags_follows_it(repo, settle_window):
    """A name that is a symbolic ref to a ref no fingerprint covers (refs/custom/x: the API
    allows any ref under refs/) showed its old run for good once the fingerprint settled:
    moving the target changes nothing in refs/names or refs/tags."""
    first = repo.commit("one")
    second = repo.commit("two")
    refs = repo.refs
    refs.write("refs/custom/best", ObjectId.parse(first))
    refs.write("refs/names/champion", None, symbolic="refs/custom/best")
    settle_window(0)  # every fingerprint settles at once, as a quiet minute would make it
    sql = "SELECT run_id FROM refs WHERE kind = 'name' AND name = 'champion'"
    assert repo.query(sql).column(0).to_pylist() == [first]
    assert repo.query(sql).column(0).to_pylist() == [first]  # settled and stored
    refs.write("refs/custom/best", ObjectId.parse(second))
    assert repo.query(sql).column(0).to_pylist() == [second]
    assert repo.query(sql).column(0).to_pylist() == [second]
    refs.write("refs/names/champion", ObjectId.parse(first))  # a plain name again
    assert repo.query(sql).column(0).to_pylist() == [first]
