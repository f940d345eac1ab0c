"""Test tones: write a sine WAV, find the strongest frequency of a recording (numpy FFT)."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

RATE = 8000  # PCMU's rate: the tone goes through the codec unchanged in rate


def write_tone(path: Path, hz: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> None:
    frames = int(seconds * rate)
    samples = (int(amplitude * 32767 * math.sin(2 * math.pi * hz * i / rate)) for i in range(frames))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{frames}h", *samples))


def dominant_frequency(path: Path) -> tuple[float, float]:
    """The frequency with the most energy (Hz) and the recording's RMS level (0..1).

    Raises ValueError for a file that is not 16-bit PCM WAV or holds no sound."""
    import numpy as np

    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: not 16-bit PCM")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    if data.size < rate // 10:
        raise ValueError(f"{path}: less than 0.1 s of audio")
    rms = float(np.sqrt(np.mean(data ** 2)) / 32768)
    spectrum = np.abs(np.fft.rfft(data * np.hanning(data.size)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    return peak * rate / data.size, rms
