"""`peerphone put`, `get` and `stat`, and the store of `ca revoke --via`: requests through a
peer, as a client attached to it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from ..core.errors import ErrorCode
from ..core.ids import id_from_name, short
from ..core.limits import LIFETIME_S_MAX, VALUE_BYTES_MAX
from ..core.revocation import REVOCATIONS, Revocation
from ..core.security import Authority
from ..core.usages import MODEL_OF, Kind
from ..core.wire.messages import ARRAY_APPEND, Addr, Entry, EntryKey, FetchAns
from ..net.udp import OverlayError
from .config import DEFAULT_PORT, ConfigError, parse_hostport
from .wiring import open_client

REQUEST_TIMEOUT_S = 10.0


def _kind_of(args: argparse.Namespace) -> Kind:
    if getattr(args, "append", False) or getattr(args, "list", False):
        return Kind.LIST
    if getattr(args, "dict_key", None) is not None or getattr(args, "map", False):
        return Kind.MAP
    return Kind.BLOB


async def put(args: argparse.Namespace) -> int:
    via = parse_hostport(args.via, DEFAULT_PORT)
    value = args.value.encode()
    if not 1 <= args.lifetime <= LIFETIME_S_MAX:
        raise ConfigError(f"--lifetime must be 1..{LIFETIME_S_MAX} seconds")
    if len(value) > VALUE_BYTES_MAX:
        raise ConfigError(f"VALUE must be at most {VALUE_BYTES_MAX} bytes")
    kind = _kind_of(args)
    key: EntryKey = {Kind.BLOB: None, Kind.LIST: ARRAY_APPEND,
                     Kind.MAP: (args.dict_key or "").encode()}[kind]
    entry = Entry(key, value, time.time_ns() // 1_000_000, args.lifetime)
    driver = await open_client(via, args.overlay, state_dir=args.state_dir)
    try:
        started = time.perf_counter()
        done = await asyncio.wait_for(driver.request(lambda node, now: node.store(
            id_from_name(args.key), kind, MODEL_OF[kind], [entry], now_ms=now)), REQUEST_TIMEOUT_S)
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        driver.close()
    if done.error is not None:
        hint = ""
        if done.error.code == ErrorCode.FORBIDDEN and args.state_dir is None:
            hint = " (the key that stored it first owns it; without --state-dir each run has a new key)"
        raise OverlayError(f"store failed: {done.error.reason}{hint}")
    print(f"stored {args.key!r} ({len(value)} bytes) in {done.hops} hops, {elapsed_ms:.2f} ms")
    return 0


async def publish_revocations(authority: Authority, state_dir: Path, via: Addr, overlay: str,
                              revocations: list[Revocation]) -> None:
    """Store each revocation, sealed by the authority, through the peer at `via`."""
    driver = await open_client(via, overlay, state_dir=state_dir)
    try:
        for count, revocation in enumerate(revocations, 1):
            entry = revocation.entry(time.time_ns() // 1_000_000, LIFETIME_S_MAX)
            done = await asyncio.wait_for(driver.request(lambda node, now: node.store(
                REVOCATIONS, Kind.REVOCATION, MODEL_OF[Kind.REVOCATION], [entry], now_ms=now, signer=authority)),
                REQUEST_TIMEOUT_S)
            if done.error is not None:
                raise OverlayError(f"store of revocation {revocation.serial:x} failed: {done.error.reason}")
            print(f"stored revocation {count}/{len(revocations)}: serial {revocation.serial:x}, node id "
                  f"{revocation.node_id:040x}", file=sys.stderr)
    finally:
        driver.close()


def _entry_order(entry: Entry) -> tuple[int, bytes]:
    return (entry.key, b"") if isinstance(entry.key, int) else (0, entry.key or b"")


def _shown(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.hex()


async def get(args: argparse.Namespace) -> int:
    via = parse_hostport(args.via, DEFAULT_PORT)
    kind = _kind_of(args)
    driver = await open_client(via, args.overlay, state_dir=args.state_dir)
    try:
        started = time.perf_counter()
        done = await asyncio.wait_for(driver.request(lambda node, now: node.fetch(
            id_from_name(args.key), kind, now_ms=now)), REQUEST_TIMEOUT_S)
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        driver.close()
    if done.error is not None:
        raise OverlayError(f"fetch failed: {done.error.reason}")
    assert isinstance(done.answer, FetchAns)
    if not done.answer.entries:
        print(f"peerphone: {args.key!r} not found", file=sys.stderr)
        return 1
    if kind is Kind.BLOB:
        print(_shown(done.answer.entries[0].value))
    else:
        for entry in sorted(done.answer.entries, key=_entry_order):
            label = entry.key if isinstance(entry.key, int) else _shown(entry.key or b"")
            print(f"{label}: {_shown(entry.value)}")
    signers = sorted({e.seal.signer.hex()[:16] for e in done.answer.entries if e.seal is not None})
    print(f"({done.hops} hops, {elapsed_ms:.2f} ms, signed by {', '.join(signers)})", file=sys.stderr)
    return 0


async def stat(args: argparse.Namespace) -> int:
    via = parse_hostport(args.via, DEFAULT_PORT)
    driver = await open_client(via, args.overlay, state_dir=args.state_dir)
    try:
        s = await driver.stat(via)
    finally:
        driver.close()
    print(f"node        {s.node_id:040x}")
    counters = dict(s.counters)
    print(f"role        {'client' if counters.get('client') else 'peer'}"
          + (f", {counters['clients']} clients attached" if counters.get("clients") else ""))
    print(f"predecessor {'-' if s.pred is None else format(s.pred, '040x')}")
    print(f"successors  {' '.join(short(x) for x in s.successors)}")
    print(f"fingers     {len(s.fingers)} distinct: {' '.join(short(x) for x in s.fingers)}")
    print(f"values      {s.values} stored, {s.replication_pending} replica pushes pending")
    for name, value in s.counters:
        print(f"  {name:<24} {value}")
    return 0
