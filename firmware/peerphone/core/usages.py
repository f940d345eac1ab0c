"""The kinds of data the overlay keeps (DESIGN.md, "Data the overlay keeps").

Kind ids name what a value is; each kind has one data model. The SIP usages
(registration, offline messages, presence) arrive with the SIP issue; for now
there are the generic values of `peerphone put` / `get`, one kind per data model.
"""

from __future__ import annotations

from enum import IntEnum

from .wire.messages import DataModel


class Kind(IntEnum):
    BLOB = 1   # one value per key
    LIST = 2   # values appended under a key
    MAP = 3    # values under a key and a sub-key


MODEL_OF = {Kind.BLOB: DataModel.SINGLE, Kind.LIST: DataModel.ARRAY, Kind.MAP: DataModel.DICTIONARY}
