"""A phone on a test rig: `python -m tests.hw.rig PEERPHONE-ARGS...` runs the real
`peerphone phone --board ...` command in this process on gpiozero's mock pins, and its
hand is stdin:

    hook up | hook down     move the handset on the hook switch (with bounce)
    press KEYS              press each key on the keypad (with bounce)

The rig says `rig: the handset rests on its hook` once the phone has its pins. Output pins
are reported on stdout as they change (`pin ringer on 12.345`, `pin lamp message
on ...`, monotonic seconds), beside the phone's own lines on stdout. The phone is driven
only through its pins: nothing else of it is touched.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from gpiozero import Device
from gpiozero.pins.mock import MockConnectedPin, MockFactory
from peerphone.app.cli import main
from peerphone.hw.board import Board, load

from tests.hw.wires import Keypad, bounce, lift

WATCH_S = 0.005  # output pins are polled: a ringer's cadence is hundreds of ms


def _board(argv: list[str]) -> Board:
    return load(Path(argv[argv.index("--board") + 1]))


def _hand(factory: MockFactory, board: Board) -> None:
    keypad = Keypad(factory, board)
    outputs = [*board.lamps.values(), *([board.ringer_pin] if board.ringer_pin is not None else []),
               *(board.keypad.rows if board.keypad else ())]
    while any(factory.pin(pin).function != "output" for pin in outputs):  # the phone's panel is being made
        time.sleep(WATCH_S)
    if board.hook_pin is not None:  # a mock input floats to its pull-up: rest the handset on the hook
        for pause in lift(factory, board, False):
            time.sleep(pause)
        print("rig: the handset rests on its hook", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["hook"] and len(words) == 2:
            steps = lift(factory, board, words[1] == "up")
        elif words[:1] == ["press"] and len(words) == 2:
            steps = (pause for key in words[1] for pause in bounce(keypad, key))
        else:
            print(f"rig: what is {line.strip()!r}?", file=sys.stderr, flush=True)
            continue
        for pause in steps:
            time.sleep(pause)


def _watch(factory: MockFactory, board: Board) -> None:
    outputs = {f"lamp {name}": pin for name, pin in board.lamps.items()}
    if board.ringer_pin is not None:
        outputs["ringer"] = board.ringer_pin
    last: dict[str, bool] = {}
    while True:
        for name, pin in outputs.items():
            state = bool(factory.pin(pin).state)
            if last.get(name, False) != state:
                print(f"pin {name} {'on' if state else 'off'} {time.monotonic():.3f}", flush=True)
            last[name] = state
        time.sleep(WATCH_S)


if __name__ == "__main__":
    os.environ["GPIOZERO_PIN_FACTORY"] = "mock"
    factory = Device.pin_factory = MockFactory(pin_class=MockConnectedPin)
    argv = sys.argv[1:]
    board = _board(argv)
    for work in (_hand, _watch):
        threading.Thread(target=work, args=(factory, board), daemon=True).start()
    sys.exit(main(argv))
