"""The SIP usages' records (core/usages.py): what a front stores, read back as hostile bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.usages import OfflineMessage, RecordError, Registration


def test_a_registration_keeps_the_front_s_tls_port_and_a_record_without_one_reads_as_none():
    with_tls = Registration("sip:bob@10.0.0.2:5060", ("10.0.0.1", 5060), 0xABC, tls_port=5061)
    assert Registration.from_bytes(with_tls.to_bytes()) == with_tls
    plain = Registration("sip:bob@10.0.0.2:5060", ("10.0.0.1", 5060), 0xABC)
    assert b'"t"' not in plain.to_bytes() and Registration.from_bytes(plain.to_bytes()).tls_port == 0


@pytest.mark.parametrize("tls_port", [0, 65536, -1, "5061", True, 5061.0, None])
def test_a_registration_with_a_bad_tls_port_is_refused(tls_port):
    fields = json.loads(Registration("sip:bob@h", ("10.0.0.1", 5060), 1).to_bytes())
    fields["t"] = tls_port
    raw = json.dumps(fields).encode()
    if tls_port is None:  # null is the field's absence
        assert Registration.from_bytes(raw).tls_port == 0
    else:
        with pytest.raises(RecordError):
            Registration.from_bytes(raw)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                                max_size=4), max_leaves=12)
FIELDS = st.dictionaries(st.sampled_from("chpnrvtfb"), JSON, max_size=9)


@given(st.one_of(st.binary(max_size=300), FIELDS.map(lambda d: json.dumps(d).encode())))
@settings(max_examples=400, deadline=None)
def test_no_record_bytes_raise_anything_but_a_record_error(raw: bytes):
    for decode in (Registration.from_bytes, OfflineMessage.from_bytes):
        try:
            decode(raw)
        except RecordError:
            pass
