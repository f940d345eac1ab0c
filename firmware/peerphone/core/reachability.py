"""Can a stranger reach this node? The role policy's third input (core/role.py).

A node that others cannot reach unsolicited (behind a NAT, or a firewall that lets in only
answers) is a poor peer: its neighbours' requests are lost whenever no datagram of its own
opened the way. It cannot find that out alone. It asks a neighbour (a client, its admitting
peer) with a REACH; the neighbour answers as usual, and sends one REACH_BACK datagram from a
second socket, a port the asking node has never sent to: the filtering test of RFC 5780
§4.4 ("change port"), without a STUN server. The answer without the REACH_BACK within
REACH_WAIT_MS is a miss; REACH_MISSES misses in a row (the next test follows a miss soon)
say: unreachable, so that one REACH_BACK lost on a lossy link does not. A neighbour that does
not answer says nothing; the test is tried again soon.

The neighbour sends REACH_BACK only to the address the REACH came from, one datagram no
larger than the request: nobody can aim it at a third party or amplify with it.
"""

from __future__ import annotations

from .limits import REACH_MISSES, REACH_WAIT_MS


class Reachability:
    def __init__(self, period_ms: int, retry_ms: int) -> None:
        self.period_ms, self.retry_ms = period_ms, retry_ms
        self.reachable: bool | None = None  # None: not found out yet
        self.due_ms: int | None = None  # when to ask next; None: not asking
        self._txid: int | None = None  # the REACH out, whose REACH_BACK we wait for
        self._came_back = False
        self._wait_until_ms: int | None = None
        self._misses = 0

    def schedule(self, at_ms: int | None) -> None:
        self.due_ms = at_ms

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for d in (self.due_ms, self._wait_until_ms) if d is not None]
        return min(deadlines) if deadlines else None

    def asked(self, txid: int | None, now_ms: int) -> None:
        """A REACH went out (`txid`; None: nobody to ask now)."""
        self._txid, self._came_back, self._wait_until_ms = txid, False, None
        self.due_ms = now_ms + (self.period_ms if txid is not None else self.retry_ms)

    def answered(self, now_ms: int) -> None:
        """The neighbour answered: its REACH_BACK came already, or may take REACH_WAIT_MS more."""
        if not self._came_back and self._txid is not None:
            self._wait_until_ms = now_ms + REACH_WAIT_MS

    def not_answered(self, now_ms: int) -> None:
        """The neighbour stayed silent: nothing learnt, ask again sooner."""
        if not self._came_back:
            self._txid = None
            self.due_ms = now_ms + self.retry_ms

    def came_back(self, txid: int) -> bool:
        """A REACH_BACK: True when it answers our REACH (so we are reachable)."""
        if txid != self._txid or self._txid is None:
            return False
        self._came_back, self._wait_until_ms, self.reachable, self._misses = True, None, True, 0
        return True

    def expire(self, now_ms: int) -> bool:
        """True when the wait for the REACH_BACK ended now without it, for the REACH_MISSES-th time
        in a row: unreachable."""
        if self._wait_until_ms is None or now_ms < self._wait_until_ms:
            return False
        self._wait_until_ms, self._txid = None, None
        self._misses += 1
        if self._misses < REACH_MISSES:
            self.due_ms = now_ms + self.retry_ms
            return False
        self.reachable = False
        return True
