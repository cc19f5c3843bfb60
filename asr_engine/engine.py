"""Streaming recognition API: an Engine holds the model; each audio stream is a Session.

    engine = Engine.load()                      # the bundled model, or a checkpoint folder
    s = engine.session(sample_rate=8000)        # or session(16000, SessionOptions(hotwords=..., endpoint=...))
    s.accept_audio(samples)                     # any chunk size, int16 or float
    engine.step()                               # runs every ready session as one batch
    s.result().text                             # partial text; .stable is the part that cannot change
    s.pop_finals()                              # continuous mode: utterances closed by the endpointer
    final = s.finish()                          # flushes the tail, returns a transcribe.Result

A session turns audio into fbank frames as it arrives; `Engine.step` takes one chunk
of C encoder frames from every session that has one (or that has ended) and runs them
as one batch through `Encoder.forward_chunk`, so results do not depend on which
sessions happen to share a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from asr_engine.audio import SAMPLE_RATE, AudioError, to_float32
from asr_engine.checkpoint import Checkpoint, load_checkpoint
from asr_engine.context import hotword_graph
from asr_engine.decoding import GreedySearch, PrefixBeamSearch, advance_searches, check_beam, words_from_hypothesis
from asr_engine.endpoint import EndpointConfig, Endpointer
from asr_engine.features import Fbank, FbankStream
from asr_engine.kernels import select_ops
from asr_engine.model.encoder import SkipOptions
from asr_engine.model.streaming import StreamState
from asr_engine.transcribe import Result, check_lm, join_results, transcribe_paths

if TYPE_CHECKING:
    from asr_engine.lm.fusion import ShallowFusion

__all__ = ["EndpointConfig", "Engine", "EngineOptions", "Partial", "Session", "SessionOptions"]


@dataclass(frozen=True)
class EngineOptions:
    chunk_frames: int | None = None  # encoder frames per step (a multiple of the model's chunk); None: one chunk
    beam: int = 1  # 1 = greedy
    nbest: int = 1
    skip_threshold: float | None = None  # None: the model's default; >= 1.0: no skipping
    skip_dilation: int | None = None
    max_batch: int = 64  # sessions per forward pass
    lm: "ShallowFusion | None" = None  # an lm.fusion.ShallowFusion for every session (needs beam > 1)


@dataclass(frozen=True)
class SessionOptions:
    hotwords: tuple[str, ...] = ()  # phrases to favour (needs beam search)
    hotword_boost: float = 1.5  # log-score added per matched token
    endpoint: EndpointConfig | None = None  # continuous mode: the stream is split into utterances


@dataclass(frozen=True)
class Partial:
    text: str  # best hypothesis so far
    stable: str  # its prefix that no later audio can change


class Engine:
    def __init__(self, ckpt: Checkpoint, options: EngineOptions = EngineOptions(), device: str = "cpu"):
        cfg = ckpt.model.cfg
        check_beam(options.beam, options.nbest)
        check_lm(options.lm, options.beam)
        fixed = getattr(ckpt.model, "chunk_frames", None)  # an ONNX export takes one chunk size
        if fixed and options.chunk_frames and options.chunk_frames != fixed:
            raise ValueError(f"this ONNX export takes chunks of {fixed} frames; export again with --chunk-frames "
                             f"{options.chunk_frames}")
        self.chunk = options.chunk_frames or fixed or cfg.chunk_size
        if self.chunk % cfg.chunk_size:
            raise ValueError(f"chunk_frames must be a multiple of the model's chunk_size ({cfg.chunk_size})")
        self.ckpt, self.options = ckpt, options
        self.device = torch.device(device)
        self.model = ckpt.model.to(self.device).eval() if isinstance(ckpt.model, torch.nn.Module) else ckpt.model
        self.ops = select_ops(self.device)  # Triton kernels on CUDA, torch references on the CPU
        if isinstance(self.model, torch.nn.Module):
            self.model.ops = self.ops
        self.fbank = getattr(self.model, "fbank", None) or Fbank(ckpt.features)  # an ONNX export has its own
        self.skip = SkipOptions.resolve(cfg, options.skip_threshold, options.skip_dilation)
        sub = self.model.subsampling
        self.window = sub.input_frames(self.chunk)  # feature frames per step
        self.hop = sub.stride * self.chunk
        self.sessions: list[Session] = []

    @classmethod
    def load(cls, model: str | Path | None = None, options: EngineOptions = EngineOptions(),
             device: str = "cpu") -> "Engine":
        return cls(load_checkpoint(model, device), options, device)

    def session(self, sample_rate: int = SAMPLE_RATE, options: SessionOptions = SessionOptions()) -> "Session":
        s = Session(self, sample_rate, options)
        self.sessions.append(s)
        return s

    def close(self, session: "Session") -> None:
        """Forget a session (the engine keeps every open one for `step()` without arguments)."""
        if session in self.sessions:
            self.sessions.remove(session)

    def step(self, sessions: list["Session"] | None = None) -> list["Session"]:
        """Run one chunk of every ready session; returns the sessions that advanced."""
        ready = [s for s in (self.sessions if sessions is None else sessions) if s.ready]
        for a in range(0, len(ready), self.options.max_batch):
            self._run(ready[a: a + self.options.max_batch])
        return ready

    def run(self, sessions: list["Session"] | None = None) -> None:
        """Step until no session has a full chunk (or, once finished, any audio) left."""
        while self.step(sessions):
            pass

    def transcribe_arrays(self, audios: list[np.ndarray], paths: list[str],
                          options: SessionOptions = SessionOptions(),
                          progress: Callable[[float, float], None] | None = None) -> list[Result]:
        """Stream whole 16 kHz arrays as live sources would arrive: every session gets one step's
        audio, then all step together. A stream's utterances (continuous mode) are joined into one
        result with times from the stream's start. `progress(done, total)` hears, after each step,
        how many seconds of all the arrays' audio have been decoded."""
        results = []
        piece = self.hop * self.fbank.cfg.window_shift
        total, done = sum(len(x) for x in audios) / SAMPLE_RATE, 0  # done: samples
        for a in range(0, len(audios), self.options.max_batch):
            group = audios[a: a + self.options.max_batch]
            sessions = [self.session(SAMPLE_RATE, options) for _ in group]
            parts: list[list[Result]] = [[] for _ in group]
            for i in range(0, max(len(x) for x in group), piece):
                for s, x in zip(sessions, group):
                    if i < len(x):
                        s.accept_audio(x[i: i + piece])
                self.step(sessions)
                for s, p in zip(sessions, parts):
                    p += s.pop_finals()
                if progress is not None:
                    done += sum(min(piece, max(0, len(x) - i)) for x in group)
                    progress(done / SAMPLE_RATE, total)
            for s in sessions:
                s.input_done()
            self.run(sessions)
            for s, p, path in zip(sessions, parts, paths[a:]):
                p += s.pop_finals()
                last = s.final(path)
                results.append(join_results(path, p + [last], s.samples / SAMPLE_RATE))
                self.close(s)
        return results

    def transcribe_files(self, paths: list[str | Path], options: SessionOptions = SessionOptions(),
                         progress: Callable[[float, float], None] | None = None) -> list[Result]:
        """Read files and stream them (see transcribe_arrays); unreadable files get an error result."""
        return transcribe_paths(paths, lambda audios, ok: self.transcribe_arrays(audios, ok, options, progress))

    def _run(self, batch: list["Session"]) -> None:
        wins, n_valid = zip(*(s._take_window() for s in batch))
        feats = torch.stack(wins).to(self.device)  # (B, window, F)
        state = StreamState.stack([s._state for s in batch])
        with torch.inference_mode():
            out, new = self.model.forward_chunk(feats, torch.tensor(n_valid, device=self.device), state, self.skip)
            log_probs = self.ops.log_probs(out.final.raw).float().cpu()  # (B, C, V)
            top = out.top_mask.cpu()
        chunks = [log_probs[j, : n_valid[j]] for j in range(len(batch))]
        advance_searches([s._search for s in batch], chunks)  # with an LM: one batched LM step per frame
        for j, s in enumerate(batch):
            s._state = new.select([j])
            s._advanced(chunks[j], int(top[j, : n_valid[j]].sum()))


class Session:
    """One audio stream. Not thread-safe: feed it and step its engine from one thread."""

    def __init__(self, engine: Engine, sample_rate: int = SAMPLE_RATE, options: SessionOptions = SessionOptions()):
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
            raise AudioError(f"unsupported sample rate {sample_rate!r}: expected an integer in 8000..192000 Hz")
        self.engine, self.sample_rate, self.options = engine, sample_rate, options
        self._context = hotword_graph(options.hotwords, options.hotword_boost, engine.ckpt.tokenizer,
                                      engine.options.beam)
        shift = engine.model.cfg.frame_shift_s
        self._endpointer = Endpointer(options.endpoint, shift) if options.endpoint is not None else None
        self.reset()

    def reset(self) -> None:
        """Start over: a new utterance, nothing decoded."""
        eng = self.engine
        self._resampler = None
        if self.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="VHQ")
        self._fbank = FbankStream(eng.fbank)
        self._feats = torch.zeros(0, eng.fbank.cfg.num_mel_bins)  # (N, F) not yet consumed
        self._feat_total = 0  # feature frames since the start
        self._state = StreamState.zeros(eng.model.cfg, 1, eng.device)
        self.samples = 0  # 16 kHz samples received
        self.frames = 0  # encoder frames decoded
        self.top_frames = 0  # of which ran the top layers
        self.input_finished = False
        self._finals: list[Result] = []
        self._new_utterance()

    def _new_utterance(self) -> None:
        beam = self.engine.options.beam
        self._search = (GreedySearch() if beam == 1 else
                        PrefixBeamSearch(beam, context=self._context, lm=self.engine.options.lm))
        self._utt_frame, self._utt_top = self.frames, self.top_frames  # where the utterance starts
        if self._endpointer is not None:
            self._endpointer.reset()

    def _advanced(self, log_probs: torch.Tensor, top_frames: int) -> None:
        """The search has decoded the next frames' log-probs (T, V): count them; in continuous mode,
        close the utterance at an endpoint."""
        self.frames += log_probs.shape[0]
        self.top_frames += top_frames
        if self._endpointer is None:
            return
        self._endpointer.update(log_probs)
        if self._endpointer.detected(has_text=bool(self._search.hypotheses(1)[0].tokens)):
            res = self.final(end=self.frames * self.engine.model.cfg.frame_shift_s)
            if res.text:
                self._finals.append(res)
            self._new_utterance()

    def pop_finals(self) -> list[Result]:
        """Utterances the endpointer closed since the last call (continuous mode), oldest first."""
        out, self._finals = self._finals, []
        return out

    def accept_audio(self, samples: np.ndarray) -> None:
        """Append audio at the session's sample rate: int16 PCM or float in [-1, 1], 1-D."""
        if self.input_finished:
            raise RuntimeError("audio after finish(): call reset() to start a new utterance")
        x = to_float32(samples)
        if x.ndim != 1:
            raise AudioError(f"expected mono 1-D samples, got shape {x.shape}")
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self._add(x)

    def _add(self, x: np.ndarray) -> None:
        self.samples += len(x)
        new = self._fbank.accept(torch.from_numpy(np.ascontiguousarray(x)))
        self._feats = torch.cat([self._feats, new])
        self._feat_total += new.shape[0]

    def input_done(self) -> None:
        """No more audio: the next steps flush what is left."""
        if not self.input_finished and self._resampler is not None:
            self._add(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.input_finished = True

    @property
    def _frames_total(self) -> int:
        """Encoder frames the audio so far yields (all of it, once the input is finished)."""
        return int(self.engine.model.subsampling.output_lengths(torch.tensor(self._feat_total)))

    @property
    def ready(self) -> bool:
        if self._feats.shape[0] >= self.engine.window:
            return True
        return self.input_finished and self._frames_total > self.frames

    def _take_window(self) -> tuple[torch.Tensor, int]:
        eng = self.engine
        n_valid = min(eng.chunk, self._frames_total - self.frames)
        win = self._feats[: eng.window]
        if win.shape[0] < eng.window:  # the stream's tail: pad; the padding yields invalid frames only
            win = torch.cat([win, win.new_zeros(eng.window - win.shape[0], win.shape[1])])
        self._feats = self._feats[eng.hop:]
        return win, n_valid

    def result(self) -> Partial:
        tok = self.engine.ckpt.tokenizer
        best = self._search.hypotheses(1)[0]
        return Partial(tok.decode(list(best.tokens)), tok.decode(list(best.tokens[: self._search.stable_length()])))

    def final(self, path: str = "", end: float | None = None) -> Result:
        """The current utterance so far, as an offline Result (words with times from the stream's
        start, n-best, skipping statistics). It runs from `start` to `end` (default: the audio's end)."""
        eng = self.engine
        tok = eng.ckpt.tokenizer
        shift = eng.model.cfg.frame_shift_s
        hyps = self._search.hypotheses(eng.options.nbest)
        start = self._utt_frame * shift
        end = self.samples / SAMPLE_RATE if end is None else end
        return Result(path, text=tok.decode(list(hyps[0].tokens)),
                      words=words_from_hypothesis(hyps[0], tok, shift, self._utt_frame),
                      start=start, duration=max(0.0, end - start), frames=self.frames - self._utt_frame,
                      top_frames=self.top_frames - self._utt_top, nbest=[tok.decode(list(h.tokens)) for h in hyps])

    def finish(self, path: str = "") -> Result:
        """End the input, decode everything left (this session alone) and return the final result
        (in continuous mode: of the last utterance; pop_finals() has the ones before it)."""
        self.input_done()
        self.engine.run([self])
        return self.final(path)
