"""The registrar's table (RFC 3261 §10.3): who is registered at this front, and how to reach
them. Sans-I/O, like the front that owns it.

Every question a REGISTER or a request asks of it costs O(1) (amortised), however full it is:
expiries sit in a heap, and the counts that bound it (in all, per AOR, per source host) are
kept as bindings come and go. One source host may hold at most half of the table, so a flood
from one address cannot lock the others out (issue 11). A phone is one binding per instance
(RFC 5626 §4.2: `+sip.instance` and `reg-id`): registering again from a new contact replaces
the old one.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable, Iterator, TypeVar

from .uri import Uri

if TYPE_CHECKING:
    from .front import Link

H = TypeVar("H", bound=Hashable)


@dataclass(eq=False)
class Binding:
    contact: str
    params: str  # the Contact's header parameters but expires, echoed in the 200 (+sip.instance...)
    link: Link  # how the front reaches the phone
    source: str  # the host (or tunnel node) the REGISTER came from: what the per-source bound counts
    expires_at_ms: int
    stored_until_ms: int  # when the overlay's copy of it lapses unless refreshed
    stamp_ms: int  # the storage time of that copy
    offline_checked_ms: int  # when we last looked for messages kept for it

    @property
    def instance(self) -> str:
        """The phone behind the binding (RFC 5626 §4.2), or "" when it does not say."""
        return instance_of(self.params)


def instance_of(params: str) -> str:
    found = {name.strip().lower(): value for name, _, value in (p.partition("=") for p in params.split(";"))}
    instance = found.get("+sip.instance", "")
    return f"{instance};reg-id={found.get('reg-id', '')}" if instance else ""


class Bindings:
    def __init__(self, total_max: int, per_aor_max: int) -> None:
        self._total_max = total_max
        self._per_aor_max = per_aor_max
        self._per_source_max = max(1, total_max // 2)
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._count = 0
        self._per_source: Counter[str] = Counter()
        self._contacts: Counter[tuple[str, int]] = Counter()  # (host, port) of registered contacts
        self._expiries: list[tuple[int, str, str]] = []  # (expires_at_ms, aor, contact), stale entries skipped

    def __len__(self) -> int:
        return self._count

    def live(self, aor: str, *, now_ms: int) -> dict[str, Binding]:
        """The AOR's bindings by contact (a copy: change them through `put` and `remove`)."""
        self.expire(now_ms)
        return dict(self._by_aor.get(aor, {}))

    def best(self, aor: str, *, now_ms: int) -> Binding | None:
        bindings = self.live(aor, now_ms=now_ms)
        return max(bindings.values(), key=lambda b: b.expires_at_ms) if bindings else None

    def refusal(self, aor: str, contacts: list[str], source: str, *, now_ms: int) -> str | None:
        """Why adding `contacts` to `aor` from `source` would break a bound, or None."""
        self.expire(now_ms)
        held = self._by_aor.get(aor, {})
        new = sum(1 for c in set(contacts) if c not in held)
        if len(held) + new > self._per_aor_max:
            return "too many contacts"
        if new and self._count + new > self._total_max:
            return "registrar full"
        if new and self._per_source[source] + new > self._per_source_max:
            return "too many registrations from one address"
        return None

    def put(self, aor: str, binding: Binding) -> None:
        self.remove(aor, binding.contact)
        self._by_aor.setdefault(aor, {})[binding.contact] = binding
        self._count += 1
        self._per_source[binding.source] += 1
        self._contacts[_host_port(binding.contact)] += 1
        heapq.heappush(self._expiries, (binding.expires_at_ms, aor, binding.contact))
        if len(self._expiries) > 2 * self._count + 64:  # refreshes leave stale entries: compact
            self._expiries = [(b.expires_at_ms, a, c) for a, bs in self._by_aor.items() for c, b in bs.items()]
            heapq.heapify(self._expiries)

    def remove(self, aor: str, contact: str) -> Binding | None:
        bindings = self._by_aor.get(aor)
        gone = bindings.pop(contact, None) if bindings is not None else None
        if gone is None:
            return None
        if not bindings:
            del self._by_aor[aor]
        self._count -= 1
        _decrement(self._per_source, gone.source)
        _decrement(self._contacts, _host_port(gone.contact))
        return gone

    def expire(self, now_ms: int) -> None:
        while self._expiries and self._expiries[0][0] <= now_ms:
            _, aor, contact = heapq.heappop(self._expiries)
            binding = self._by_aor.get(aor, {}).get(contact)
            if binding is not None and binding.expires_at_ms <= now_ms:
                self.remove(aor, contact)

    def aors(self) -> list[str]:
        return list(self._by_aor)

    def is_phone(self, source: str) -> bool:
        """A phone registered here sends from this host (behind a NAT: from that NAT)."""
        return self._per_source[source] > 0

    def is_contact(self, host: str, port: int) -> bool:
        """Some phone registered here gave this contact address."""
        return self._contacts[(host.lower(), port)] > 0

    def __iter__(self) -> Iterator[tuple[str, Binding]]:
        return ((aor, b) for aor, bs in self._by_aor.items() for b in bs.values())


def _host_port(contact: str) -> tuple[str, int]:
    uri = Uri.parse(contact)
    return uri.host.lower(), uri.port_or_default


def _decrement(counter: Counter[H], key: H) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
