"""Endpointing from CTC blanks: decides where an utterance ends in a continuous stream.

A frame is silence when blank is its most likely token. An utterance ends when
  1. nothing has been decoded and the trailing silence reaches `silence_no_text`,
  2. something has been decoded and the trailing silence reaches `silence_after_text`, or
  3. the utterance reaches `max_utterance` seconds, whatever it holds.
(The rules of Kaldi's and sherpa-onnx's endpointers, on CTC blanks.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asr_engine.tokenizer import BLANK_ID

__all__ = ["EndpointConfig", "Endpointer"]


@dataclass(frozen=True)
class EndpointConfig:
    silence_no_text: float = 2.4  # seconds of trailing silence that end an utterance with no text
    silence_after_text: float = 1.2  # seconds of trailing silence that end an utterance after text
    max_utterance: float = 20.0  # seconds: an utterance ends here whatever it holds

    def __post_init__(self):
        for name in ("silence_no_text", "silence_after_text", "max_utterance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
                raise ValueError(f"endpoint {name} must be a number of seconds in (0, 3600], got {v!r}")


class Endpointer:
    """Counts an utterance's frames and its trailing silence, chunk by chunk."""

    def __init__(self, config: EndpointConfig, frame_shift_s: float):
        self.config = config
        self._no_text = round(config.silence_no_text / frame_shift_s)
        self._after_text = round(config.silence_after_text / frame_shift_s)
        self._max = round(config.max_utterance / frame_shift_s)
        self.reset()

    def reset(self) -> None:
        self.frames = 0  # frames in this utterance
        self.trailing_silence = 0  # of which the last ones were blank

    def update(self, log_probs: np.ndarray) -> None:
        """log_probs (T, V): the utterance's next T frames."""
        speech = np.flatnonzero(np.asarray(log_probs).argmax(-1) != BLANK_ID)
        n = log_probs.shape[0]
        self.frames += n
        if len(speech):
            self.trailing_silence = n - 1 - int(speech[-1])
        else:
            self.trailing_silence += n

    def detected(self, has_text: bool) -> bool:
        if self.frames >= self._max:
            return True
        return self.trailing_silence >= (self._after_text if has_text else self._no_text)
