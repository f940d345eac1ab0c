"""Native routines (cffi, native/) behind one interface, with pure-Python twins.

`ACTIVE` says which path runs: "native" when the compiled module imports and
PEERPHONE_PURE is not 1, else "pure". Callers see Python ints either way.

An id table used for many queries (a Kademlia routing table) is kept packed,
`width` bytes per id, beside its Python ints, so a query hands C one buffer
instead of converting every id on every call.

Measured and left in Python (tools/bench native): SHA-1 of names, as hashlib
(OpenSSL) hashes faster than a C loop can hand digests back as ints; Chord's
closest preceding finger, one `bisect` over Python ints, which a cffi call cannot
beat once the id is converted to bytes; ring interval tests, a comparison or two.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from . import pure


def _load() -> tuple[Any, Any, str]:
    """(ffi, lib, why the pure path runs or "")."""
    if os.environ.get("PEERPHONE_PURE") == "1":
        return None, None, "PEERPHONE_PURE=1"
    try:
        native: Any = importlib.import_module(f"{__name__}._native")
    except ImportError:
        return None, None, "the compiled module is not installed"
    return native.ffi, native.lib, ""


# Not named `_native`: importing the submodule would rebind that name on this package.
_ffi, _lib, WHY_PURE = _load()
ACTIVE = "native" if _lib is not None else "pure"


def summary() -> str:
    return "cffi" if ACTIVE == "native" else "pure Python"


class IdTable:
    """Ids in insertion slots, packed for C; removal moves the last id into the gap."""

    def __init__(self, width: int = 20) -> None:
        self.width = width
        self.ids: list[int] = []
        self._packed = bytearray()
        self._out: Any = _ffi.new("uint32_t[]", 32) if _ffi is not None else []  # reused by every query

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, node_id: int) -> int:
        self.ids.append(node_id)
        self._packed += node_id.to_bytes(self.width, "big")
        return len(self.ids) - 1

    def remove_at(self, slot: int) -> int | None:
        """Remove the id in `slot`; returns the id moved into it (None: it was the last)."""
        last = self.ids.pop()
        w = self.width
        tail = self._packed[-w:]
        del self._packed[-w:]
        if slot == len(self.ids):
            return None
        self.ids[slot] = last
        self._packed[slot * w:(slot + 1) * w] = tail
        return last

    def xor_closest(self, target: int, k: int) -> list[int]:
        """Slots of the `k` ids closest to `target` by XOR, closest first."""
        if _lib is None:
            return pure.xor_closest(self.ids, target, k)
        if len(self._out) < k:
            self._out = _ffi.new("uint32_t[]", k)
        n = _lib.pp_xor_closest(_ffi.from_buffer(self._packed), len(self.ids), self.width,
                                   target.to_bytes(self.width, "big"), k, self._out)
        return _ffi.unpack(self._out, n)  # type: ignore[no-any-return]
