"""Call-progress tones made here, sample by sample, from a board's `ToneSpec` (frequencies and
an on/off cadence), so they play through the same sound device as the call.

`Tone.samples(start, count)` gives any stretch of the tone by its sample offset: a player
asks for the next block whenever the device wants one, and the cadence stays in step
however the blocks fall. Levels are -13 dBm0-ish per frequency (a quarter of full scale),
so two together never clip.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .board import ToneSpec

LEVEL = 0.25  # of full scale, per frequency
RAMP_MS = 5  # each burst fades in and out: no click at the edges


class Tone:
    def __init__(self, spec: ToneSpec, rate_hz: int = 16_000) -> None:
        self.spec = spec
        self.rate_hz = rate_hz
        self._cadence = [max(1, ms * rate_hz // 1000) for ms in spec.cadence_ms]
        self._period = sum(self._cadence)

    def samples(self, start: int, count: int) -> np.ndarray:
        """Samples `start` to `start + count` of the tone, 16-bit signed."""
        t = np.arange(start, start + count, dtype=np.float64)
        wave = sum(np.sin(2 * np.pi * f * t / self.rate_hz) for f in self.spec.freqs_hz) * LEVEL
        wave = np.asarray(wave) * self.envelope(t)
        pcm: np.ndarray = np.round(wave * 32767).astype(np.int16)
        return pcm

    def write_wav(self, path: Path) -> None:
        """One whole period of the tone (its cadence, or a second when continuous) as a mono
        16-bit WAV, which a player loops without a seam."""
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate_hz)
            w.writeframes(self.samples(0, self._period or self.rate_hz).astype("<i2").tobytes())

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """1 where the tone sounds, 0 in its pauses, with short ramps between."""
        if not self._cadence:
            return np.ones_like(t)
        phase = np.mod(t, self._period)
        gain = np.zeros_like(t)
        ramp = max(1, RAMP_MS * self.rate_hz // 1000)
        at = 0
        for i, length in enumerate(self._cadence):
            if i % 2 == 0:  # on
                inside = (phase >= at) & (phase < at + length)
                edge = np.minimum(phase - at, at + length - 1 - phase)
                gain = np.where(inside, np.minimum(1.0, (edge + 1) / ramp), gain)
            at += length
        return gain
