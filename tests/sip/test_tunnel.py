"""The Tunnel's fragmentation and reassembly, pure: bounds, order, expiry, hostile parts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.limits import TUNNEL_BYTES_MAX
from peerphone.sip import tunnel
from peerphone.sip.message import MESSAGE_BYTES_MAX

ID = b"\x01" * 8


@given(st.binary(min_size=1, max_size=MESSAGE_BYTES_MAX), st.randoms(use_true_random=False))
@settings(max_examples=200)
def test_every_message_comes_back_whole_in_any_order_from_parts_that_fit_a_tunnel(data, rng):
    parts = tunnel.split(data, ID)
    assert all(len(p) <= TUNNEL_BYTES_MAX for p in parts)
    rng.shuffle(parts)
    r = tunnel.Reassembler()
    results = [r.add(7, p, now_ms=0) for p in parts]
    assert results[:-1] == [None] * (len(parts) - 1) and results[-1] == data
    assert len(r) == 0


def test_split_refuses_what_cannot_be_carried():
    for data, message_id in ((b"", ID), (b"x" * (MESSAGE_BYTES_MAX + 1), ID), (b"x", b"short")):
        with pytest.raises(ValueError):
            tunnel.split(data, message_id)


def test_parts_of_different_origins_or_ids_never_mix():
    a, b = tunnel.split(b"a" * 1500, ID), tunnel.split(b"b" * 1500, b"\x02" * 8)
    r = tunnel.Reassembler()
    assert r.add(1, a[0], now_ms=0) is None and r.add(2, a[1], now_ms=0) is None  # same id, other origin
    assert r.add(1, b[0], now_ms=0) is None and r.add(1, b[1], now_ms=0) is None
    assert r.add(1, a[1], now_ms=0) is None and r.add(1, a[2], now_ms=0) == b"a" * 1500


def test_hostile_parts_are_dropped_and_counted():
    r = tunnel.Reassembler()
    good = tunnel.split(b"x" * 1000, ID)
    assert r.add(1, b"short", now_ms=0) is None
    assert r.add(1, ID + bytes((2, 2)) + b"x", now_ms=0) is None  # index beyond count
    assert r.add(1, ID + bytes((0, tunnel.PARTS_MAX + 1)) + b"x", now_ms=0) is None  # more parts than a message needs
    assert r.add(1, good[0], now_ms=0) is None
    assert r.add(1, ID + bytes((1, 3)) + b"x", now_ms=0) is None  # disagrees with its first part's count
    assert r.counters["sip dropped: bad tunnel part"] == 4
    assert r.add(1, good[1], now_ms=0) == b"x" * 1000


def test_reassembly_is_bounded_in_count_and_in_time():
    r = tunnel.Reassembler()
    for i in range(tunnel.REASSEMBLIES_MAX + 5):
        r.add(1, tunnel.split(b"y" * 1000, i.to_bytes(8, "big"))[0], now_ms=0)
    assert len(r) == tunnel.REASSEMBLIES_MAX and r.counters["sip dropped: too many tunnelled messages"] == 5
    r.expire(now_ms=tunnel.REASSEMBLY_TIMEOUT_MS - 1)
    assert len(r) == tunnel.REASSEMBLIES_MAX
    r.expire(now_ms=tunnel.REASSEMBLY_TIMEOUT_MS)
    assert len(r) == 0 and r.counters["sip dropped: tunnelled message incomplete"] == tunnel.REASSEMBLIES_MAX
