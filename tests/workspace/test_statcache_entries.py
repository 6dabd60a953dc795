"""The stat cache's entry check, spelled out for speed, accepts exactly what the plain
definition does (a malformed entry must never be trusted)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlvc.core.ids import DIGEST_SIZE
from mlvc.workspace.statcache import _valid


def _reference(key, e) -> bool:
    return (
        isinstance(key, str)
        and isinstance(e, list)
        and len(e) == 6
        and all(type(v) is int and v >= 0 for v in e[:4])
        and isinstance(e[4], bytes)
        and len(e[4]) == DIGEST_SIZE
        and type(e[5]) is bool
    )


_value = st.one_of(
    st.integers(min_value=-3, max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=False),
    st.binary(min_size=DIGEST_SIZE - 1, max_size=DIGEST_SIZE + 1),
    st.text(max_size=3),
    st.none(),
)
_entry = st.one_of(
    st.lists(_value, min_size=0, max_size=7),
    st.tuples(
        st.integers(0, 2**40),
        st.integers(0, 2**62),
        st.integers(0, 2**40),
        st.integers(0, 2**62),
        st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE),
        st.booleans(),
    ).map(list),
    _value,
)


@given(key=st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=3)), e=_entry)
def test_entry_check_matches_its_definition(key, e):
    assert _valid(key, e) == _reference(key, e)
