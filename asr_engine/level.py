"""Quiet recordings brought up to the level the model was trained at; recordings at usual levels are left alone.

Training scaled every synthetic utterance to a sample peak between 0.05 and 0.95 (`data.synth`: uniform, and 0.9
unaugmented), and the model floors its log-mel features at a fixed level (`feat_floor`, the streaming stand-in for
Whisper's per-utterance clamp at its maximum minus 8). Speech far quieter than any it trained on loses the detail
under that floor: dev_real scaled by -30 dB (peak -33 dBFS) read 37.9% greedy in full context, by -40 dB 56.9%,
against 32.6% as recorded (docs/streaming.md "Quiet input"). So a recording whose peak is under QUIET_PEAK is
multiplied up to it, by at most MAX_GAIN; a louder one is not touched (gain 1: every transcript of it is the same).

- A whole recording (files, `Engine.transcribe`): one gain from its peak, as training scaled each utterance.
- A live stream cannot know its peak in advance: `StreamGain` raises the gain as the stream stays quiet and never
  lowers the samples it has passed. It starts at 1 and holds it for HOLD_S (a speaker who waits a moment before
  talking, in a quiet room, is not heard as a loud hiss), then rises by RISE_DB_PER_S until the loudest sample
  so far reaches QUIET_PEAK; a louder sample lowers it at once, and from the first sample at QUIET_PEAK on, the
  stream passes untouched. Sample by sample, from absolute positions: the same stream cut into any messages gets
  the same gains.

Not an automatic gain control (WebRTC's AGC compresses and rides the level, which the model never trained on):
training normalised each utterance's peak, and this does the same, only upward. A dozen lines of numpy.
"""

from __future__ import annotations

import numpy as np

from asr_engine.audio import SAMPLE_RATE

__all__ = ["HOLD_S", "MAX_GAIN", "QUIET_PEAK", "RISE_DB_PER_S", "StreamGain", "brought_up", "peak_gain",
           "recording_gain"]

QUIET_PEAK = 0.1  # -20 dBFS: a peak training rarely went under (its peaks: 0.05-0.95); quieter audio comes up to it
MAX_GAIN = 100.0  # 40 dB: a 16-bit recording peaking at 33 still comes up; digital silence stays silence
HOLD_S = 2.0  # a stream's first seconds at gain 1, however quiet
RISE_DB_PER_S = 6.0  # then the gain rises this fast while nothing reaches QUIET_PEAK (40 dB after 8.7 s)

_FLOOR = QUIET_PEAK / MAX_GAIN  # a peak under it gets MAX_GAIN


def recording_gain(samples: np.ndarray) -> float:
    """The gain a whole recording is multiplied by: QUIET_PEAK over its peak, within 1..MAX_GAIN."""
    return peak_gain(float(np.abs(samples).max()) if len(samples) else QUIET_PEAK)


def peak_gain(peak: float) -> float:
    """The gain of a recording whose loudest sample is `peak` (its magnitude)."""
    return QUIET_PEAK / max(_FLOOR, min(peak, QUIET_PEAK))


def brought_up(samples: np.ndarray) -> np.ndarray:
    """A whole recording at its gain (the same array when that is 1)."""
    gain = recording_gain(samples)
    return samples if gain == 1.0 else (samples * np.float32(gain)).astype(np.float32)


class StreamGain:
    """A live stream's gain, sample by sample (see the module's doc). Call it with each piece of the stream's
    16 kHz float32 samples, in order; it returns them at their gains."""

    def __init__(self) -> None:
        self.seen = 0  # samples so far
        self.peak = 0.0  # the loudest so far
        self.gain = 1.0  # the last sample's

    @property
    def settled(self) -> bool:
        """The stream has reached QUIET_PEAK: every later sample passes at gain 1."""
        return self.peak >= QUIET_PEAK

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, start = len(x), self.seen
        self.seen += n
        if self.settled or not n:
            return x
        peak = np.maximum.accumulate(np.abs(x))
        np.maximum(peak, self.peak, out=peak)
        self.peak = float(peak[-1])
        rise = (np.arange(start, start + n, dtype=np.float64) / SAMPLE_RATE - HOLD_S).clip(min=0.0)
        # the level the gain assumes: the loudest sample so far, or while that is quieter, QUIET_PEAK falling
        # by RISE_DB_PER_S once the hold is over
        assumed = np.maximum(peak, QUIET_PEAK * 10.0 ** (-RISE_DB_PER_S / 20.0 * rise))
        gain = QUIET_PEAK / np.clip(assumed, _FLOOR, QUIET_PEAK)
        self.gain = float(gain[-1])
        return (x * gain).astype(np.float32)
