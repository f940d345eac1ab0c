"""Errors, split as h11 does: what a remote peer did wrong and what we did wrong.

Remote faults never escape the core as exceptions: they become counted drops or
error answers. `LocalProtocolError` is a bug in the caller and is raised loudly.
"""

from __future__ import annotations

from enum import IntEnum


class DecodeError(Exception):
    """A datagram that is not a valid message; `reason` is one of a fixed set of words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(Exception):
    """The caller misused the core (a bug here, not on the network)."""


class ErrorCode(IntEnum):
    """Codes of the Error answer (after RFC 6940 §6.3.3.1)."""

    FORBIDDEN = 2
    NOT_FOUND = 3
    TTL_EXCEEDED = 5
    TOO_LARGE = 6
    DATA_TOO_OLD = 9
    MODEL_MISMATCH = 10
    UNREACHABLE = 12
    BAD_REQUEST = 13
    STORAGE_FULL = 14
    LEAVING = 15  # the answer of a node that is leaving or has left, to a ping that checks it
    DATA_TOO_NEW = 16  # a storage time ahead of the storing peer's clock by more than the skew allowed
    QUOTA_EXCEEDED = 17  # the writer holds as much here as one writer may
