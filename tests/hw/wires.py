"""Wires for gpiozero's MockFactory pins: a keypad matrix and a hook switch a test (or the
phone rig, tests/hw/rig.py) presses as a hand would, contact bounce included."""

from __future__ import annotations

from typing import Iterator

from gpiozero.pins.mock import MockConnectedPin, MockFactory
from peerphone.hw.board import Board


class Keypad:
    """The keys of a matrix as wires: a pressed key joins its row to its column, so the
    column reads low while the scanner drives that row low."""

    def __init__(self, factory: MockFactory, board: Board) -> None:
        assert board.keypad is not None
        self.factory, self.keypad = factory, board.keypad

    def _pins(self, key: str) -> tuple[MockConnectedPin, MockConnectedPin]:
        r = next(i for i, line in enumerate(self.keypad.layout) if key in line)
        c = self.keypad.layout[r].index(key)
        return self.factory.pin(self.keypad.rows[r]), self.factory.pin(self.keypad.cols[c])

    def press(self, key: str) -> None:
        row, col = self._pins(key)
        row.input_pin = col
        if not row.state:  # its row is being scanned right now
            col.drive_low()

    def release(self, key: str) -> None:
        row, col = self._pins(key)
        row.input_pin = None
        col.drive_high()


def bounce(keypad: Keypad, key: str) -> Iterator[float]:
    """Press and release `key` after a few millisecond-long touches; yields the pause after each
    step, for the caller to sleep (in the loop or in a thread)."""
    for _ in range(4):
        keypad.press(key)
        yield 0.002
        keypad.release(key)
        yield 0.001
    keypad.press(key)
    yield 0.2
    keypad.release(key)
    yield 0.15


def lift(factory: MockFactory, board: Board, up: bool) -> Iterator[float]:
    """Move the handset on its hook switch (with bounce); pauses as `bounce`."""
    assert board.hook_pin is not None
    pin = factory.pin(board.hook_pin)
    level_up = board.hook_off_when_high  # a pull-up: the open switch reads high
    for _ in range(3):
        pin.drive_high() if level_up == up else pin.drive_low()
        yield 0.002
        pin.drive_low() if level_up == up else pin.drive_high()
        yield 0.001
    pin.drive_high() if level_up == up else pin.drive_low()
    yield 0.1
