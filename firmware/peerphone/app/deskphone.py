"""A phone with a hook: the handset machine (`phone/machine.py`) between the person (the
board's pins, or a terminal) and the pjsua2 user agent, with the board file's dial plan.

`Deskphone` is the glue and nothing else: inputs from the pins or the terminal and call
events from pjsua2 go into the machine with the loop's time; its actions go out to
pjsua2, the ringer and the lamps, and, for a person at a terminal, as lines saying what a
handset would sound like. Its one timer follows the machine's next deadline.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable

from ..hw.board import Board
from ..hw.gpio import Panel
from ..phone.machine import Act, Action, Handset, State, Tone
from ..sip.ua import Handset as UserAgent
from ..sip.ua import HandsetError

log = logging.getLogger("peerphone.deskphone")


class Deskphone:
    """Also the user agent's `CallListener`."""

    def __init__(self, board: Board, say: Callable[[str], None]) -> None:
        self.board = board
        self.say = say
        self.machine = Handset(board.dial_plan)
        self.ua: UserAgent | None = None
        self.panel: Panel | None = None  # when the board has pins
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._hook_up = False
        self._state = State.IDLE  # as last said
        self._messages = 0  # arrived since the handset was last lifted: the lamp is on while any
        self._tone_files: dict[Tone, Path] = {}
        self._ringing = False
        self._lamps: dict[str, bool] = {}  # as the machine last set them

    def attach(self, panel: Panel) -> None:
        """Drive `panel` from now on, starting from what the machine has already asked for
        (a message kept for us arrives as we register, before the pins are ours)."""
        self.panel = panel
        panel.ring(self._ringing)
        for name, on in self._lamps.items():
            panel.lamp(name, on)

    def make_tones(self, directory: Path) -> None:
        """Write the board's call-progress tones into `directory`, one loopable WAV each, for
        the user agent to play into the earpiece."""
        from ..hw.tones import Tone as ToneWave  # numpy: only a phone with a board pays for it at start

        for tone in Tone:
            spec = self.board.tones.get(tone.name.lower())
            if spec is not None:
                path = directory / f"{tone.name.lower()}.wav"
                ToneWave(spec).write_wav(path)
                self._tone_files[tone] = path

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    # -- the person

    def hook(self, up: bool) -> None:
        self._hook_up = up
        self.machine.hook(up, now_ms=self.now_ms())
        if up and self._messages:  # picked up: the person has seen (on a terminal) or heard of them
            self._messages = 0
            self.machine.messages_waiting(0)
        self._apply()

    def toggle_hook(self) -> None:
        self.hook(not self._hook_up)

    def key(self, key: str) -> None:
        self.machine.key(key, now_ms=self.now_ms())
        self._apply()

    # -- the user agent (CallListener)

    def incoming(self, call: str, caller: str) -> None:
        self.machine.incoming(call, caller, now_ms=self.now_ms())
        self._apply()

    def progress(self, call: str) -> None:
        self.machine.progress(call, now_ms=self.now_ms())
        self._apply()

    def answered(self, call: str) -> None:
        self.machine.answered(call, now_ms=self.now_ms())
        self._apply()

    def failed(self, call: str, status: int) -> None:
        self.say(f"call failed: {status}")
        self.machine.failed(call, status, now_ms=self.now_ms())
        self._apply()

    def ended(self, call: str) -> None:
        self.machine.remote_end(call, now_ms=self.now_ms())
        self._apply()

    def message(self, sender: str, text: str) -> None:
        self._messages += 1
        self.machine.messages_waiting(self._messages)
        self._apply()

    # -- what the machine says

    def _apply(self) -> None:
        before = self._state
        while actions := self.machine.actions():  # an action may make more (a call that fails at once)
            for action in actions:
                self._do(action)
        self._state = self.machine.state
        if self._state is not before:
            self.say(f"handset: {self._state.value}")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.machine.next_deadline_ms()
        if due is not None:
            self._timer = self._loop.call_later(max(0, due - self.now_ms()) / 1000, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.machine.handle_timer(now_ms=self.now_ms())
        self._apply()

    def _do(self, action: Action) -> None:
        ua, act = self.ua, action.act
        if act is Act.TONE:
            tone = action.value
            assert isinstance(tone, Tone)
            self.say("tone off" if tone is Tone.NONE else f"tone: {tone.value}")
            if ua is not None:
                ua.play_tone(self._tone_files.get(tone))
        elif act in (Act.RINGER_ON, Act.RINGER_OFF):
            self._ringing = act is Act.RINGER_ON
            if self._ringing:
                self.say(f"ringing: call from {action.value}")
            if self.panel is not None:
                self.panel.ring(self._ringing)
        elif act in (Act.IN_USE_LAMP, Act.MESSAGE_LAMP):
            lamp = "in_use" if act is Act.IN_USE_LAMP else "message"
            self._lamps[lamp] = bool(action.value)
            if self.panel is not None:
                self.panel.lamp(lamp, self._lamps[lamp])
            if act is Act.MESSAGE_LAMP:
                self.say(f"message lamp {'on' if action.value else 'off'}")
        elif act is Act.MISSED:
            self.say(f"missed call from {action.value}")
        elif ua is None:
            return
        elif act is Act.CALL:
            self.say(f"calling {action.value}")
            try:
                call = ua.place(str(action.value))
            except HandsetError as e:  # fails like a call refused: reorder tone
                self.say(f"error: {e}")
                self.machine.placed(call := "not placed")
                self.machine.failed(call, 500, now_ms=self.now_ms())
                return
            self.machine.placed(call)
        elif act is Act.ANSWER and action.call:
            ua.answer(action.call)
        elif act is Act.REJECT and action.call:
            ua.reject(action.call, int(action.value))  # type: ignore[call-overload]
        elif act is Act.HANG_UP:
            ua.hangup(action.call)
        elif act is Act.HOLD and action.call:
            ua.hold(action.call)
        elif act is Act.RESUME and action.call:
            ua.resume(action.call)
        elif act is Act.SEND_DTMF and action.call:
            ua.dtmf(action.call, str(action.value))


async def terminal(phone: Deskphone, lines: asyncio.StreamReader, stop: Callable[[], None]) -> None:
    """A person at a terminal: Enter alone lifts or hangs up the handset, digits (and * #)
    are keys, `quit` ends the phone."""
    phone.say("terminal handset: Enter lifts and hangs up, digits dial, quit ends")
    while line := await lines.readline():
        text = line.decode(errors="replace").strip()
        if text == "quit":
            stop()
            return
        if not text:
            phone.toggle_hook()
            continue
        for key in text:
            if key in "0123456789*#":
                phone.key(key)
            else:
                phone.say(f"error: no key {key!r} (digits, * and #; Enter for the hook)")
                break
