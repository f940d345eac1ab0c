"""The phone's pins through gpiozero: the hook, the keypad, the ringer and the lamps.

gpiozero calls back from its own threads; every edge is handed to the event loop
(`call_soon_threadsafe`) and judged there. A level counts once it has held `debounce_ms`:
contact bounce, a stuck key or a floating hook make at most one event per real change,
never a stream (which the handset would turn into SIP requests). A keypad matrix is
scanned from the loop: each row driven low in turn, the columns read through pull-ups.

On a Pi the pins are RPi.GPIO's (Pi 1 to 4) or the rpi-lgpio shim's (Pi 5), chosen by the
board file; tests give gpiozero's own `MockFactory`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

from .board import Board

log = logging.getLogger("peerphone.hw")

SCAN_MS = 5  # one row of a matrix every 5 ms: a 4-row keypad is read every 20 ms


class HardwareError(Exception):
    """The board names hardware this machine cannot drive; the message is one line."""


def pin_factory(board: Board) -> Any:
    """The gpiozero pin factory the board asks for, or HardwareError saying why not. gpiozero's
    own GPIOZERO_PIN_FACTORY, when set, wins: mock pins on a test rig, pigpio on a remote Pi."""
    if board.gpio == "none":
        raise HardwareError(f"{board.path}: board.gpio: none, and the board names pins")
    if os.environ.get("GPIOZERO_PIN_FACTORY"):
        from gpiozero import Device
        from gpiozero.exc import BadPinFactory

        try:
            Device.ensure_pin_factory()
        except BadPinFactory as e:
            raise HardwareError(f"GPIOZERO_PIN_FACTORY={os.environ['GPIOZERO_PIN_FACTORY']}: {e}") from None
        return Device.pin_factory
    package, extra = ("RPi.GPIO", "pi") if board.gpio == "rpigpio" else ("rpi-lgpio", "pi5")
    try:
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    except (ImportError, RuntimeError) as e:  # RPi.GPIO raises at import off a Pi
        raise HardwareError(f"{board.path}: board.gpio = {board.gpio!r} needs {package} on a Raspberry Pi "
                            f"(pip install 'peerphone[{extra}]' there; here: {type(e).__name__}: {e})") from None


class _Debounced:
    """A level that is reported once it has held `hold_ms` (the loop's clock)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hold_ms: int, report: Callable[[bool], None],
                 level: bool) -> None:
        self._loop, self._hold_s, self._report = loop, hold_ms / 1000, report
        self.level = level  # as last reported
        self._pending: asyncio.TimerHandle | None = None

    def saw(self, level: bool) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if level != self.level:
            self._pending = self._loop.call_later(self._hold_s, self._settle, level)

    def _settle(self, level: bool) -> None:
        self._pending = None
        self.level = level
        self._report(level)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


class Panel:
    """The board's pins, live. `on_hook(up)` and `on_key(key)` are called in the loop."""

    def __init__(self, board: Board, on_hook: Callable[[bool], None], on_key: Callable[[str], None], *,
                 factory: Any = None) -> None:
        from gpiozero import LED, Button, DigitalInputDevice, DigitalOutputDevice

        self.board = board
        self._loop = asyncio.get_running_loop()
        factory = factory if factory is not None else pin_factory(board)
        self._devices: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ringing: asyncio.Task[None] | None = None
        self.hook_up = False
        self._hook: _Debounced | None = None
        if board.hook_pin is not None:
            switch = self._own(Button(board.hook_pin, pull_up=True, pin_factory=factory))

            def up() -> bool:  # a pull-up: the pin reads high (value 0) while the switch is open
                return bool(switch.value == 0) if board.hook_off_when_high else bool(switch.value == 1)

            self.hook_up = up()

            def hook(level: bool) -> None:
                self.hook_up = level
                on_hook(level)

            self._hook = _Debounced(self._loop, board.hook_debounce_ms, hook, self.hook_up)
            switch.when_pressed = switch.when_released = lambda: self._post(self._hook_edge, up())
        keypad = board.keypad
        self._keys: dict[str, _Debounced] = {}
        if keypad is not None and keypad.buttons:
            for key, pin in keypad.buttons.items():
                button = self._own(Button(pin, pull_up=True, pin_factory=factory))
                self._keys[key] = _Debounced(self._loop, keypad.debounce_ms, self._pressed(key, on_key), False)
                button.when_pressed = button.when_released = self._key_edge(key, button)
        elif keypad is not None:
            rows = [self._own(DigitalOutputDevice(p, active_high=False, initial_value=False, pin_factory=factory))
                    for p in keypad.rows]
            cols = [self._own(DigitalInputDevice(p, pull_up=True, pin_factory=factory)) for p in keypad.cols]
            for line in keypad.layout:
                for key in line:
                    self._keys[key] = _Debounced(self._loop, keypad.debounce_ms, self._pressed(key, on_key), False)
            self._tasks.append(self._loop.create_task(self._scan(rows, cols, keypad.layout)))
        self._ringer = self._own(DigitalOutputDevice(board.ringer_pin, pin_factory=factory)) \
            if board.ringer_pin is not None else None
        self._lamps = {name: self._own(LED(pin, pin_factory=factory)) for name, pin in board.lamps.items()}

    def _own(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def _hook_edge(self, up: bool) -> None:
        if self._hook is not None:
            self._hook.saw(up)

    def _key_edge(self, key: str, button: Any) -> Callable[[], None]:
        return lambda: self._post(self._keys[key].saw, bool(button.is_pressed))

    def _post(self, handle: Callable[[bool], None], level: bool) -> None:
        """From gpiozero's thread into the loop's."""
        self._loop.call_soon_threadsafe(handle, level)

    @staticmethod
    def _pressed(key: str, on_key: Callable[[str], None]) -> Callable[[bool], None]:
        return lambda down: on_key(key) if down else None

    async def _scan(self, rows: list[Any], cols: list[Any], layout: tuple[str, ...]) -> None:
        while True:
            for row, line in zip(rows, layout):
                row.on()
                levels = [bool(col.is_active) for col in cols]
                row.off()
                for key, down in zip(line, levels):
                    self._keys[key].saw(down)
                await asyncio.sleep(SCAN_MS / 1000)

    # -- outputs

    def ring(self, on: bool) -> None:
        """The ringer, in the board's cadence, until told to stop."""
        if self._ringer is None:
            return
        if self._ringing is not None:
            self._ringing.cancel()
            self._ringing = None
        self._ringer.off()
        if on:
            self._ringing = self._loop.create_task(self._cadence(self.board.tones["ring"].cadence_ms or (2000, 4000)))

    async def _cadence(self, cadence: tuple[int, ...]) -> None:
        assert self._ringer is not None
        try:
            while True:
                for i, ms in enumerate(cadence):
                    self._ringer.on() if i % 2 == 0 else self._ringer.off()
                    await asyncio.sleep(ms / 1000)
        finally:
            self._ringer.off()

    def lamp(self, name: str, on: bool) -> None:
        lamp = self._lamps.get(name)
        if lamp is not None:
            lamp.on() if on else lamp.off()

    def close(self) -> None:
        for task in [*self._tasks, *([self._ringing] if self._ringing else [])]:
            task.cancel()
        for debounced in [*self._keys.values(), *([self._hook] if self._hook else [])]:
            debounced.close()
        for device in self._devices:
            device.close()
