"""The kinds of data the overlay keeps (DESIGN.md, "Data the overlay keeps").

Kind ids name what a value is; each kind has one data model. The SIP usages
(registration, offline messages, presence) arrive with the SIP issue; for now
there is the generic value of `peerphone put` / `get`.
"""

from __future__ import annotations

from enum import IntEnum

from .wire.messages import DataModel


class Kind(IntEnum):
    BLOB = 1


MODEL_OF = {Kind.BLOB: DataModel.SINGLE}
