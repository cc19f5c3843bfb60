"""Results: what a file, an array or a stream's utterance decodes to, built in one place
(`make_result`) for sessions, whole files, the server and the output formats."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from asr_engine.audio import AudioError, load_audio, wav_shortfall
from asr_engine.decoding import Word, words_from_hypothesis
from asr_engine.tokenizer import Tokenizer

__all__ = ["Result", "join_results", "make_result", "read_files", "transcribe_paths", "truncation"]


@dataclass
class Result:
    path: str
    text: str = ""
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio
    start: float = 0.0  # where this result starts in its stream (seconds; continuous streaming)
    frames: int = 0  # encoder frames
    top_frames: int = 0  # encoder frames that ran the top layers
    nbest: list[str] = field(default_factory=list)
    # the recognizer's words, when `words` are written otherwise (punctuation, casing, numbers as figures)
    spoken: list[Word] | None = None
    error: str | None = None
    warning: str | None = None  # decoded, but something about the input is off (a truncated file)
    # a second pass not yet run (a session's `defer_second_pass`): () -> this result in its order
    second_pass: Callable[[], "Result"] | None = field(default=None, repr=False, compare=False)

    @property
    def spoken_text(self) -> str:
        """The recognizer's words as one text (what WER is counted on), written or not."""
        return self.text if self.spoken is None else " ".join(w.word for w in self.spoken)

    @property
    def top_fraction(self) -> float:
        return self.top_frames / self.frames if self.frames else 0.0

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        d = {"path": self.path, "text": self.text, "words": [w.to_dict() for w in self.words],
             "start": round(self.start, 3), "duration": round(self.duration, 3),
             "top_fraction": round(self.top_fraction, 4)}
        if len(self.nbest) > 1:
            d["nbest"] = self.nbest
        if self.warning:
            d["warning"] = self.warning
        return d


def join_results(path: str, parts: list[Result], duration: float) -> Result:
    """A stream's consecutive utterances (continuous streaming) as one result for the whole stream."""
    if len(parts) == 1 and parts[0].start == 0:
        return dataclasses.replace(parts[0], path=path, duration=duration)
    text = " ".join(p.text for p in parts if p.text)
    spoken = None if all(p.spoken is None for p in parts) else \
        [w for p in parts for w in (p.words if p.spoken is None else p.spoken)]
    return Result(path, text=text, words=[w for p in parts for w in p.words], duration=duration,
                  frames=sum(p.frames for p in parts), top_frames=sum(p.top_frames for p in parts), nbest=[text],
                  spoken=spoken)


def transcribe_paths(paths: list[str | Path], decode) -> list[Result]:
    """Read files, decode the readable ones with decode(arrays, their paths) -> results, and return
    a result per path in order: the unreadable ones as errors, truncated ones with their warning."""
    audios, ok, results, warnings = read_files(paths)
    for r in decode(audios, ok):
        r.warning = warnings.get(r.path)
        results[r.path] = r
    return [results[str(p)] for p in paths]


def read_files(paths: list[str | Path]) -> tuple[list[np.ndarray], list[str], dict[str, Result], dict[str, str]]:
    """Load files as 16 kHz arrays: (arrays, their paths, error results of the unreadable ones,
    warnings about the readable ones: a truncated WAV is decoded as far as it goes, and said so)."""
    audios, ok, errors, warnings = [], [], {}, {}
    for p in paths:
        try:
            audios.append(load_audio(p))
            ok.append(str(p))
        except AudioError as e:
            errors[str(p)] = Result(str(p), error=str(e))
            continue
        if said := truncation(p):
            warnings[str(p)] = said
    return audios, ok, errors, warnings


def truncation(path: str | Path) -> str | None:
    """A warning for a WAV file whose data stops short of what its header promises (libsndfile reads the prefix
    without a word), or None."""
    missing = wav_shortfall(path)
    return f"{path}: truncated: {missing:.2f} s of the audio its header promises are missing" if missing > 0 else None


def make_result(path: str, search, nbest: int, tokenizer: Tokenizer, frame_shift_s: float, start_frame: int = 0,
                duration: float = 0.0, frames: int = 0, top_frames: int = 0, rerank=None, hyps: list | None = None
                ) -> Result:
    """A search's best hypotheses as a Result: text, words with times from the stream's start
    (`start_frame`: the stream frame of the search's frame 0), n-best, skipping statistics.
    rerank: a second pass, every live hypothesis -> the same in its order (Engine.rerank).
    hyps: the search's live hypotheses, best first, taken earlier (then `search` is not read)."""
    if hyps is None:
        hyps = search.hypotheses(nbest if rerank is None else len(search.beams))
    hyps = (hyps if rerank is None else rerank(hyps))[:nbest]
    return Result(path, text=tokenizer.decode(list(hyps[0].tokens)),
                  words=words_from_hypothesis(hyps[0], tokenizer, frame_shift_s, start_frame),
                  start=start_frame * frame_shift_s, duration=duration, frames=frames, top_frames=top_frames,
                  nbest=[tokenizer.decode(list(h.tokens)) for h in hyps])
