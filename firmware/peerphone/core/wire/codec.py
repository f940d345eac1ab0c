"""The one msgpack codec of the peer protocol (STYLE.md habit 3).

Every byte from the network is hostile: the unpacker runs with every limit set,
trailing bytes are rejected, each field is checked for type and size, and every
failure, whatever raised it, leaves as one `DecodeError` with a reason word.
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack

from ..errors import DecodeError, LocalProtocolError
from ..ids import ID_BYTES
from ..limits import (
    BODY_ITEMS_MAX,
    CERTIFICATE_BYTES_MAX,
    DATAGRAM_BYTES_MAX,
    DEST_ENTRIES_MAX,
    DICT_KEY_BYTES_MAX,
    ENTRIES_PER_RESOURCE_MAX,
    HOST_CHARS_MAX,
    LIFETIME_S_MAX,
    PROOF_PADDING_BYTES,
    PROTOCOL_VERSION,
    PUBLIC_KEY_BYTES,
    REASON_CHARS_MAX,
    SIGNATURE_BYTES,
    SIGNATURE_BYTES_MAX,
    STAT_ITEMS_PER_PAGE,
    STAT_NAME_CHARS_MAX,
    TTL_INITIAL,
    TUNNEL_BYTES_MAX,
    VALUE_BYTES_MAX,
    VIA_ENTRIES_MAX,
)
from .messages import (
    EMPTY,
    Announce,
    AttachAns,
    Body,
    Closest,
    ClosestAns,
    Code,
    DataModel,
    Dest,
    DestKind,
    Empty,
    Entry,
    EntryKey,
    Error,
    Fetch,
    FetchAns,
    FindAns,
    JoinAns,
    Leave,
    Members,
    MembersAns,
    Message,
    NodeInfo,
    Proof,
    Prove,
    Seal,
    Stat,
    StatAns,
    Store,
    StoreAns,
    Tunnel,
    UpdateAns,
)

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_TIME_MS_MAX = 1 << 53
_CODES = {c.value: c for c in Code}

_UNPACK_LIMITS: dict[str, Any] = dict(
    raw=False,
    use_list=True,
    strict_map_key=True,
    max_bin_len=DATAGRAM_BYTES_MAX,
    max_str_len=DATAGRAM_BYTES_MAX,
    max_array_len=max(BODY_ITEMS_MAX, VIA_ENTRIES_MAX, DEST_ENTRIES_MAX, ENTRIES_PER_RESOURCE_MAX),
    max_map_len=0,
    max_ext_len=0,
)


# -- field checks: each returns the checked value or raises DecodeError("field") --

def _fail() -> Any:
    raise DecodeError("field")


def _uint(x: Any, hi: int) -> int:
    if type(x) is not int or not 0 <= x <= hi:
        _fail()
    return x  # type: ignore[no-any-return]


def _bin(x: Any, size_max: int) -> bytes:
    if type(x) is not bytes or len(x) > size_max:
        _fail()
    return x  # type: ignore[no-any-return]


def _str(x: Any, chars_max: int) -> str:
    if type(x) is not str or len(x) > chars_max:
        _fail()
    return x  # type: ignore[no-any-return]


def _array(x: Any, n_max: int, n_min: int = 0) -> list[Any]:
    if type(x) is not list or not n_min <= len(x) <= n_max:
        _fail()
    return x  # type: ignore[no-any-return]


def _fixed(x: Any, n: int) -> list[Any]:
    return _array(x, n, n)


def _bool(x: Any) -> bool:
    if type(x) is not bool:
        _fail()
    return x  # type: ignore[no-any-return]


def _id(x: Any) -> int:
    if type(x) is not bytes or len(x) != ID_BYTES:
        _fail()
    return int.from_bytes(x, "big")


def _enc_id(node_id: int) -> bytes:
    return node_id.to_bytes(ID_BYTES, "big")


def _opt(decode: Callable[[Any], Any], x: Any) -> Any:
    return None if x is None else decode(x)


def _node(x: Any) -> NodeInfo:
    node_id, host, port = _fixed(x, 3)
    return NodeInfo(_id(node_id), (_str(host, HOST_CHARS_MAX), _uint(port, 0xFFFF)))


def _addr(x: Any) -> tuple[str, int]:
    host, port = _fixed(x, 2)
    return _str(host, HOST_CHARS_MAX), _uint(port, 0xFFFF)


def _enc_node(n: NodeInfo | None) -> Any:
    return None if n is None else [_enc_id(n.node_id), n.addr[0], n.addr[1]]


def _nodes(x: Any) -> tuple[NodeInfo, ...]:
    return tuple(_node(n) for n in _array(x, BODY_ITEMS_MAX))


_MODELS = {m.value: m for m in DataModel}


def _model(x: Any) -> DataModel:
    model = _MODELS.get(x) if type(x) is int else None
    return model if model is not None else _fail()


def _entry(x: Any, model: DataModel) -> Entry:
    key, value, storage_time, lifetime, seal = _fixed(x, 5)
    checked_key: EntryKey
    if model is DataModel.SINGLE:
        checked_key = None if key is None else _fail()
    elif model is DataModel.ARRAY:
        checked_key = _uint(key, _U32)
    else:
        checked_key = _bin(key, DICT_KEY_BYTES_MAX)
    return Entry(checked_key, _bin(value, VALUE_BYTES_MAX), _uint(storage_time, _TIME_MS_MAX),
                 _uint(lifetime, LIFETIME_S_MAX), _opt(_seal, seal))


def _seal(x: Any) -> Seal:
    signer, lifetime, signature = _fixed(x, 3)
    if type(signer) is not bytes or len(signer) != PUBLIC_KEY_BYTES or type(signature) is not bytes \
            or len(signature) != SIGNATURE_BYTES:
        _fail()
    return Seal(signer, _uint(lifetime, LIFETIME_S_MAX), signature)


def _entries(x: Any, model: DataModel) -> tuple[Entry, ...]:
    return tuple(_entry(e, model) for e in _array(x, ENTRIES_PER_RESOURCE_MAX))


def _enc_entries(entries: tuple[Entry, ...]) -> list[Any]:
    return [[e.key, e.value, e.storage_time_ms, e.lifetime_s,
             None if e.seal is None else [e.seal.signer, e.seal.lifetime_s, e.seal.signature]] for e in entries]


# -- bodies: one decoder per code, one encoder per body type (explicit tables) --

def _empty(x: Any) -> Empty:
    _fixed(x, 0)
    return EMPTY


def _join_ans(x: Any) -> JoinAns:
    responder, pred, successors = _fixed(x, 3)
    return JoinAns(_node(responder), _opt(_node, pred), _nodes(successors))


def _update_ans(x: Any) -> UpdateAns:
    pred, successors = _fixed(x, 2)
    return UpdateAns(_opt(_node, pred), _nodes(successors))


def _leave(x: Any) -> Leave:
    pred, successors = _fixed(x, 2)
    return Leave(_opt(_node, pred), _nodes(successors))


def _find_ans(x: Any) -> FindAns:
    (responder,) = _fixed(x, 1)
    return FindAns(_node(responder))


def _store(x: Any) -> Store:
    resource, kind, model, entries, replica = _fixed(x, 5)
    checked_model = _model(model)
    return Store(_id(resource), _uint(kind, _U32), checked_model, _entries(entries, checked_model),
                 _bool(replica))


def _store_ans(x: Any) -> StoreAns:
    (stored,) = _fixed(x, 1)
    return StoreAns(_uint(stored, ENTRIES_PER_RESOURCE_MAX))


def _fetch(x: Any) -> Fetch:
    resource, kind = _fixed(x, 2)
    return Fetch(_id(resource), _uint(kind, _U32))


def _fetch_ans(x: Any) -> FetchAns:
    model, entries = _fixed(x, 2)
    if model is None:
        return FetchAns(None, tuple(_array(entries, 0)))
    checked_model = _model(model)
    return FetchAns(checked_model, _entries(entries, checked_model))


def _counter(x: Any) -> tuple[str, int]:
    name, value = _fixed(x, 2)
    return _str(name, STAT_NAME_CHARS_MAX), _uint(value, _U64)


def _stat(x: Any) -> Stat:
    (page,) = _fixed(x, 1)
    return Stat(_uint(page, 0xFFFF))


def _stat_ans(x: Any) -> StatAns:
    node_id, pred, successors, fingers, values, pending, counters, page, pages = _fixed(x, 9)
    return StatAns(
        _id(node_id),
        _opt(_id, pred),
        tuple(_id(s) for s in _array(successors, BODY_ITEMS_MAX)),
        tuple(_id(f) for f in _array(fingers, BODY_ITEMS_MAX)),
        _uint(values, _U64),
        _uint(pending, _U64),
        tuple(_counter(c) for c in _array(counters, STAT_ITEMS_PER_PAGE)),
        _uint(page, 0xFFFF),
        _uint(pages, 0xFFFF),
    )


def _announce(x: Any) -> Announce:
    joined, failed = _fixed(x, 2)
    return Announce(_nodes(joined), tuple(_id(f) for f in _array(failed, BODY_ITEMS_MAX)))


def _members(x: Any) -> Members:
    (page,) = _fixed(x, 1)
    return Members(_uint(page, 0xFFFF))


def _members_ans(x: Any) -> MembersAns:
    page, pages, nodes = _fixed(x, 3)
    return MembersAns(_uint(page, 0xFFFF), _uint(pages, 0xFFFF), _nodes(nodes))


def _closest(x: Any) -> Closest:
    (target,) = _fixed(x, 1)
    return Closest(_id(target))


def _closest_ans(x: Any) -> ClosestAns:
    (nodes,) = _fixed(x, 1)
    return ClosestAns(_nodes(nodes))


def _tunnel(x: Any) -> Tunnel:
    payload, reply_via = _fixed(x, 2)
    return Tunnel(_bin(payload, TUNNEL_BYTES_MAX), _opt(_id, reply_via))


def _attach_ans(x: Any) -> AttachAns:
    keepalive, alternates = _fixed(x, 2)
    return AttachAns(_uint(keepalive, 3600), _nodes(alternates))


def _prove(x: Any) -> Prove:
    (padding,) = _fixed(x, 1)
    return Prove(_bin(padding, PROOF_PADDING_BYTES))


def _proof(x: Any) -> Proof:
    certificate, signature = _fixed(x, 2)
    return Proof(_bin(certificate, CERTIFICATE_BYTES_MAX), _bin(signature, SIGNATURE_BYTES_MAX))


def _error(x: Any) -> Error:
    code, reason = _fixed(x, 2)
    return Error(_uint(code, 0xFFFF), _str(reason, REASON_CHARS_MAX))


_BODY_DECODERS: dict[Code, Callable[[Any], Body]] = {
    Code.PING: _empty,
    Code.PING_ANS: _empty,
    Code.JOIN: _empty,
    Code.JOIN_ANS: _join_ans,
    Code.LEAVE: _leave,
    Code.LEAVE_ANS: _empty,
    Code.UPDATE: _empty,
    Code.UPDATE_ANS: _update_ans,
    Code.FIND: _empty,
    Code.FIND_ANS: _find_ans,
    Code.STORE: _store,
    Code.STORE_ANS: _store_ans,
    Code.FETCH: _fetch,
    Code.FETCH_ANS: _fetch_ans,
    Code.STAT: _stat,
    Code.STAT_ANS: _stat_ans,
    Code.HOP_ACK: _empty,
    Code.ANNOUNCE: _announce,
    Code.ANNOUNCE_ANS: _empty,
    Code.MEMBERS: _members,
    Code.MEMBERS_ANS: _members_ans,
    Code.CLOSEST: _closest,
    Code.CLOSEST_ANS: _closest_ans,
    Code.TUNNEL: _tunnel,
    Code.TUNNEL_ANS: _empty,
    Code.ATTACH: _empty,
    Code.ATTACH_ANS: _attach_ans,
    Code.REACH: _empty,
    Code.REACH_ANS: _empty,
    Code.REACH_BACK: _empty,
    Code.PROVE: _prove,
    Code.PROVE_ANS: _proof,
    Code.ERROR: _error,
}



def _encode_body(body: Body) -> list[Any]:
    if isinstance(body, Empty):
        return []
    if isinstance(body, (JoinAns,)):
        return [_enc_node(body.responder), _enc_node(body.pred), [_enc_node(n) for n in body.successors]]
    if isinstance(body, (UpdateAns, Leave)):
        return [_enc_node(body.pred), [_enc_node(n) for n in body.successors]]
    if isinstance(body, FindAns):
        return [_enc_node(body.responder)]
    if isinstance(body, Store):
        return [_enc_id(body.resource), body.kind, int(body.model), _enc_entries(body.entries), body.replica]
    if isinstance(body, StoreAns):
        return [body.stored]
    if isinstance(body, Fetch):
        return [_enc_id(body.resource), body.kind]
    if isinstance(body, FetchAns):
        return [None if body.model is None else int(body.model), _enc_entries(body.entries)]
    if isinstance(body, StatAns):
        return [
            _enc_id(body.node_id),
            None if body.pred is None else _enc_id(body.pred),
            [_enc_id(s) for s in body.successors],
            [_enc_id(f) for f in body.fingers],
            body.values,
            body.replication_pending,
            [list(c) for c in body.counters],
            body.page,
            body.pages,
        ]
    if isinstance(body, Stat):
        return [body.page]
    if isinstance(body, Announce):
        return [[_enc_node(n) for n in body.joined], [_enc_id(f) for f in body.failed]]
    if isinstance(body, Members):
        return [body.page]
    if isinstance(body, MembersAns):
        return [body.page, body.pages, [_enc_node(n) for n in body.nodes]]
    if isinstance(body, Closest):
        return [_enc_id(body.target)]
    if isinstance(body, ClosestAns):
        return [[_enc_node(n) for n in body.nodes]]
    if isinstance(body, Tunnel):
        return [body.payload, None if body.reply_via is None else _enc_id(body.reply_via)]
    if isinstance(body, AttachAns):
        return [body.keepalive_s, [_enc_node(n) for n in body.alternates]]
    if isinstance(body, Prove):
        return [body.padding]
    if isinstance(body, Proof):
        return [body.certificate, body.signature]
    if isinstance(body, Error):
        return [body.code, body.reason]
    raise LocalProtocolError(f"no encoder for {type(body).__name__}")


def encode(msg: Message, overlay_id: int) -> bytes:
    """Bytes of `msg`; a message that would not fit one datagram is a local error."""
    data: bytes = msgpack.packb(
        [
            PROTOCOL_VERSION,
            overlay_id,
            msg.ttl,
            [_enc_id(v) for v in msg.via],
            [[int(d.kind), _enc_id(d.id)] for d in msg.dest],
            msg.txid,
            int(msg.code),
            _encode_body(msg.body),
            msg.signature,
            None if msg.reply_to is None else list(msg.reply_to),
            msg.hop_ack,
        ],
        use_bin_type=True,
    )
    return data


def _dest(x: Any) -> Dest:
    kind, dest_id = _fixed(x, 2)
    if kind not in (0, 1) or type(kind) is not int:
        _fail()
    return Dest(DestKind(kind), _id(dest_id))


def _decode_checked(data: bytes, overlay_id: int) -> Message:
    if len(data) > DATAGRAM_BYTES_MAX:
        raise DecodeError("oversize")
    try:
        obj = msgpack.unpackb(data, **_UNPACK_LIMITS)
    except Exception:  # msgpack raises many types, all of them mean "not a message"
        raise DecodeError("malformed") from None
    if type(obj) is not list or len(obj) != 11:
        raise DecodeError("envelope")
    version, overlay, ttl, via, dest, txid, code, body, signature, reply_to, hop_ack = obj
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise DecodeError("version")
    if overlay != overlay_id or type(overlay) is not int:
        raise DecodeError("overlay")
    checked_code = _CODES.get(code) if type(code) is int else None
    if checked_code is None:
        raise DecodeError("code")
    return Message(
        ttl=_uint(ttl, TTL_INITIAL),
        via=tuple(_id(v) for v in _array(via, VIA_ENTRIES_MAX)),
        dest=tuple(_dest(d) for d in _array(dest, DEST_ENTRIES_MAX)),
        txid=_uint(txid, _U64),
        code=checked_code,
        body=_BODY_DECODERS[checked_code](body),
        signature=_opt(lambda s: _bin(s, SIGNATURE_BYTES_MAX), signature),
        reply_to=_opt(_addr, reply_to),
        hop_ack=_bool(hop_ack),
    )


def decode(data: bytes, overlay_id: int) -> Message:
    """The message in `data`, or DecodeError; nothing else ever leaves this function."""
    try:
        return _decode_checked(data, overlay_id)
    except DecodeError:
        raise
    except Exception:  # a check we did not foresee must still not crash the peer
        raise DecodeError("field") from None




def check_body(code: Code, body: Body) -> int:
    """The bytes `body` takes in a message; DecodeError if a peer would refuse it as the
    body of `code` (the bounds of the decoder, checked on what we are about to send)."""
    try:
        packed: bytes = msgpack.packb(_encode_body(body))
        _BODY_DECODERS[code](msgpack.unpackb(packed, **_UNPACK_LIMITS))
    except DecodeError:
        raise
    except Exception:
        raise DecodeError("field") from None
    return len(packed)
