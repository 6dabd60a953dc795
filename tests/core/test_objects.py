"""Canonical encoding: golden vectors, round trips, refusal of bad input."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlvc.core.ids import ObjectId
from mlvc.core.objects import (
    DecodeError,
    Env,
    Run,
    Tree,
    TreeEntry,
    decode,
    encode,
    is_reserved_name,
    object_id,
)

A = ObjectId.of(b"a")
B = ObjectId.of(b"b")

# Golden vectors: if one of these changes, the object format changed. Bump FORMAT_VERSION.
GOLDEN_RUN_ID = "ec082076d508cf8574b23a5e2fd76f30c54f746edf8021de5848b292c84b5104"
EMPTY_TREE_ID = "65a4fe1f76aa5b1b644d77e94f76c9334cbab557c3a0ec8300a3bd66f786d5f6"


def test_blob_id_is_b3sum():
    # `printf 'hello\n' | b3sum`
    assert ObjectId.of(b"hello\n").hex == (
        "8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99"
    )


def test_golden_bytes():
    assert encode(Tree()).hex() == "93a4747265650190"
    assert object_id(Tree()).hex == EMPTY_TREE_ID
    tree = Tree.of([TreeEntry("b.txt", "file", B, 1), TreeEntry("a", "dir", A, 7)])
    assert encode(tree).hex() == (
        "93a474726565019294a161a3646972c420" + A.hex + "07"
        "94a5622e747874a466696c65c420" + B.hex + "01"
    )
    assert (
        encode(Env({"b": 1, "a": [1.5, True]})).hex()
        == "93a3656e760182a16192cb3ff8000000000000c3a16201"
    )


def test_golden_run_id_is_stable():
    run = Run(
        parents=(A,),
        name="n",
        message="m",
        author="x",
        started=1,
        ended=2,
        params={"lr": 0.1, "epochs": 3, "opt": "adam", "nesterov": False},
        metrics={"acc": 0.5},
        tags={"t": ""},
    )
    assert object_id(run).hex == GOLDEN_RUN_ID


def test_int_and_float_differ():
    assert object_id(Run(params={"x": 1})) != object_id(Run(params={"x": 1.0}))
    assert object_id(Run(params={"x": True})) != object_id(Run(params={"x": 1}))


def test_map_order_does_not_matter():
    assert encode(Run(params={"a": 1, "b": 2})) == encode(Run(params={"b": 2, "a": 1}))


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_unsafe_entry_names_refused(name):
    with pytest.raises(DecodeError):
        TreeEntry(name, "file", A, 0)


def test_unsorted_or_duplicate_tree_refused():
    with pytest.raises(DecodeError):
        Tree((TreeEntry("b", "file", A, 0), TreeEntry("a", "file", A, 0)))
    with pytest.raises(DecodeError):
        Tree((TreeEntry("a", "file", A, 0), TreeEntry("a", "file", B, 0)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x93\xa4tree\x02\x90",
        b"\x93\xa3zzz\x01\x90",
        b"\x91\x01",
        b"\x93\xa3run\x01\x81\xa3bad\x01",
    ],
)
def test_garbage_is_a_decode_error(data):
    with pytest.raises(DecodeError):
        decode(data)


def test_wrong_kind_refused():
    with pytest.raises(DecodeError, match="expected a run"):
        decode(encode(Tree()), expect=Run)


scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
keys = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=12)
names = keys.filter(lambda n: n not in (".", "..") and "/" not in n and not is_reserved_name(n))
ids = st.binary(min_size=32, max_size=32).map(ObjectId)


@given(
    st.lists(
        st.tuples(
            names, st.sampled_from(["file", "exec", "symlink", "dir"]), ids, st.integers(0, 2**40)
        ),
        max_size=20,
        unique_by=lambda t: t[0],
    )
)
def test_tree_round_trip(entries):
    tree = Tree.of(TreeEntry(*e) for e in entries)
    assert decode(encode(tree)) == tree
    assert encode(decode(encode(tree))) == encode(tree)


@given(
    params=st.dictionaries(keys, scalars, max_size=10),
    metrics=st.dictionaries(keys, st.floats(allow_nan=False), max_size=5),
    parents=st.lists(ids, max_size=3),
    code=st.none() | ids,
    msg=st.text(max_size=50),
)
def test_run_round_trip(params, metrics, parents, code, msg):
    run = Run(
        parents=tuple(parents),
        params=params,
        metrics=metrics,
        code=code,
        message=msg,
        command=("python", "train.py"),
        git={"commit": "abc", "dirty": True},
    )
    assert decode(encode(run)) == run


def test_nan_metric_round_trips():
    run = decode(encode(Run(metrics={"loss": math.nan})))
    assert math.isnan(run.metrics["loss"])
