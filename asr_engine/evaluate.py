"""Evaluation: WER/CER per source, and the skip-threshold trade-off measured in one run.

Audio is read once; then every threshold decodes the same batches, so the table's
WER, fraction of frames through the top layers and real-time factor (features +
encoder + decoding, file reading excluded) are directly comparable.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from asr_engine.audio import SAMPLE_RATE, AudioError, load_audio
from asr_engine.engine import DecodeOptions, Engine
from asr_engine.manifest import Utterance
from asr_engine.text import char_error_counts, word_error_counts

__all__ = ["Score", "SettingResult", "EvalReport", "evaluate", "format_report"]


@dataclass
class Score:
    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0
    utterances: int = 0

    def add(self, ref: str, hyp: str) -> None:
        e, n = word_error_counts(ref, hyp)
        ce, cn = char_error_counts(ref, hyp)
        self.word_errors += e
        self.words += n
        self.char_errors += ce
        self.chars += cn
        self.utterances += 1

    @property
    def wer(self) -> float:
        return self.word_errors / max(1, self.words)

    @property
    def cer(self) -> float:
        return self.char_errors / max(1, self.chars)


@dataclass
class SettingResult:
    threshold: float  # >= 1.0: no skipping
    total: Score
    per_source: dict[str, Score]
    top_fraction: float  # encoder frames that ran the top layers
    rtf: float
    hypotheses: list[str] = field(default_factory=list, repr=False)


@dataclass
class EvalReport:
    settings: list[SettingResult]
    audio_seconds: float
    failed: list[str]  # unreadable files, one line each

    def to_dict(self) -> dict:
        return {"audio_seconds": self.audio_seconds, "failed": self.failed, "settings": [
            {"threshold": s.threshold, "wer": s.total.wer, "cer": s.total.cer, "top_fraction": s.top_fraction,
             "rtf": s.rtf, "total": asdict(s.total), "per_source": {k: asdict(v) for k, v in s.per_source.items()},
             "hypotheses": s.hypotheses}
            for s in self.settings]}


def source_of(u: Utterance, default: str) -> str:
    return str(u.extra.get("source") or u.extra.get("engine") or default)


def evaluate(model, utts: list[Utterance], sources: list[str], thresholds: list[float],
             beam: int = 1, batch_size: int = 16, progress: bool = False, lm=None, rescorer=None,
             auto_gain: bool = True) -> EvalReport:
    """Decode every utterance once per threshold with an engine on `model` (backend.load_model:
    whole utterances on torch, streaming on ONNX); sources[i] names utts[i]'s group; `lm`: a
    lm.fusion.ShallowFusion for beam search; `rescorer`: a second pass (rescore.WhisperRescorer); `auto_gain`:
    quiet recordings brought up (asr_engine.level)."""
    audios, refs, groups, failed = [], [], [], []
    for u, src in zip(utts, sources):
        try:
            audios.append(load_audio(u.audio))
        except AudioError as e:
            failed.append(str(e))
            continue
        refs.append(u.text)
        groups.append(src)
    if not audios:
        raise ValueError("no readable audio to evaluate")
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))  # similar lengths batch well
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    settings = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(batches) * len(thresholds), unit="batch", desc="eval")
    for k, th in enumerate(thresholds):
        decode = Engine(model, DecodeOptions(beam=beam, skip_threshold=th, lm=lm, max_batch=batch_size,
                                             rescorer=rescorer, auto_gain=auto_gain)).transcribe_arrays
        if k == 0:  # warm-up, so the first setting's RTF is not charged for it
            decode([audios[i] for i in batches[0]], ["warmup"] * len(batches[0]))
        hyps = [""] * len(audios)
        frames = top = 0
        t0 = time.perf_counter()
        for b in batches:
            for i, r in zip(b, decode([audios[i] for i in b], [str(i) for i in b])):
                hyps[i] = r.text
                frames += r.frames
                top += r.top_frames
            if bar is not None:
                bar.update(1)
        wall = time.perf_counter() - t0
        total, per = Score(), {}
        for ref, hyp, g in zip(refs, hyps, groups):
            total.add(ref, hyp)
            per.setdefault(g, Score()).add(ref, hyp)
        settings.append(SettingResult(th, total, dict(sorted(per.items())), top / max(1, frames),
                                      wall / audio_s, hyps))
    if bar is not None:
        bar.close()
    return EvalReport(settings, audio_s, failed)


def format_report(report: EvalReport, default_threshold: float) -> str:
    lines = [f"audio: {report.audio_seconds / 60:.1f} min, {report.settings[0].total.utterances} utterances"
             + (f", {len(report.failed)} unreadable" if report.failed else ""), "",
             "skip threshold |    WER |    CER | top-layer frames |    RTF",
             "---------------|--------|--------|------------------|-------"]
    for s in report.settings:
        name = "off" if s.threshold >= 1.0 else f"{s.threshold:g}"
        if abs(s.threshold - default_threshold) < 1e-9:
            name += " (default)"
        lines.append(f"{name:>14} | {s.total.wer:6.2%} | {s.total.cer:6.2%} | {s.top_fraction:16.1%} | {s.rtf:.4f}")
    if len(report.settings[0].per_source) > 1:  # one row per source, a WER / CER column per threshold
        names = ["off" if s.threshold >= 1.0 else f"{s.threshold:g}" for s in report.settings]
        lines += ["", "per source, WER / CER:",
                  "source               | utts | " + " | ".join(f"{n:>15}" for n in names),
                  "---------------------|------|" + "|".join("-" * 17 for _ in names)]
        for src, first in report.settings[0].per_source.items():
            cells = [f"{s.per_source[src].wer:6.2%} / {s.per_source[src].cer:6.2%}" for s in report.settings]
            lines.append(f"{src[:20]:20} | {first.utterances:4d} | " + " | ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)
