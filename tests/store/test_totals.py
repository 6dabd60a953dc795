"""typed.totals: the file count and size of a stored tree, as walk would sum them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.core.objects import DIR, FILE, FORMAT_VERSION, SYMLINK, Tree, TreeEntry, decode
from mlvc.errors import CorruptObject
from mlvc.store.typed import totals, walk, write_object

names = st.text("abcxyz.-_é", min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
folders = st.recursive(
    st.integers(0, 2**40),  # a file of that size
    lambda inner: st.dictionaries(names, inner, min_size=1, max_size=5),
    max_leaves=40,
)


def store_tree(store, node: dict) -> ObjectId:
    entries = []
    for name, child in node.items():
        if isinstance(child, dict):
            entries.append(TreeEntry(name, DIR, store_tree(store, child), 0))
        else:
            kind = SYMLINK if child % 7 == 0 else FILE
            entries.append(TreeEntry(name, kind, store.add_bytes(name.encode()), child))
    return write_object(store, Tree.of(entries))


def by_walk(store, tree: ObjectId) -> tuple[int, int]:
    entries = list(walk(store, tree))
    return len(entries), sum(e.size for _, e in entries)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(names, folders, min_size=1, max_size=6))
def test_totals_equal_a_walks_sums(top):
    with tempfile.TemporaryDirectory() as d:
        store = Repo.init(Path(d)).store
        tree = store_tree(store, top)
        assert totals(store, tree) == by_walk(store, tree)


def test_a_subtree_met_twice_counts_twice(tmp_path):
    store = Repo.init(tmp_path).store
    same = {"x": 3, "y": {"z": 4}}
    tree = store_tree(store, {"a": same, "b": same, "c": {"d": same}, "e": 1})
    assert totals(store, tree) == (7, 22) == by_walk(store, tree)


def test_no_tree_is_nothing(tmp_path):
    assert totals(Repo.init(tmp_path).store, None) == (0, 0)


@pytest.mark.parametrize(
    "row",
    [
        ["a", "weird", bytes(32), 1],  # unknown kind
        ["a", FILE, bytes(31), 1],  # short id
        ["a", FILE, "x" * 32, 1],  # id as text
        ["a", FILE, bytes(32), -1],  # negative size
        ["a", FILE, bytes(32), 1.5],  # size not an int
        ["a", FILE, bytes(32)],  # a field missing
        7,  # not a row
    ],
)
def test_a_bad_tree_is_corrupt_for_totals_as_for_decode(tmp_path, row):
    store = Repo.init(tmp_path).store
    bad = store.add_bytes(msgpack.packb(["tree", FORMAT_VERSION, [row]], use_bin_type=True))
    top = write_object(store, Tree.of([TreeEntry("sub", DIR, bad, 0)]))
    with pytest.raises(CorruptObject, match=bad.hex):
        totals(store, top)
    with pytest.raises(Exception, match="bad|id|size|kind"):
        decode(store.read_bytes(bad), expect=Tree)


def test_not_a_tree_is_corrupt(tmp_path):
    store = Repo.init(tmp_path).store
    blob = store.add_bytes(b"just bytes")
    with pytest.raises(CorruptObject, match=blob.hex):
        totals(store, blob)
