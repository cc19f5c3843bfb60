"""Offline (whole-file) transcription: audio in, text, words and skipping statistics out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from asr_engine.audio import SAMPLE_RATE, AudioError, load_audio, wav_shortfall
from asr_engine.checkpoint import Checkpoint
from asr_engine.context import hotword_graph
from asr_engine.decoding import (GreedySearch, PrefixBeamSearch, Word, advance_searches, check_beam,
                                 words_from_hypothesis)
from asr_engine.features import Fbank, num_frames
from asr_engine.kernels import select_ops
from asr_engine.model.encoder import SkipOptions

if TYPE_CHECKING:
    from asr_engine.lm.fusion import ShallowFusion

__all__ = ["DecodeOptions", "Result", "Transcriber", "check_lm", "join_results", "read_files",
           "transcribe_paths"]


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 1  # 1 = greedy
    skip_threshold: float | None = None  # None: the model's default; >= 1.0: no skipping
    skip_dilation: int | None = None
    nbest: int = 1
    hotwords: tuple[str, ...] = ()  # phrases to favour (needs beam > 1)
    hotword_boost: float = 1.5  # log-score added per matched token
    lm: "ShallowFusion | None" = None  # an lm.fusion.ShallowFusion (needs beam > 1)


def check_lm(lm, beam: int) -> None:
    if lm is not None and beam == 1:
        raise ValueError("a language model needs beam search: set a beam of 4 or more")


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
    error: str | None = None
    warning: str | None = None  # decoded, but something about the input is off (a truncated file)

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
    return Result(path, text=text, words=[w for p in parts for w in p.words], duration=duration,
                  frames=sum(p.frames for p in parts), top_frames=sum(p.top_frames for p in parts), nbest=[text])


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
        missing = wav_shortfall(p)
        if missing > 0:
            warnings[str(p)] = f"{p}: truncated: {missing:.2f} s of the audio its header promises are missing"
    return audios, ok, errors, warnings


class Transcriber:
    """Runs a checkpoint over whole utterances, several at a time."""

    def __init__(self, ckpt: Checkpoint, options: DecodeOptions = DecodeOptions(), device: str = "cpu"):
        check_beam(options.beam, options.nbest)
        check_lm(options.lm, options.beam)
        self.ckpt = ckpt
        self.device = torch.device(device)
        self.model = ckpt.model.to(self.device).eval()
        self.ops = self.model.ops = select_ops(self.device)  # Triton kernels on CUDA, torch references on the CPU
        self.fbank = Fbank(ckpt.features).to(self.device)
        self.skip = SkipOptions.resolve(self.model.cfg, options.skip_threshold, options.skip_dilation)
        self.options = options
        self.context = hotword_graph(options.hotwords, options.hotword_boost, ckpt.tokenizer, options.beam)

    def encode(self, audios: list[np.ndarray]) -> list[tuple[torch.Tensor, int] | None]:
        """16 kHz float32 arrays, as one batch -> per array: (log-probs (T, V) on the CPU, frames that ran
        the top layers), or None for audio too short for one encoder frame."""
        min_frames = self.model.subsampling.receptive_field  # fewer gives no encoder frame
        live = [i for i, a in enumerate(audios) if num_frames(len(a), self.ckpt.features) >= min_frames]
        encoded: list[tuple[torch.Tensor, int] | None] = [None] * len(audios)
        if not live:
            return encoded
        with torch.inference_mode():
            feats = [self.fbank(torch.from_numpy(audios[i]).to(self.device)[None])[0] for i in live]
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (B, T, F)
            lengths = torch.tensor([f.shape[0] for f in feats], device=self.device)
            out = self.model(x, lengths, self.skip)
            log_probs = self.ops.log_probs(out.final.raw).float().cpu()
        for j, i in enumerate(live):
            n = int(out.lengths[j])
            encoded[i] = (log_probs[j, :n], int(out.top_mask[j, :n].sum()))
        return encoded

    def transcribe_arrays(self, audios: list[np.ndarray], paths: list[str]) -> list[Result]:
        """16 kHz float32 arrays -> results; audio too short for one frame gives an empty text."""
        results = [Result(p, duration=len(a) / SAMPLE_RATE) for a, p in zip(audios, paths)]
        encoded = [(i, e) for i, e in enumerate(self.encode(audios)) if e is not None]
        o = self.options
        searches = [GreedySearch() if o.beam == 1 else PrefixBeamSearch(o.beam, context=self.context, lm=o.lm)
                    for _ in encoded]
        advance_searches(searches, [lp for _, (lp, _) in encoded])  # with an LM: one batched LM step per frame
        for search, (i, (lp, top)) in zip(searches, encoded):
            self._decode(results[i], search.hypotheses(o.nbest))
            results[i].frames = lp.shape[0]
            results[i].top_frames = top
        return results

    def _decode(self, res: Result, hyps) -> None:
        tok = self.ckpt.tokenizer
        res.text = tok.decode(list(hyps[0].tokens))
        res.words = words_from_hypothesis(hyps[0], tok, self.model.cfg.frame_shift_s)
        res.nbest = [tok.decode(list(h.tokens)) for h in hyps]

    def transcribe_files(self, paths: list[str | Path]) -> list[Result]:
        """Read and transcribe files as one batch; unreadable files get an error result."""
        return transcribe_paths(paths, self.transcribe_arrays)
