"""Storage with literal times: the three data models, ordering, lifetimes and bounds."""

from peerphone.core.errors import ErrorCode
from peerphone.core.storage import Storage
from peerphone.core.wire.messages import ARRAY_APPEND, DataModel, Entry, Error, Store


def store(model, *entries, resource=1, kind=1):
    return Store(resource, kind, model, tuple(entries), False)


def test_single_value_newer_replaces_older_is_refused():
    s = Storage()
    assert s.store(store(DataModel.SINGLE, Entry(None, b"a", 10, 60)), now_ms=0)
    assert s.store(store(DataModel.SINGLE, Entry(None, b"b", 20, 60)), now_ms=0)
    refused = s.store(store(DataModel.SINGLE, Entry(None, b"c", 15, 60)), now_ms=0)
    assert isinstance(refused, Error) and refused.code == ErrorCode.DATA_TOO_OLD
    assert [e.value for e in s.fetch(1, 1, now_ms=0).entries] == [b"b"]


def test_array_append_gets_the_next_index():
    s = Storage()
    first = s.store(store(DataModel.ARRAY, Entry(ARRAY_APPEND, b"x", 1, 60)), now_ms=0)
    second = s.store(store(DataModel.ARRAY, Entry(ARRAY_APPEND, b"y", 2, 60), Entry(ARRAY_APPEND, b"z", 2, 60)),
                     now_ms=0)
    assert [e.key for e in first] == [0] and [e.key for e in second] == [1, 2]
    assert sorted(e.value for e in s.fetch(1, 1, now_ms=0).entries) == [b"x", b"y", b"z"]


def test_dictionary_and_model_mismatch():
    s = Storage()
    s.store(store(DataModel.DICTIONARY, Entry(b"k1", b"1", 1, 60), Entry(b"k2", b"2", 1, 60)), now_ms=0)
    assert {e.key: e.value for e in s.fetch(1, 1, now_ms=0).entries} == {b"k1": b"1", b"k2": b"2"}
    mismatch = s.store(store(DataModel.SINGLE, Entry(None, b"v", 5, 60)), now_ms=0)
    assert isinstance(mismatch, Error) and mismatch.code == ErrorCode.MODEL_MISMATCH


def test_lifetimes_count_down_and_expire():
    s = Storage()
    s.store(store(DataModel.SINGLE, Entry(None, b"v", 1, 10)), now_ms=1000)
    assert s.fetch(1, 1, now_ms=4500).entries[0].lifetime_s == 7  # remaining, rounded up
    assert s.fetch(1, 1, now_ms=11_000).model is None
    assert s.expire(now_ms=11_000) == 1 and len(s) == 0


def test_lifetime_zero_removes():
    s = Storage()
    s.store(store(DataModel.SINGLE, Entry(None, b"v", 1, 10)), now_ms=0)
    s.store(store(DataModel.SINGLE, Entry(None, b"", 2, 0)), now_ms=0)
    assert len(s) == 0


def test_resources_are_bounded():
    s = Storage(resources_max=2)
    for r in (1, 2):
        assert not isinstance(s.store(store(DataModel.SINGLE, Entry(None, b"v", 1, 10), resource=r), now_ms=0), Error)
    full = s.store(store(DataModel.SINGLE, Entry(None, b"v", 1, 10), resource=3), now_ms=0)
    assert isinstance(full, Error) and full.code == ErrorCode.STORAGE_FULL


def test_bytes_are_bounded_and_accounted():
    s = Storage(bytes_max=10)
    assert not isinstance(s.store(store(DataModel.SINGLE, Entry(None, b"123456", 1, 10)), now_ms=0), Error)
    full = s.store(store(DataModel.SINGLE, Entry(None, b"12345", 1, 10), resource=2), now_ms=0)
    assert isinstance(full, Error) and full.code == ErrorCode.STORAGE_FULL
    assert not isinstance(s.store(store(DataModel.SINGLE, Entry(None, b"1234567890", 2, 10)), now_ms=0), Error)
    assert s.bytes_held == 10  # the replaced value no longer counts
    s.expire(now_ms=10_000)
    assert s.bytes_held == 0


def test_a_refreshed_entry_expires_with_its_new_lifetime_and_refreshes_keep_the_expiry_queue_bounded():
    s = Storage()
    s.store(store(DataModel.DICTIONARY, Entry(b"k", b"a", 1, 10)), now_ms=0)
    s.store(store(DataModel.DICTIONARY, Entry(b"j", b"b", 1, 10), resource=2), now_ms=0)
    for t in range(2, 1000):  # refreshed a thousand times
        s.store(store(DataModel.DICTIONARY, Entry(b"k", b"a", t, 100)), now_ms=t)
    assert len(s._expiries) <= 2 * 2 + 64
    assert s.expire(now_ms=10_000) == 1 and [e.key for e in s.fetch(1, 1, now_ms=10_000).entries] == [b"k"]
    assert s.expire(now_ms=100_998) == 0 and s.expire(now_ms=100_999) == 1 and len(s) == 0 and s.bytes_held == 0
