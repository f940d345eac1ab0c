"""Board files (`board/*.toml`): which pins and sound devices a phone model has, checked on load.

A board file is read whole and every mistake in it is reported, one line each, naming the
file, the key and what was expected (`BoardError.lines`); the `peerphone` command prints
them and exits with status 2. Nothing here touches a pin or a sound card: `hw.gpio` and
`hw.audio` open what a `Board` names.

Pins are BCM GPIO numbers (2 to 27 on the 40-pin header), each used once. Tones and the
ringer's cadence come from the country (`tones.country`) unless the file gives its own.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..core.role import RoleThresholds
from ..phone.machine import INTER_DIGIT_MS, KEYS, DialPlan, DialPlanError
from .power import BatterySpec

GPIO_PINS = range(2, 28)
GPIO_BACKENDS = ("rpigpio", "lgpio", "none")  # RPi.GPIO on a Pi 1 to 4, the lgpio shim on a Pi 5
TONE_NAMES = ("dial", "ringback", "busy", "reorder", "call_waiting")


@dataclass(frozen=True)
class ToneSpec:
    freqs_hz: tuple[float, ...]
    cadence_ms: tuple[int, ...] = ()  # on, off, on, off...; empty: continuous


# Frequencies and cadences of the call-progress tones and the ringer (ITU-T E.180 supplement 2).
COUNTRIES: dict[str, dict[str, ToneSpec]] = {
    "us": {"dial": ToneSpec((350, 440)), "ringback": ToneSpec((440, 480), (2000, 4000)),
           "busy": ToneSpec((480, 620), (500, 500)), "reorder": ToneSpec((480, 620), (250, 250)),
           "call_waiting": ToneSpec((440,), (300, 9700)), "ring": ToneSpec((20,), (2000, 4000))},
    "uk": {"dial": ToneSpec((350, 450)), "ringback": ToneSpec((400, 450), (400, 200, 400, 2000)),
           "busy": ToneSpec((400,), (375, 375)), "reorder": ToneSpec((400,), (400, 350, 225, 525)),
           "call_waiting": ToneSpec((400,), (100, 3000)), "ring": ToneSpec((25,), (400, 200, 400, 2000))},
    "de": {"dial": ToneSpec((425,)), "ringback": ToneSpec((425,), (1000, 4000)),
           "busy": ToneSpec((425,), (480, 480)), "reorder": ToneSpec((425,), (240, 240)),
           "call_waiting": ToneSpec((425,), (200, 200, 200, 5000)), "ring": ToneSpec((25,), (1000, 4000))},
}


@dataclass(frozen=True)
class Keypad:
    rows: tuple[int, ...] = ()  # a matrix: rows driven one at a time, columns read
    cols: tuple[int, ...] = ()
    layout: tuple[str, ...] = ()  # one string per row, one key per column
    buttons: Mapping[str, int] = field(default_factory=dict)  # or one button per key
    debounce_ms: int = 20

    @property
    def pins(self) -> tuple[int, ...]:
        return (*self.rows, *self.cols, *self.buttons.values())


@dataclass(frozen=True)
class Board:
    name: str
    path: Path
    gpio: str = "none"
    hook_pin: int | None = None
    hook_off_when_high: bool = True  # the switch closes (reads low) while the handset rests
    hook_debounce_ms: int = 30
    keypad: Keypad | None = None
    ringer_pin: int | None = None
    lamps: Mapping[str, int] = field(default_factory=dict)  # "in_use", "message"
    earpiece: str = "default"  # ALSA PCM names
    microphone: str = "default"
    speaker: str | None = None
    mixer: str | None = None  # the ALSA control device; None: the earpiece's card (hw/audio.py)
    earpiece_volume: int | None = None  # percent; None: as the card is
    microphone_gain: int | None = None
    terminal: bool = False  # a handset in the terminal: keys for the hook and digits
    tones: Mapping[str, ToneSpec] = field(default_factory=lambda: COUNTRIES["us"])
    dial_plan: DialPlan = field(default_factory=lambda: DialPlan({}))
    battery: BatterySpec = BatterySpec()
    role: RoleThresholds = RoleThresholds()

    @property
    def answers_itself(self) -> bool:
        """No hook to lift (and not the terminal): every call is answered at once, its sound on
        the board's devices, as an intercom does."""
        return not self.terminal and self.hook_pin is None


class BoardError(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


_SECTIONS: dict[str, set[str]] = {
    "board": {"name", "gpio", "terminal"},
    "hook": {"pin", "off_when", "debounce_ms"},
    "keypad": {"rows", "cols", "layout", "buttons", "debounce_ms"},
    "ringer": {"pin"},
    "lamps": {"in_use", "message"},
    "audio": {"earpiece", "microphone", "speaker", "mixer", "earpiece_volume", "microphone_gain"},
    "tones": {"country", *TONE_NAMES, "ring"},
    "speed_dial": set(),  # any code
    "directory": set(),
    "dial_plan": {"inter_digit_ms"},
    "battery": {"source", "supply", "i2c_bus", "address", "cells", "discharge_current"},
    "role": {"battery_client_below", "battery_peer_above", "loss_client_above", "loss_peer_below",
             "rtt_client_above_ms", "rtt_peer_below_ms", "min_dwell_s"},
}
BATTERY_SOURCES = ("none", "sysfs", "ina219")


def load(path: Path) -> Board:
    """The board `path` describes, or BoardError with every mistake in it."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise BoardError([f"{path}: cannot read: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise BoardError([f"{path}: not TOML: {e}"]) from None
    return _Checker(path, raw).board()


class _Checker:
    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path, self.raw = path, raw
        self.errors: list[str] = []
        self.pins: dict[int, str] = {}  # pin -> the key that uses it

    def error(self, key: str, what: str) -> None:
        self.errors.append(f"{self.path}: {key}: {what}")

    def board(self) -> Board:
        for section, value in self.raw.items():
            if section not in _SECTIONS:
                self.error(section, f"unknown section (expected one of {', '.join(_SECTIONS)})")
            elif not isinstance(value, dict):
                self.error(section, "expected a table ([section])")
            elif _SECTIONS[section]:
                for key in value:
                    if key not in _SECTIONS[section]:
                        expected = ", ".join(sorted(_SECTIONS[section]))
                        self.error(f"{section}.{key}", f"unknown key (expected one of {expected})")
        get = self.section
        board = get("board")
        gpio = self.choice("board.gpio", board.get("gpio", "none"), GPIO_BACKENDS)
        hook = get("hook")
        keypad = self.keypad(get("keypad")) if "keypad" in self.raw else None
        lamps = {name: p for name in ("in_use", "message")
                 if (p := self.pin(f"lamps.{name}", get("lamps").get(name))) is not None}
        audio = get("audio")
        result = Board(
            name=self.text("board.name", board.get("name", self.path.stem)),
            path=self.path,
            gpio=gpio,
            hook_pin=self.pin("hook.pin", hook.get("pin")),
            hook_off_when_high=self.choice("hook.off_when", hook.get("off_when", "high"), ("high", "low")) == "high",
            hook_debounce_ms=self.number("hook.debounce_ms", hook.get("debounce_ms", 30), 0, 1000),
            keypad=keypad,
            ringer_pin=self.pin("ringer.pin", get("ringer").get("pin")),
            lamps=lamps,
            earpiece=self.text("audio.earpiece", audio.get("earpiece", "default")),
            microphone=self.text("audio.microphone", audio.get("microphone", "default")),
            speaker=self.text("audio.speaker", audio["speaker"]) if "speaker" in audio else None,
            mixer=self.text("audio.mixer", audio["mixer"]) if "mixer" in audio else None,
            earpiece_volume=self.number("audio.earpiece_volume", audio["earpiece_volume"], 0, 100)
            if "earpiece_volume" in audio else None,
            microphone_gain=self.number("audio.microphone_gain", audio["microphone_gain"], 0, 100)
            if "microphone_gain" in audio else None,
            terminal=board.get("terminal", False) is True,
            tones=self.tones(get("tones")),
            dial_plan=self.dial_plan(),
            battery=self.battery(get("battery")),
            role=self.role(get("role")),
        )
        if gpio == "none" and self.pins:
            self.error("board.gpio", f"pins are named ({', '.join(sorted(set(self.pins.values())))}) "
                                     "but no GPIO backend: rpigpio or lgpio")
        if self.errors:
            raise BoardError(self.errors)
        return result

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name, {})
        return value if isinstance(value, dict) else {}

    def pin(self, key: str, value: Any) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value not in GPIO_PINS:
            self.error(key, f"{value!r} is not a GPIO pin (BCM {GPIO_PINS.start} to {GPIO_PINS.stop - 1})")
            return None
        if value in self.pins:
            self.error(key, f"pin {value} is already {self.pins[value]}")
            return None
        self.pins[value] = key
        return value

    def pin_list(self, key: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            self.error(key, "expected a list of pins")
            return ()
        pins = [self.pin(f"{key}[{i}]", v) for i, v in enumerate(value)]
        return tuple(p for p in pins if p is not None)

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.error(key, f"{value!r} is not one of {', '.join(allowed)}")
            return allowed[0]
        return str(value)

    def number(self, key: str, value: Any, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.error(key, f"{value!r} is not a whole number from {low} to {high}")
            return low
        return value

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.error(key, f"{value!r} is not a name")
            return ""
        return value

    def keypad(self, raw: dict[str, Any]) -> Keypad | None:
        debounce = self.number("keypad.debounce_ms", raw.get("debounce_ms", 20), 0, 1000)
        if "buttons" in raw:
            buttons = raw["buttons"] if isinstance(raw["buttons"], dict) else {}
            for key in buttons:
                if key not in KEYS:
                    self.error(f"keypad.buttons.{key}", f"unknown key (expected one of {' '.join(sorted(KEYS))})")
            return Keypad(buttons={k: p for k, v in buttons.items() if k in KEYS
                                   and (p := self.pin(f"keypad.buttons.{k}", v)) is not None}, debounce_ms=debounce)
        rows, cols = self.pin_list("keypad.rows", raw.get("rows")), self.pin_list("keypad.cols", raw.get("cols"))
        layout = raw.get("layout")
        if not isinstance(layout, list) or len(layout) != len(rows) or \
                any(not isinstance(r, str) or len(r) != len(cols) for r in layout):
            self.error("keypad.layout", f"expected {len(rows)} strings of {len(cols)} keys (one per row, column)")
            return None
        keys = "".join(layout)
        for key in keys:
            if key not in KEYS:
                self.error("keypad.layout", f"unknown key {key!r} (expected one of {' '.join(sorted(KEYS))})")
            elif keys.count(key) > 1:
                self.error("keypad.layout", f"key {key!r} is on the keypad twice")
        return Keypad(rows, cols, tuple(layout), debounce_ms=debounce)

    def tones(self, raw: dict[str, Any]) -> dict[str, ToneSpec]:
        country = self.choice("tones.country", raw.get("country", "us"), tuple(COUNTRIES))
        tones = dict(COUNTRIES[country])
        for name in (*TONE_NAMES, "ring"):
            spec = raw.get(name)
            if spec is None:
                continue
            freqs, cadence = (spec.get("freqs_hz"), spec.get("cadence_ms", [])) if isinstance(spec, dict) else (0, 0)
            if not isinstance(freqs, list) or not freqs or not all(isinstance(f, (int, float)) and 0 < f < 4000
                                                                   for f in freqs):
                self.error(f"tones.{name}.freqs_hz", "expected a list of frequencies in Hz (0 to 4000)")
                continue
            if not isinstance(cadence, list) or len(cadence) % 2 or not all(
                    isinstance(c, int) and 0 < c <= 60_000 for c in cadence):
                self.error(f"tones.{name}.cadence_ms", "expected on and off times in ms, in pairs")
                continue
            tones[name] = ToneSpec(tuple(float(f) for f in freqs), tuple(cadence))
        return tones

    def battery(self, raw: dict[str, Any]) -> BatterySpec:
        source = self.choice("battery.source", raw.get("source", "none"), BATTERY_SOURCES)
        default = BatterySpec()
        return BatterySpec(
            source=source,
            supply=self.text("battery.supply", raw.get("supply", default.supply)),
            i2c_bus=self.number("battery.i2c_bus", raw.get("i2c_bus", default.i2c_bus), 0, 255),
            address=self.number("battery.address", raw.get("address", default.address), 0x03, 0x77),
            cells=self.number("battery.cells", raw.get("cells", default.cells), 1, 4),
            discharge_negative=self.choice("battery.discharge_current", raw.get("discharge_current", "negative"),
                                           ("negative", "positive")) == "negative",
        )

    def role(self, raw: dict[str, Any]) -> RoleThresholds:
        """Percentages as whole numbers, as a person writes them; the dwell in seconds."""
        default = RoleThresholds()
        thresholds = RoleThresholds(
            battery_client_below=self.number("role.battery_client_below",
                                             raw.get("battery_client_below", default.battery_client_below), 0, 100),
            battery_peer_above=self.number("role.battery_peer_above",
                                           raw.get("battery_peer_above", default.battery_peer_above), 0, 100),
            loss_client_above=self.number("role.loss_client_above", raw.get(
                "loss_client_above", round(default.loss_client_above * 100)), 0, 100) / 100,
            loss_peer_below=self.number("role.loss_peer_below", raw.get(
                "loss_peer_below", round(default.loss_peer_below * 100)), 0, 100) / 100,
            rtt_client_above_ms=self.number("role.rtt_client_above_ms",
                                            raw.get("rtt_client_above_ms", default.rtt_client_above_ms), 1, 60_000),
            rtt_peer_below_ms=self.number("role.rtt_peer_below_ms",
                                          raw.get("rtt_peer_below_ms", default.rtt_peer_below_ms), 1, 60_000),
            min_dwell_ms=self.number("role.min_dwell_s", raw.get("min_dwell_s", default.min_dwell_ms // 1000),
                                     0, 86_400) * 1000,
        )
        for problem in thresholds.problems():
            self.error("role", f"{problem}: without a gap the role would flap")
        return thresholds

    def dial_plan(self) -> DialPlan:
        codes: dict[str, dict[str, str]] = {}
        for section in ("speed_dial", "directory"):
            codes[section] = {}
            for code, aor in self.section(section).items():
                if not isinstance(aor, str) or not aor.startswith(("sip:", "sips:")):
                    self.error(f"{section}.{code}", f"{aor!r} is not a sip: address")
                else:
                    codes[section][str(code)] = aor
        inter_digit = self.number("dial_plan.inter_digit_ms", self.section("dial_plan").get(
            "inter_digit_ms", INTER_DIGIT_MS), 500, 30_000)
        try:
            return DialPlan.of(codes["speed_dial"], codes["directory"], inter_digit)
        except DialPlanError as e:
            self.error("speed_dial", str(e))
            return DialPlan({})
