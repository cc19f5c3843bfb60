"""The recognizer: an Engine holds a model (torch or ONNX) and the decoding options; each audio
stream is a Session; whole files and arrays are the engine's file mode.

    engine = Engine.load()                      # the bundled model, or a checkpoint/ONNX folder
    engine.transcribe(samples, sample_rate)     # one array -> Result
    engine.transcribe_files(["a.wav"])          # files -> Results (unreadable ones as errors)
    s = engine.session(sample_rate=8000)        # or session(16000, SessionOptions(hotwords=..., endpoint=...))
    s.accept_audio(samples)                     # any chunk size, int16 or float in -1..1
    engine.step()                               # runs every ready session as one batch
    s.result().text                             # partial text; .stable is the part that cannot change
    s.pop_finals()                              # continuous mode: utterances closed by the endpointer
    final = s.finish()                          # flushes the tail, returns a Result
    Engine(model, options, final_model=full)    # two passes: each utterance's final decoded again in full context

A session turns audio into fbank frames as it arrives; `Engine.step` takes one chunk of C
encoder frames from every session that has one (or that has ended) and runs them as one
batch through the model's `forward_chunk`, so results do not depend on which sessions
happen to share a batch. Between the two the contract is `Session.take_window()` (the next
chunk's features) and `Session.advance(...)` (its decoded log-probs). The sessions' states are
rows of the engine's `StatePool`: a step gathers its sessions' rows and writes them back at once.

Nothing here imports torch: with an ONNX model the whole path is numpy and ONNX Runtime.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from asr_engine.audio import (PAUSE_HOP, SAMPLE_RATE, AudioError, audio_blocks, check_sample_rate, declared_seconds,
                              mono_float32, pause_cuts, resample)
from asr_engine.context import hotword_graph
from asr_engine.decoding import GreedySearch, PrefixBeamSearch, advance_searches, check_beam
from asr_engine.endpoint import EndpointConfig, Endpointer
from asr_engine.features import FbankStream, frames_of
from asr_engine.itn import figures_when, written_result
from asr_engine.level import QUIET_PEAK, StreamGain, brought_up, peak_gain
from asr_engine.model.config import SkipOptions
from asr_engine.model.streaming import StatePool, StateRows, StreamState
from asr_engine.rescore import MAX_FRAMES
from asr_engine.results import Result, join_results, make_result, transcribe_paths, truncation

if TYPE_CHECKING:
    from asr_engine.lm.fusion import ShallowFusion
    from asr_engine.punctuation import Punctuator
    from asr_engine.rescore import WhisperRescorer

# the longest utterance the second pass decodes again (the audio a session keeps for it is bounded by this);
# a longer one keeps its first pass's final
FINAL_PASS_SECONDS = 30.0

__all__ = ["DecodeOptions", "EndpointConfig", "Engine", "Partial", "Session", "SessionOptions"]


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 1  # 1 = greedy
    nbest: int = 1
    skip_threshold: float | None = None  # None: the model's default; >= 1.0: no skipping
    skip_dilation: int | None = None
    hotwords: tuple[str, ...] = ()  # phrases to favour in every session (needs beam > 1)
    hotword_boost: float = 1.5  # log-score added per matched token
    lm: "ShallowFusion | None" = None  # an lm.fusion.ShallowFusion (needs beam > 1)
    rescorer: "WhisperRescorer | None" = None  # a second pass over each utterance's beam (needs beam > 1)
    chunk_frames: int | None = None  # streaming: encoder frames per step (a multiple of the model's chunk)
    max_batch: int = 64  # sessions (streaming) or utterances (whole files) per forward pass
    auto_gain: bool = True  # quiet input brought up to the level the model trained at (asr_engine.level)
    # finals and whole files written with punctuation and casing (an asr_engine.punctuation.Punctuator); partials
    # stay as the recognizer hears them
    punctuator: "Punctuator | None" = None
    # numbers written as figures in what is written ("press 1", "$5.50"; asr_engine.itn): None: when the results
    # are punctuated; True: always (results without a punctuator too); False: numbers stay words
    numbers: bool | None = None


@dataclass(frozen=True)
class SessionOptions:
    hotwords: tuple[str, ...] | None = None  # this session's phrases to favour (None: the engine's)
    hotword_boost: float | None = None  # None: the engine's
    endpoint: EndpointConfig | None = None  # continuous mode: the stream is split into utterances
    auto_gain: bool | None = None  # None: the engine's
    punctuate: bool | None = None  # None: as the engine does (with its punctuator, if it has one)


@dataclass(frozen=True)
class Partial:
    text: str  # best hypothesis so far
    stable: str  # its prefix that no later audio can change


_BUILD = object()  # Engine.session's context: build it from the options


class Engine:
    """model: a TorchModel (asr_engine.model.runtime) or an OnnxModel (asr_engine.export.runtime),
    from `asr_engine.backend.load_model`, or a torch Checkpoint (run as a TorchModel on `device`).

    final_model: the same weights in the layout for whole files (`load_model(..., context="full")`) for a
    second pass: the first pass streams (partials and each utterance's first final), and every utterance's
    final is decoded again from its audio in full context, as files are (WeNet's two-pass idea, with the same
    CTC heads instead of an attention decoder). With a rescorer, the rescorer reads the second pass's beam."""

    def __init__(self, model, options: DecodeOptions = DecodeOptions(), device: str = "cpu", final_model=None):
        if not hasattr(model, "forward_chunk"):  # a Checkpoint
            from asr_engine.model.runtime import TorchModel

            model = TorchModel(model, device)
        cfg = model.cfg
        check_beam(options.beam, options.nbest)
        if options.lm is not None and options.beam == 1:
            raise ValueError("a language model needs beam search: set a beam of 4 or more")
        self.final_pass: Engine | None = None  # the second pass's engine (final_model), used by Session.final
        if final_model is not None:
            if final_model.cfg.with_context("full") != final_model.cfg:
                raise ValueError("the second pass decodes utterances in full context: give the model in the layout "
                                 "for whole files (load_model(..., context='full'))")
            if final_model.cfg.with_context("full") != cfg.with_context("full") or \
                    final_model.tokenizer.vocab != model.tokenizer.vocab:
                raise ValueError("the second pass needs the same model as the first, in full context")
            self.final_pass = Engine(final_model, dataclasses.replace(options, chunk_frames=None), device)
        # the rescorer reads the last pass's beam: the streaming one's unless a second pass decodes again
        self.rescores = options.rescorer is not None and final_model is None
        if self.rescores:
            if options.beam == 1:
                raise ValueError("rescoring needs beam search: set a beam of 4 or more")
            if not getattr(model, "has_hidden", False):
                raise ValueError(f"{getattr(model, 'path', 'this model')}: this ONNX export has no last-layer "
                                 f"output for a second pass; export the checkpoint again")
        fixed = model.chunk_frames  # an ONNX export takes one chunk size
        if fixed and options.chunk_frames and options.chunk_frames != fixed:
            raise ValueError(f"this ONNX export takes chunks of {fixed} frames; export again with --chunk-frames "
                             f"{options.chunk_frames}")
        self.chunk = options.chunk_frames or fixed or cfg.chunk_size
        if self.chunk % cfg.chunk_size:
            raise ValueError(f"chunk_frames must be a multiple of the model's chunk_size ({cfg.chunk_size})")
        self.model, self.options = model, options
        self.tokenizer, self.frame_shift_s = model.tokenizer, cfg.frame_shift_s
        self.skip = SkipOptions.resolve(cfg, options.skip_threshold, options.skip_dilation)
        self.context = hotword_graph(options.hotwords, options.hotword_boost, model.tokenizer, options.beam)
        # the layout for whole files (ModelConfig.with_context): a file longer than one chunk is cut at pauses
        self.full_context = cfg.with_context("full") == cfg
        self.window = cfg.input_frames(self.chunk + cfg.right_context)  # feature frames per step
        self.files_batch = files_batch(cfg, self.chunk, options.max_batch, str(getattr(model, "device", device)))
        self.hop = cfg.stride * self.chunk
        self.hop_samples = self.hop * model.features.window_shift  # 16 kHz samples a step decodes (a chunk's)
        self.sessions: list[Session] = []
        self.states = StatePool(model.zeros_state)  # every session's streaming state, a row each
        # one thread at a time takes rows, feeds and steps: transcribe() from several threads shared the pool's
        # rows unguarded, and 63 of 144 concurrent transcripts came out wrong (a row grown away under another
        # thread's write). close() stays lock-free: a server closes sessions on its event loop mid-step.
        self._lock = threading.RLock()
        self._close_lock = threading.Lock()

    @classmethod
    def load(cls, model: str | Path | None = None, options: DecodeOptions = DecodeOptions(), backend: str = "auto",
             device: str = "cpu", threads: int = 0, for_files: bool = False,
             precision: str | None = None) -> "Engine":
        """A checkpoint folder or ONNX export (None: the bundled model) on `backend` ('auto': ONNX
        Runtime on the CPU when it is installed, else torch). for_files: the engine will mostly
        decode whole files (an ONNX model then takes large steps). precision: load_model's."""
        from asr_engine.backend import load_model

        return cls(load_model(model, backend, device, threads, options.chunk_frames, for_files,
                              precision=precision), options)

    def search(self, context=None):
        o = self.options
        if o.beam == 1:
            return GreedySearch()
        return PrefixBeamSearch(o.beam, context=self.context if context is None else context, lm=o.lm)

    # streaming

    def session(self, sample_rate: int = SAMPLE_RATE, options: SessionOptions = SessionOptions(),
                context=_BUILD) -> "Session":
        """A new stream; `context`: its hotword graph, when hotword_context(options) made it already."""
        return Session(self, sample_rate, options, context)  # it registers itself (Session.reset)

    def close(self, session: "Session") -> None:
        """Forget a session (the engine keeps every open one for `step()` without arguments). Twice, or from two
        threads at once (finish() closes too), it is closed once: a row released twice would go to two sessions."""
        with self._close_lock:  # not the steps' lock: a server closes sessions on its event loop mid-step
            if session in self.sessions:
                self.sessions.remove(session)
            slot, session.slot = session.slot, None
        if slot is not None:  # its state's row goes to the next session
            self.states.release(slot)

    def accept_audio(self, feeds: list[tuple["Session", np.ndarray]]) -> None:
        """Audio for several sessions at once, (session, samples) each as `Session.accept_audio` takes
        them: their fbank frames come from one call of the model's front end (on a GPU one transfer
        back instead of one a session; on a CPU 1.8x faster at 64 sessions). Every feed is checked
        before any session takes its audio: bad audio raises and no session changes."""
        if any(s.engine is not self for s, _ in feeds):
            raise ValueError("accept_audio feeds this engine's sessions only")
        with self._lock:
            checked = [s._checked(x) for s, x in feeds]
            pieces = [s._take(x) for (s, _), x in zip(feeds, checked)]
            for (s, _), new in zip(feeds, frames_of(self.model.fbank, self.model.features, pieces)):
                s._add_frames(new)

    def step(self, sessions: list["Session"] | None = None) -> list["Session"]:
        """Run one chunk of every ready session; returns the sessions that advanced."""
        with self._lock:
            ready = [s for s in (self.sessions if sessions is None else sessions) if s.ready]
            for a in range(0, len(ready), self.options.max_batch):
                self._run(ready[a: a + self.options.max_batch])
        return ready

    def run(self, sessions: list["Session"] | None = None) -> None:
        """Step until no session has a full chunk (or, once finished, any audio) left."""
        while self.step(sessions):
            pass

    def _run(self, batch: list["Session"]) -> None:
        # each slot read once: a session that another thread closes from here on still steps this once (its
        # released row is only taken again on this thread, zeroed); one closed before is left out
        live = [(s, slot) for s, slot in ((s, s.slot) for s in batch) if slot is not None]
        if not live:
            return
        batch, slots = [s for s, _ in live], [slot for _, slot in live]
        wins, n_valid = zip(*(s.take_window() for s in batch))
        wins = np.stack(wins)
        one_step = False
        if getattr(self.model, "short_steps", False):  # an export without lookahead (OnnxModel.short_steps)
            longest = min(max(n_valid), self.chunk)
            if longest < self.chunk:  # every stream ends in this step: the windows without their padding
                wins = wins[:, : self.model.cfg.input_frames(longest)]
            one_step = all(s.one_step for s in batch)  # nothing before these frames to attend to, nor after
        second, n_valid = self.rescores, np.asarray(n_valid, np.int64)
        if hasattr(self.model, "step_rows"):  # the model reads and writes the pool's rows itself
            log_probs, top, *hidden = self.model.step_rows(wins, n_valid, StateRows(self.states, slots), self.skip,
                                                           hidden=second)
        else:
            state = self.states.gather(slots)
            log_probs, top, new, *hidden = self.model.forward_chunk(
                wins, n_valid, state.without_window() if one_step else state, self.skip, hidden=second)
            if not one_step:  # streams that start and end in this step keep no cache
                self.states.put(slots, new)
        n_out = [min(int(n), self.chunk) for n in n_valid]  # the rest of a window is the right context
        chunks = [log_probs[j, : n_out[j]] for j in range(len(batch))]
        advance_searches([s.decoder for s in batch], chunks)  # with an LM: one batched LM step per frame
        for j, s in enumerate(batch):
            if second:
                s.keep_hidden(top[j, : n_out[j]], hidden[0][j, : n_out[j]])
            s.advance(chunks[j], int(top[j, : n_out[j]].sum()))

    def rerank(self, top_mask: np.ndarray | None, hidden: np.ndarray | None):
        """A function hypotheses -> hypotheses in the second pass's order (None without a rescorer, or
        when the utterance's last-layer output was not kept: too long for it)."""
        rescorer = self.options.rescorer
        if rescorer is None or hidden is None:
            return None

        def rerank(hyps: list) -> list:
            texts = [self.tokenizer.decode(list(h.tokens)) for h in hyps]
            return [hyps[i] for i in rescorer.rerank(hidden, top_mask, texts, [h.score for h in hyps])]

        return rerank

    # whole files and arrays

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, path: str = "") -> Result:
        """One recording (mono int16, or float in -1..1, samples at `sample_rate`) -> its Result."""
        check_sample_rate(sample_rate)
        audio = mono_float32(audio)  # checked whole: its pieces' shapes would say less
        if sample_rate != SAMPLE_RATE:
            audio = resample(audio, sample_rate)
        return self.transcribe_arrays([audio], [path])[0]

    def transcribe_arrays(self, audios: list[np.ndarray], paths: list[str], options: SessionOptions = SessionOptions(),
                          progress: Callable[[float, float], None] | None = None,
                          streaming: bool | None = None) -> list[Result]:
        """16 kHz float32 arrays -> results. A torch model decodes whole utterances in batches
        (streaming=False; the default for it without an endpointer); an ONNX model, or
        streaming=True, streams them chunk by chunk. The transcripts are the same."""
        if streaming is None:
            streaming = self.model.encode is None or options.endpoint is not None
        if not streaming:
            if self.model.encode is None:
                raise ValueError(f"the {self.model.name} model decodes files by streaming them only")
            if options.endpoint is not None:
                raise ValueError("endpointing splits streams: it needs streaming")
        if self.auto_gain(options):  # whole recordings: each at one gain from its own peak, as training scaled them
            audios = [brought_up(a) for a in audios]
        inner = dataclasses.replace(options, auto_gain=False, punctuate=False)  # each result is written once, whole
        with self._lock:  # calls from several threads take turns (each already uses every core it was given)
            if self.full_context and options.endpoint is None:
                results = self._in_pieces(audios, paths, inner, progress, streaming)
            else:
                results = self._sorted(audios, paths, inner, progress, streaming)
        return [self.written(r, options) for r in results]

    def _in_pieces(self, audios: list[np.ndarray], paths: list[str], options: SessionOptions,
                   progress: Callable[[float, float], None] | None, streaming: bool) -> list[Result]:
        """Full context: each recording longer than one chunk cut at pauses into pieces of at most one chunk,
        every piece decoded on its own (one step, whole-piece attention), the pieces' results joined with
        their times. A fixed chunk boundary would cut words with no future context on one side
        (docs/whisper-import.md "Long files: cut at pauses")."""
        max_len = self.hop_samples  # a piece is at most one chunk
        cuts = [pause_cuts(a, max_len) for a in audios]
        pieces = [a[x:y] for a, c in zip(audios, cuts) for x, y in zip(c[:-1], c[1:])]
        done = self._sorted(pieces, [str(i) for i in range(len(pieces))], options, progress, streaming)
        results, i = [], 0
        for a, c, path in zip(audios, cuts, paths):
            parts = [_shifted(r, x / SAMPLE_RATE) for r, x in zip(done[i: i + len(c) - 1], c)]
            i += len(c) - 1
            results.append(join_results(path, parts, len(a) / SAMPLE_RATE))
        return results

    def _sorted(self, audios: list[np.ndarray], paths: list[str], options: SessionOptions,
                progress: Callable[[float, float], None] | None, streaming: bool) -> list[Result]:
        # batches of similar lengths pad less (a stream's result does not depend on its batch)
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        audios, paths = [audios[i] for i in order], [paths[i] for i in order]
        if streaming:
            results = self._stream_arrays(audios, paths, options, progress)
        else:
            results = []
            for a in range(0, len(audios), self.files_batch):
                results += self._decode_whole(audios[a: a + self.files_batch], paths[a:], options)
                if progress is not None:
                    progress(sum(len(x) for x in audios[: a + self.files_batch]) / SAMPLE_RATE,
                             sum(len(x) for x in audios) / SAMPLE_RATE)
        out: list[Result] = [None] * len(results)  # type: ignore[list-item]
        for i, r in zip(order, results):
            out[i] = r
        return out

    def transcribe_files(self, paths: list[str | Path], options: SessionOptions = SessionOptions(),
                         progress: Callable[[float, float], None] | None = None,
                         streaming: bool | None = None) -> list[Result]:
        """Read files and transcribe them (see transcribe_arrays); unreadable files get an error result. The files
        are read max_batch at a time: a long list is never held in memory whole (10,000 files of a minute are
        2.3 GB of 16 kHz samples); in full context a file over LONG_FILE_S is read and decoded a piece at a time
        (`transcribe_long`). `progress(done, total)` hears seconds of audio, over the files read so far."""
        results: list[Result] = []
        before = 0.0  # seconds of audio in the files already decoded

        def told(done: float, total: float) -> None:
            progress(before + done, before + total)

        tell = told if progress is not None else None
        for a in range(0, len(paths), self.options.max_batch):
            group = list(paths[a: a + self.options.max_batch])
            long = {i for i, p in enumerate(group) if self.reads_long(p, options)}
            got = dict(zip([i for i in range(len(group)) if i not in long], transcribe_paths(
                [p for i, p in enumerate(group) if i not in long],
                lambda audios, ok: self.transcribe_arrays(audios, ok, options, tell, streaming))))
            before += sum(r.duration for r in got.values() if not r.error)
            for i in sorted(long):
                got[i] = self.transcribe_long(group[i], options, tell, streaming)
                before += got[i].duration
            results += [got[i] for i in range(len(group))]
        return results

    def reads_long(self, path: str | Path, options: SessionOptions = SessionOptions()) -> bool:
        """Whether transcribe_files reads this file a piece at a time: full context, no endpointing, and a length
        over LONG_FILE_S by its header or container (audio.declared_seconds)."""
        return self.full_context and options.endpoint is None and declared_seconds(path) > LONG_FILE_S

    def transcribe_long(self, path: str | Path, options: SessionOptions = SessionOptions(),
                        progress: Callable[[float, float], None] | None = None,
                        streaming: bool | None = None) -> Result:
        """One file in full context, read and decoded a piece at a time: memory stays a few pieces' worth however
        long it is (an hour is 230 MB of 16 kHz samples read whole). The same pieces, cut at the same pauses, and
        the same result as transcribe_arrays of the whole recording: a piece is cut once the samples after it
        reach past max_len, and pause_cuts finds a cut from the max_len samples after the last one. A quiet
        file's gain needs its peak first: it is read until a sample reaches QUIET_PEAK, to its end when none
        does. Unreadable: an error result (also midway: nothing of it is kept)."""
        path = str(path)
        try:
            gain = np.float32(1.0)
            if self.auto_gain(options):
                peak = 0.0
                for block in audio_blocks(path):
                    peak = max(peak, float(np.abs(block).max()))
                    if peak >= QUIET_PEAK:
                        break
                gain = np.float32(peak_gain(peak))
            inner = dataclasses.replace(options, auto_gain=False, punctuate=False)
            if streaming is None:  # as transcribe_arrays decides it
                streaming = self.model.encode is None
            max_len = self.hop_samples  # a piece is at most one chunk
            total = declared_seconds(path)
            parts: list[Result] = []
            pieces: list[np.ndarray] = []
            starts: list[int] = []
            buf, offset = np.zeros(0, np.float32), 0  # samples not yet cut, and where they start in the file

            def decode() -> None:
                with self._lock:
                    done = self._sorted(pieces, [path] * len(pieces), inner, None, streaming)
                parts.extend(_shifted(r, x / SAMPLE_RATE) for r, x in zip(done, starts))
                pieces.clear()
                starts.clear()
                if progress is not None:
                    progress(offset / SAMPLE_RATE, max(total, offset / SAMPLE_RATE))

            for block in audio_blocks(path):
                buf = np.concatenate([buf, block if gain == 1 else (block * gain).astype(np.float32)])
                while len(buf) > max_len + PAUSE_HOP:  # enough for the next cut to be the whole recording's
                    cut = pause_cuts(buf, max_len)[1]
                    pieces.append(buf[:cut])
                    starts.append(offset)
                    buf, offset = buf[cut:], offset + cut
                    if len(pieces) >= self.files_batch:
                        decode()
            cuts = pause_cuts(buf, max_len)
            pieces += [buf[x:y] for x, y in zip(cuts[:-1], cuts[1:])]
            starts += [offset + x for x in cuts[:-1]]
            offset += len(buf)
            decode()
        except AudioError as e:
            return Result(path, error=str(e))
        result = self.written(join_results(path, parts, offset / SAMPLE_RATE), options)
        result.warning = truncation(path)
        return result

    def figures(self) -> bool:
        """Whether written results have their numbers as figures (DecodeOptions.numbers)."""
        return figures_when(self.options.numbers, self.options.punctuator is not None)

    def writes(self, options: SessionOptions = SessionOptions()) -> bool:
        """Whether results with these options are written (punctuation and casing, numbers as figures) rather than
        left as the recognizer's lower-case words."""
        return (self.options.punctuator is not None or self.figures()) and options.punctuate is not False

    def written(self, result: Result, options: SessionOptions = SessionOptions()) -> Result:
        """A result written, when the engine writes results with these options (`writes`); its `spoken` keeps the
        recognizer's words."""
        if not self.writes(options):
            return result
        if self.options.punctuator is not None:
            result = self.options.punctuator.result(result)
        return written_result(result) if self.figures() else result

    def auto_gain(self, options: SessionOptions) -> bool:
        """Whether sessions with these options bring quiet audio up (asr_engine.level)."""
        return self.options.auto_gain if options.auto_gain is None else options.auto_gain

    def hotword_context(self, options: SessionOptions):
        """The hotword graph a session with these options decodes with (the engine's own when they name none).
        Built from the phrases each time: a server builds it off its compute thread and hands it to session()."""
        if options.hotwords is None and options.hotword_boost is None:
            return self.context
        return hotword_graph(self.options.hotwords if options.hotwords is None else options.hotwords,
                             self.options.hotword_boost if options.hotword_boost is None else options.hotword_boost,
                             self.tokenizer, self.options.beam)

    def _decode_whole(self, audios: list[np.ndarray], paths: list[str], options: SessionOptions) -> list[Result]:
        context = self.hotword_context(options)
        encoded = self.model.encode(audios, self.skip, hidden=self.options.rescorer is not None)
        live = [i for i, e in enumerate(encoded) if e is not None]
        searches = [self.search(context) for _ in live]
        advance_searches(searches, [encoded[i][0] for i in live])  # with an LM: one batched LM step per frame
        results = [Result(p, duration=len(a) / SAMPLE_RATE) for a, p in zip(audios, paths)]
        for search, i in zip(searches, live):
            lp, top, *second_pass = encoded[i]
            rerank = self.rerank(*second_pass) if second_pass else None  # past its window it keeps the order
            results[i] = make_result(paths[i], search, self.options.nbest, self.tokenizer, self.frame_shift_s,
                                     duration=len(audios[i]) / SAMPLE_RATE, frames=lp.shape[0], top_frames=top,
                                     rerank=rerank)
        return results

    def _stream_arrays(self, audios: list[np.ndarray], paths: list[str], options: SessionOptions,
                       progress: Callable[[float, float], None] | None) -> list[Result]:
        """Stream whole arrays as live sources would arrive: every session gets one step's audio,
        then all step together. A stream's utterances (continuous mode) are joined into one result
        with times from the stream's start. `progress(done, total)` hears, after each step, how many
        seconds of all the arrays' audio have been decoded."""
        results = []
        piece = self.hop_samples
        total, done = sum(len(x) for x in audios) / SAMPLE_RATE, 0  # done: samples
        for a in range(0, len(audios), self.files_batch):
            group = audios[a: a + self.files_batch]
            sessions = [self.session(SAMPLE_RATE, options) for _ in group]
            parts: list[list[Result]] = [[] for _ in group]
            for i in range(0, max(len(x) for x in group), piece):
                self.accept_audio([(s, x[i: i + piece]) for s, x in zip(sessions, group) if i < len(x)])
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


# Files longer than this (by their header) are read and decoded a piece at a time in full context
# (Engine.transcribe_long): 10 minutes are 38 MB of 16 kHz samples, read whole as before.
LONG_FILE_S = 600.0

# How many recordings (or pieces of one) a CPU decodes together when a step's attention is large: whole files in
# full context attend 512 frames over 1,024, and the activations grow with the batch (ONNX Runtime's arena then
# keeps the largest step's). On the 2-core CPU, an 11-minute recording at 64 pieces a step took 5.1 GB and ran at
# RTF 0.029; at 4, 0.72 GB and RTF 0.014 (8: 1.1 GB, 0.017; 1-2: 0.49 GB, 0.016; docs/onnx.md "Whole files in
# batches"). Streaming steps (32-64 frames over 128-192) stay far under it; a GPU batches as asked.
CPU_STEP_ATTENTION = 4 * 512 * 1024  # query x key frames summed over a step's recordings


def files_batch(cfg, chunk: int, max_batch: int, device: str) -> int:
    """Recordings decoded together by transcribe_arrays: max_batch, or on a CPU as many as keep a step's
    attention (chunk frames over their left context and themselves) under CPU_STEP_ATTENTION."""
    if not device.startswith("cpu"):
        return max_batch
    left = chunk if cfg.left_chunks is None else cfg.left_chunks * cfg.chunk_size
    return max(1, min(max_batch, CPU_STEP_ATTENTION // (chunk * (left + chunk + cfg.right_context))))


def _full_pass(engine: Engine, audio: np.ndarray, path: str, start: float, options: SessionOptions) -> Result:
    """One utterance's second pass: its audio decoded by the full-context engine, placed at `start`."""
    return _shifted(engine.transcribe_arrays([audio], [path], options)[0], start)


def _shifted(r: Result, seconds: float) -> Result:
    """A piece's result placed `seconds` into its recording (its words' times, its start)."""
    if not seconds:
        return r
    return dataclasses.replace(r, start=seconds, words=[dataclasses.replace(w, start=w.start + seconds,
                                                                            end=w.end + seconds) for w in r.words])


class Session:
    """One audio stream, used from one thread. Several threads may each run their own sessions (stepping them
    with `engine.step(theirs)`) and `transcribe` calls on one engine: the engine's work takes turns."""

    def __init__(self, engine: Engine, sample_rate: int = SAMPLE_RATE, options: SessionOptions = SessionOptions(),
                 context=_BUILD):
        check_sample_rate(sample_rate)
        self.engine, self.sample_rate, self.options = engine, sample_rate, options
        self._context = engine.hotword_context(options) if context is _BUILD else context
        self._keeps_hidden = engine.rescores
        # the second pass's input: the audio since the current utterance's start, at most FINAL_PASS_SECONDS
        self._keeps_audio = engine.final_pass is not None
        # True: results leave the second pass to their `second_pass` (the server runs it off its compute loop)
        self.defer_second_pass = False
        self._endpointer = Endpointer(options.endpoint, engine.frame_shift_s) if options.endpoint else None
        self.slot: int | None = None  # its state's row of the engine's StatePool (None once closed)
        self.reset()

    def reset(self) -> None:
        """Start over: a new utterance, nothing decoded."""
        with self.engine._lock:
            self._reset()

    def _reset(self) -> None:
        eng = self.engine
        self._resampler = None
        if self.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="VHQ")
        feats = eng.model.features
        self._fbank = FbankStream(eng.model.fbank, feats)
        self._gain = StreamGain() if eng.auto_gain(self.options) else None
        self._feats = np.zeros((0, feats.num_mel_bins), np.float32)  # (N, F) not yet consumed
        self._feat_total = 0  # feature frames since the start
        if self.slot is None:
            self.slot = eng.states.take()  # zero
            eng.sessions.append(self)  # new, or finished and started over
        else:
            eng.states.clear(self.slot)
        self.samples = 0  # 16 kHz samples received
        self.frames = 0  # encoder frames decoded
        self.top_frames = 0  # of which ran the top layers
        self.input_finished = False
        self._audio: collections.deque[np.ndarray] = collections.deque()  # the second pass's audio (16 kHz) ...
        self._audio_from = 0  # ... from this sample of the stream on
        self._audio_kept = 0  # samples in _audio
        self._finals: list[Result] = []
        self._new_utterance()

    def _new_utterance(self) -> None:
        self.decoder = self.engine.search(self._context)  # the current utterance's search
        # the second pass's input: the utterance's top-layer masks and last-layer outputs, up to MAX_FRAMES
        self._hidden: list[tuple[np.ndarray, np.ndarray]] | None = [] if self._keeps_hidden else None
        self._utt_frame, self._utt_top = self.frames, self.top_frames  # where the utterance starts
        self._drop_audio(self._sample_of(self._utt_frame))
        if self._endpointer is not None:
            self._endpointer.reset()

    # the engine's side of the contract

    def take_window(self) -> tuple[np.ndarray, int]:
        """The next step's feature window (window, F) and how many of its C + right_context encoder
        frames are real."""
        eng = self.engine
        n_valid = min(eng.chunk + eng.model.cfg.right_context, self._frames_total - self.frames)
        win = self._feats[: eng.window]
        if win.shape[0] < eng.window:  # the stream's tail: pad; the padding yields invalid frames only
            win = np.concatenate([win, np.zeros((eng.window - win.shape[0], win.shape[1]), np.float32)])
        self._feats = self._feats[eng.hop:]
        return win, n_valid

    def keep_hidden(self, top_mask: np.ndarray, hidden: np.ndarray) -> None:
        """A step's top-layer mask (C,) and last-layer output (C, D) for the second pass; an utterance
        longer than the rescorer reads keeps none (bounded memory; its first pass stands)."""
        if self._hidden is None:
            return
        self._hidden.append((top_mask.astype(bool), hidden.astype(np.float32, copy=False)))
        if sum(len(m) for m, _ in self._hidden) > MAX_FRAMES:
            self._hidden = None

    @property
    def state(self) -> StreamState:
        """The stream's state (a copy of its row of the engine's)."""
        if self.slot is None:
            raise ValueError("the session is closed")
        return self.engine.states.gather([self.slot])

    def advance(self, log_probs: np.ndarray, top_frames: int) -> None:
        """The engine ran the window (and wrote the new state to its row): the log-probs (T, V) that
        `decoder` has decoded. Counts the frames; in continuous mode, closes the utterance at an endpoint."""
        self.frames += log_probs.shape[0]
        self.top_frames += top_frames
        if self._endpointer is None:
            return
        self._endpointer.update(log_probs)
        if self._endpointer.detected(has_text=bool(self.decoder.hypotheses(1)[0].tokens)):
            res = self.final(end=self.frames * self.engine.frame_shift_s)
            if res.text:
                self._finals.append(res)
            self._new_utterance()

    # the user's side

    def pop_finals(self) -> list[Result]:
        """Utterances the endpointer closed since the last call (continuous mode), oldest first."""
        out, self._finals = self._finals, []
        return out

    def accept_audio(self, samples: np.ndarray) -> None:
        """Append audio at the session's sample rate: int16 PCM or float in [-1, 1], 1-D. (Several
        sessions' audio at once: `Engine.accept_audio`, one front-end call for all.)"""
        self.engine.accept_audio([(self, samples)])

    def _checked(self, samples: np.ndarray) -> np.ndarray:
        """The samples as float32, or an error that leaves the session as it was."""
        if self.input_finished:
            raise RuntimeError("audio after finish(): call reset() to start a new utterance")
        return mono_float32(samples)

    def _take(self, x: np.ndarray) -> np.ndarray:
        """Checked samples in: resampled and kept (for the second pass) -> the 16 kHz samples whose
        fbank frames are new (`FbankStream.take`)."""
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        if self._gain is not None:
            x = self._gain(x)
        self.samples += len(x)
        if self._keeps_audio and len(x):
            self._audio.append(x)
            self._audio_kept += len(x)
            # bounded: at most FINAL_PASS_SECONDS (and one piece) are kept, whatever the utterance's length
            while self._audio_kept - len(self._audio[0]) >= FINAL_PASS_SECONDS * SAMPLE_RATE:
                self._drop_audio(self._audio_from + len(self._audio[0]))
        return self._fbank.take(x)

    def _add_frames(self, new: np.ndarray) -> None:
        self._feats = np.concatenate([self._feats, new])
        self._feat_total += new.shape[0]

    def input_done(self) -> None:
        """No more audio: the next steps flush what is left."""
        if not self.input_finished and self._resampler is not None:
            rest = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self._resampler = None  # flushed: what it had left is the last audio
            self.accept_audio(rest)
        self.input_finished = True

    def _sample_of(self, frame: int) -> int:
        return round(frame * self.engine.frame_shift_s * SAMPLE_RATE)

    def _drop_audio(self, before: int) -> None:
        """Forget the kept audio before sample `before` of the stream."""
        while self._audio and self._audio_from + len(self._audio[0]) <= before:
            self._audio_kept -= len(self._audio[0])
            self._audio_from += len(self._audio.popleft())
        if self._audio and self._audio_from < before:
            self._audio[0] = self._audio[0][before - self._audio_from:]
            self._audio_kept -= before - self._audio_from
            self._audio_from = before

    def _utterance_audio(self, start: int, end: int) -> np.ndarray | None:
        """Samples [start, end) of the stream, if they are all kept (None: the utterance is longer than
        FINAL_PASS_SECONDS, or empty)."""
        if not self._keeps_audio or start < self._audio_from or end <= start:
            return None
        if end - start > FINAL_PASS_SECONDS * SAMPLE_RATE:
            return None
        kept = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        return kept[start - self._audio_from: end - self._audio_from]

    @property
    def _frames_total(self) -> int:
        """Encoder frames the audio so far yields (all of it, once the input is finished)."""
        return self.engine.model.cfg.output_length(self._feat_total)

    @property
    def one_step(self) -> bool:
        """The whole stream is in the next step: it has ended, nothing is decoded, and it fits one step."""
        return self.input_finished and self.frames == 0 and self._frames_total <= self.engine.chunk

    @property
    def gain(self) -> float:
        """What the stream's latest samples were multiplied by (asr_engine.level): 1.0 unless it is quiet."""
        return 1.0 if self._gain is None else self._gain.gain

    @property
    def ready(self) -> bool:
        if self.slot is None:  # closed: it steps no more
            return False
        if self._feats.shape[0] >= self.engine.window:
            return True
        return self.input_finished and self._frames_total > self.frames

    def result(self) -> Partial:
        tok = self.engine.tokenizer
        best = self.decoder.hypotheses(1)[0]
        return Partial(tok.decode(list(best.tokens)), tok.decode(list(best.tokens[: self.decoder.stable_length()])))

    def final(self, path: str = "", end: float | None = None) -> Result:
        """The current utterance so far, as a Result (words with times from the stream's start,
        n-best, skipping statistics). It runs from `start` to `end` (default: the audio's end)."""
        eng = self.engine
        start = self._utt_frame * eng.frame_shift_s
        end = self.samples / SAMPLE_RATE if end is None else end
        rerank = second = None
        if self._hidden:
            rerank = eng.rerank(np.concatenate([m for m, _ in self._hidden]),
                                np.concatenate([h for _, h in self._hidden]))
        make = functools.partial(make_result, path, self.decoder, eng.options.nbest, eng.tokenizer, eng.frame_shift_s,
                                 self._utt_frame, duration=max(0.0, end - start), frames=self.frames - self._utt_frame,
                                 top_frames=self.top_frames - self._utt_top)
        audio = self._utterance_audio(self._sample_of(self._utt_frame), round(end * SAMPLE_RATE))
        options = self.options
        if audio is not None:  # the second pass: the utterance's audio decoded again in full context
            second = functools.partial(_full_pass, eng.final_pass, audio, path, start,
                                       SessionOptions(options.hotwords, options.hotword_boost,
                                                      auto_gain=options.auto_gain, punctuate=False))
            if not self.defer_second_pass:
                return eng.written(second(), options)
        elif not self.defer_second_pass or (rerank is None and not eng.writes(options)):
            return eng.written(make(rerank=rerank), options)
        elif rerank is None:  # deferred, the writing alone: it reads a whole utterance's words, off the compute loop
            first = make()
            raw = dataclasses.replace(first)
            first.second_pass = lambda: eng.written(raw, options)
            return first
        hyps = self.decoder.hypotheses(len(self.decoder.beams))  # the search moves on to the next utterance
        first = make(hyps=hyps)  # what stays if the second pass fails
        later = second or functools.partial(make, hyps=hyps, rerank=rerank)
        first.second_pass = lambda: eng.written(later(), options)
        return first

    def finish(self, path: str = "") -> Result:
        """End the input, decode everything left (this session alone) and return the final result
        (in continuous mode: of the last utterance; pop_finals() has the ones before it). The session is then
        closed (`engine.close`); `reset()` opens it again for a new stream."""
        self.input_done()
        self.engine.run([self])
        result = self.final(path)
        # done: its state's row goes to the next session and the engine forgets it (a web app that opens a
        # session a request and finishes it held 4 MB a request for good); reset() starts it over
        self.engine.close(self)
        return result
