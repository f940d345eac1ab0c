"""The phone's pins on gpiozero's MockFactory: a keypad matrix with contact bounce, the hook,
a floating hook, the ringer's cadence and the lamps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory
from peerphone.hw.board import load
from peerphone.hw.gpio import HardwareError, Panel, pin_factory

from tests.hw.wires import Keypad, bounce

DESK = Path(__file__).parents[2] / "board" / "pi4-deskphone.toml"


def test_keys_on_a_matrix_with_contact_bounce_are_one_press_each():
    async def main() -> list[str]:
        factory = MockFactory(pin_class=MockConnectedPin)
        board = load(DESK)
        keys: list[str] = []
        panel = Panel(board, lambda up: None, keys.append, factory=factory)
        keypad = Keypad(factory, board)
        for key in "1#0*9":
            for pause in bounce(keypad, key):
                await asyncio.sleep(pause)
        keypad.press("5")  # a stuck key: one press, however long
        await asyncio.sleep(0.3)
        panel.close()
        return keys

    assert asyncio.run(main()) == list("1#0*95")


def test_the_hook_is_reported_once_settled_and_a_floating_hook_not_at_all():
    async def main() -> list[bool]:
        factory = MockFactory()
        board = load(DESK)
        hooks: list[bool] = []
        panel = Panel(board, hooks.append, lambda key: None, factory=factory)
        hook = factory.pin(board.hook_pin)
        hook.drive_low()  # resting on the switch
        await asyncio.sleep(0.1)
        hook.drive_high()  # lifted
        await asyncio.sleep(0.1)
        for i in range(60):  # then the wire comes loose: noise every 2 ms for a while
            hook.drive_low() if i % 2 else hook.drive_high()
            await asyncio.sleep(0.002)
        hook.drive_high()
        await asyncio.sleep(0.1)
        hook.drive_low()  # hung up
        await asyncio.sleep(0.1)
        panel.close()
        return hooks

    assert asyncio.run(main()) == [False, True, False]  # on the switch, lifted, hung up: the noise made none


def test_the_ringer_follows_the_cadence_and_the_lamps_their_state(tmp_path):
    board_file = tmp_path / "ring.toml"
    board_file.write_text(DESK.read_text().replace('country = "us"', 'country = "us"\n[tones.ring]\n'
                                                                      'freqs_hz = [20]\ncadence_ms = [200, 200]'))

    async def main() -> tuple[list[int], int, int]:
        factory = MockFactory()
        board = load(board_file)
        panel = Panel(board, lambda up: None, lambda key: None, factory=factory)
        ringer = factory.pin(board.ringer_pin)
        ringer.clear_states()
        panel.ring(True)
        for _ in range(100):  # until it has sounded three times (5 s at most)
            if sum(s.state for s in ringer.states) >= 3:
                break
            await asyncio.sleep(0.05)
        panel.ring(False)
        seen = [int(s.state) for s in ringer.states]
        quiet = int(ringer.state)
        panel.lamp("message", True)
        lamp = int(factory.pin(board.lamps["message"]).state)
        panel.close()
        return seen, quiet, lamp

    seen, quiet, lamp = asyncio.run(main())
    assert seen[:6] == [0, 1, 0, 1, 0, 1] and quiet == 0 and lamp == 1  # on and off in turn, whatever the timing


def test_a_board_for_a_pi_says_in_one_line_what_it_needs_off_a_pi():
    with pytest.raises(HardwareError) as refused:
        pin_factory(load(DESK))
    assert str(refused.value).startswith(f"{DESK}: board.gpio = 'rpigpio' needs RPi.GPIO on a Raspberry Pi")
    assert "\n" not in str(refused.value)


def test_gpiozero_s_own_pin_factory_setting_wins(monkeypatch):
    """A rig (or a remote Pi) names its pins through GPIOZERO_PIN_FACTORY, as any gpiozero program's user does."""
    from gpiozero import Device

    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    assert isinstance(pin_factory(load(DESK)), MockFactory)
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "nonesuch")
    with pytest.raises(HardwareError) as refused:
        pin_factory(load(DESK))
    assert str(refused.value).startswith("GPIOZERO_PIN_FACTORY=nonesuch: ") and "\n" not in str(refused.value)
