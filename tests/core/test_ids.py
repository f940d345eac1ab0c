from hypothesis import given
from hypothesis import strategies as st
from peerphone.core.ids import (
    ID_MAX,
    RING,
    distance,
    id_from_bytes,
    id_from_name,
    id_to_bytes,
    in_half_open,
    in_open,
    overlay_id_from_name,
)

ids = st.integers(0, ID_MAX)


def test_id_of_a_name_is_its_sha1():
    assert f"{id_from_name('abc'):040x}" == "a9993e364706816aba3e25717850c26c9cd0d89d"


def test_intervals_with_literal_values():
    assert in_half_open(5, 1, 5) and not in_half_open(1, 1, 5)
    assert in_open(3, 1, 5) and not in_open(5, 1, 5)
    # wrapping past zero
    assert in_half_open(0, ID_MAX - 1, 3) and in_half_open(ID_MAX, ID_MAX - 1, 3)
    assert not in_half_open(4, ID_MAX - 1, 3)
    # (a, a] is the whole ring, (a, a) all of it but a
    assert in_half_open(7, 9, 9) and in_half_open(9, 9, 9)
    assert in_open(7, 9, 9) and not in_open(9, 9, 9)


@given(ids, ids, ids)
def test_half_open_matches_walking_clockwise(x, a, b):
    expected = a == b or 0 < distance(a, x) <= distance(a, b)
    assert in_half_open(x, a, b) == expected


@given(ids)
def test_bytes_round_trip(x):
    assert id_from_bytes(id_to_bytes(x)) == x and len(id_to_bytes(x)) == 20


def test_overlay_ids_differ_by_name():
    assert overlay_id_from_name("a") != overlay_id_from_name("b")
    assert 0 <= overlay_id_from_name("peerphone.local") < 2**32
    assert RING == 2**160
