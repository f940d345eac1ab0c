"""Expiring values under (resource id, kind), in RELOAD's three data models (RFC 6940 §7).

A store is all or nothing: an entry older (by the writer's `storage_time_ms`) than
the one held rejects the whole request, so a delayed retransmission or a stale
replica never rolls a value back. An equal time replaces, which makes replica
pushes idempotent. A lifetime of 0 removes the entry.

Each resource remembers who created it (the writer: the address it came from); one
writer may create at most a tenth of the resources a peer holds, so one client filling the
overlay is refused long before the others are. It also remembers its owner, the key that
signed its first entry (`access` decides what the owner may do).

An entry with an empty value and a lifetime is a tombstone: kept (and replicated) so that an
older value replayed loses, but not shown to readers.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from .errors import ErrorCode
from .limits import ENTRIES_PER_RESOURCE_MAX, STORED_BYTES_MAX, STORED_RESOURCES_MAX, WRITER_RESOURCES_MAX
from .wire.messages import ARRAY_APPEND, DataModel, Entry, EntryKey, Error, FetchAns, Store

Key = tuple[int, int]  # (resource id, kind)


@dataclass(slots=True)
class _Held:
    entry: Entry
    expires_ms: int


@dataclass(slots=True)
class _Resource:
    model: DataModel
    writer: str | None  # who created it; None for a copy pushed by a peer
    owner: bytes | None  # the key that signed its first entry
    entries: dict[EntryKey, _Held] = field(default_factory=dict)


class Storage:
    def __init__(self, resources_max: int = STORED_RESOURCES_MAX, bytes_max: int = STORED_BYTES_MAX,
                 writer_resources_max: int = WRITER_RESOURCES_MAX) -> None:
        self._resources_max = resources_max
        self._bytes_max = bytes_max
        self._writer_resources_max = writer_resources_max
        self._data: dict[Key, _Resource] = {}
        self._by_writer: Counter[str] = Counter()
        self.bytes_held = 0
        # Expiries in a heap (stale items skipped): a maintenance round costs what expires,
        # not a scan of all it holds (100,000 resources on a Pi, every second).
        self._expiries: list[tuple[int, int, Key, EntryKey]] = []  # (expires_ms, tie-breaker, key, entry key)
        self._pushed = 0
        self._entries_held = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> Iterator[Key]:
        return iter(list(self._data))

    def store(self, req: Store, *, now_ms: int, writer: str | None = None) -> tuple[Entry, ...] | Error:
        """The entries as stored (array appends get their index), or why not. `writer`: who
        asks (None: a peer's copy, which no writer's quota counts)."""
        key = (req.resource, req.kind)
        held = self._data.get(key)
        if held is not None and held.model is not req.model:
            return Error(ErrorCode.MODEL_MISMATCH, "kind is stored with another data model")
        if held is None and len(self._data) >= self._resources_max:
            return Error(ErrorCode.STORAGE_FULL, "storage full")
        if held is None and writer is not None and self._by_writer[writer] >= self._writer_resources_max:
            return Error(ErrorCode.QUOTA_EXCEEDED, "this writer's quota here is used up")
        entries = held.entries if held is not None else {}
        for e in req.entries:
            old = entries.get(e.key)
            if old is not None and old.entry.storage_time_ms > e.storage_time_ms:
                return Error(ErrorCode.DATA_TOO_OLD, "a newer value is stored")
        resolved = self._resolve_appends(req, entries)
        new_keys = {e.key for e in resolved if e.lifetime_s > 0} - entries.keys()
        if len(entries) + len(new_keys) > ENTRIES_PER_RESOURCE_MAX:
            return Error(ErrorCode.STORAGE_FULL, "too many entries under this resource")
        replaced = sum(len(entries[e.key].entry.value) for e in resolved if e.key in entries)
        added = sum(len(e.value) for e in resolved if e.lifetime_s > 0)
        if self.bytes_held - replaced + added > self._bytes_max:
            return Error(ErrorCode.STORAGE_FULL, "storage full")
        if held is None:
            first = req.entries[0].seal if req.entries else None
            held = self._data[key] = _Resource(req.model, writer, first.signer if first is not None else None)
            if writer is not None:
                self._by_writer[writer] += 1
        for e in resolved:
            old = held.entries.pop(e.key, None)
            if old is not None:
                self.bytes_held -= len(old.entry.value)
                self._entries_held -= 1
            if e.lifetime_s > 0:
                held.entries[e.key] = _Held(e, now_ms + e.lifetime_s * 1000)
                self.bytes_held += len(e.value)
                self._entries_held += 1
                self._expire_at(now_ms + e.lifetime_s * 1000, key, e.key)
        if not held.entries:
            self._drop(key)
        return resolved

    @staticmethod
    def _resolve_appends(req: Store, entries: dict[EntryKey, _Held]) -> tuple[Entry, ...]:
        if req.model is not DataModel.ARRAY:
            return req.entries
        next_index = max((k for k in entries if isinstance(k, int)), default=-1) + 1
        resolved = []
        for e in req.entries:
            if e.key == ARRAY_APPEND:
                e = Entry(next_index, e.value, e.storage_time_ms, e.lifetime_s, e.seal)
            if isinstance(e.key, int):
                next_index = max(next_index, e.key + 1)
            resolved.append(e)
        return tuple(resolved)

    def owner_of(self, key: Key) -> bytes | None:
        held = self._data.get(key)
        return held.owner if held is not None else None

    def signer_of(self, key: Key, entry_key: EntryKey) -> bytes | None:
        held = self._data.get(key)
        entry = held.entries.get(entry_key) if held is not None else None
        return entry.entry.seal.signer if entry is not None and entry.entry.seal is not None else None

    def signers(self, key: Key) -> set[bytes]:
        """The keys that sealed the entries held under `key` (tombstones' too)."""
        held = self._data.get(key)
        return {h.entry.seal.signer for h in held.entries.values() if h.entry.seal is not None} if held else set()

    def fetch(self, resource: int, kind: int, *, now_ms: int, tombstones: bool = False) -> FetchAns:
        held = self._data.get((resource, kind))
        if held is None:
            return FetchAns(None, ())
        live = tuple(self._remaining(h, now_ms) for h in held.entries.values()
                     if h.expires_ms > now_ms and (tombstones or h.entry.value))
        return FetchAns(held.model, live) if live else FetchAns(None, ())

    def as_store(self, key: Key, *, now_ms: int) -> Store | None:
        """A replica Store of everything held under `key`, tombstones too, lifetimes counted down."""
        answer = self.fetch(key[0], key[1], now_ms=now_ms, tombstones=True)
        if answer.model is None:
            return None
        return Store(key[0], key[1], answer.model, answer.entries, True)

    def _expire_at(self, expires_ms: int, key: Key, entry_key: EntryKey) -> None:
        self._pushed += 1
        heapq.heappush(self._expiries, (expires_ms, self._pushed, key, entry_key))
        if len(self._expiries) > 2 * self._entries_held + 64:  # replaced entries left stale items: compact
            self._expiries = []
            for k, r in self._data.items():
                for ek, h in r.entries.items():
                    self._pushed += 1
                    self._expiries.append((h.expires_ms, self._pushed, k, ek))
            heapq.heapify(self._expiries)

    def expire(self, *, now_ms: int) -> int:
        removed = 0
        while self._expiries and self._expiries[0][0] <= now_ms:
            expires_ms, _, key, entry_key = heapq.heappop(self._expiries)
            held = self._data.get(key)
            gone = held.entries.get(entry_key) if held is not None else None
            if held is None or gone is None or gone.expires_ms != expires_ms:
                continue  # replaced or removed since
            del held.entries[entry_key]
            self.bytes_held -= len(gone.entry.value)
            self._entries_held -= 1
            removed += 1
            if not held.entries:
                self._drop(key)
        return removed

    def _drop(self, key: Key) -> None:
        writer = self._data.pop(key).writer
        if writer is not None:
            self._by_writer[writer] -= 1
            if self._by_writer[writer] <= 0:
                del self._by_writer[writer]

    @staticmethod
    def _remaining(held: _Held, now_ms: int) -> Entry:
        e = held.entry
        lifetime_s = max(1, (held.expires_ms - now_ms + 999) // 1000)
        return Entry(e.key, e.value, e.storage_time_ms, lifetime_s, e.seal)
