"""What the skipping probes (sink_frames.py, blank_keys.py) share: greedy word errors and skipped frames of several
whole-utterance passes of one model over the same utterances, 16 at a time, and their table."""

from __future__ import annotations

import sys
from typing import Callable

import torch

from asr_engine.audio import load_audio
from asr_engine.decoding import greedy_search
from asr_engine.manifest import read_manifest
from asr_engine.model.config import SkipOptions
from asr_engine.text import word_error_counts


def read_manifests(spec: str) -> list:
    """MANIFEST[+MANIFEST...] -> their utterances, in order."""
    return [u for m in spec.split("+") for u in read_manifest(m)]


def plain_args(argv: list[str]):
    """MODEL MANIFEST[+MANIFEST...] THRESHOLDS [EVERY] -> (the model on torch, every EVERY-th utterance, thresholds)."""
    from asr_engine.backend import load_model

    every = int(argv[4]) if len(argv) > 4 else 1
    return (load_model(argv[1], backend="torch", threads=2), read_manifests(argv[2])[::every],
            [float(t) for t in argv[3].split(",")])


def batches(model, utts, size: int = 16):
    """-> (first index, utterances, padded features (B, T, F), feature lengths (B,)) per batch."""
    for start in range(0, len(utts), size):
        batch = utts[start:start + size]
        feats = [torch.from_numpy(model.fbank(load_audio(u.audio)[None])[0]) for u in batch]
        yield start, batch, torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), \
            torch.tensor([f.shape[0] for f in feats])


def score(model, utts, runs: list, passes: Callable) -> tuple[int, int, dict, dict]:
    """passes(x, lengths) -> {run: EncoderOutput} for every run (the first without skipping). -> words, frames,
    {run: greedy word errors}, {run: frames that skipped the top layers}."""
    enc, tok = model.encoder, model.tokenizer
    errors, skipped = {r: 0 for r in runs}, {r: 0 for r in runs}
    words = frames = 0
    for start, batch, x, lengths in batches(model, utts):
        with torch.inference_mode():
            outs = passes(x, lengths)
        for j, u in enumerate(batch):
            n = int(outs[runs[0]].lengths[j])
            words += len(u.text.split())
            frames += n
            for r in runs:
                out = outs[r]
                lp = enc.ops.log_probs(out.final.raw[j, :n]).float().numpy()
                errors[r] += word_error_counts(u.text, tok.decode(list(greedy_search(lp).tokens)))[0]
                skipped[r] += int((~out.top_mask[j, :n]).sum())
        print(f"{start + len(batch)}/{len(utts)}", file=sys.stderr, flush=True)
    return words, frames, errors, skipped


def probe(model, utts, thresholds: list[float], variants: list, use: Callable, column: str,
          show: Callable = str, before: Callable | None = None) -> None:
    """Prints greedy WER and the share of frames skipped without skipping (the first variant) and at each threshold
    with each variant. use(variant) sets a variant up before its pass; before(feature lengths), when given, runs once
    per batch first."""
    enc = model.encoder
    runs = [(1.0, variants[0])] + [(t, v) for t in thresholds for v in variants]

    def passes(x, lengths):
        if before is not None:
            before(lengths)
        outs = {}
        for t, v in runs:
            use(v)
            outs[t, v] = enc(x, lengths, None if t >= 1.0 else SkipOptions(t, enc.cfg.skip_dilation))
        use(variants[0])
        return outs

    words, frames, errors, skipped = score(model, utts, runs, passes)
    print(f"{len(utts)} utterances, {words} words, {frames} frames")
    print(f"threshold | {column} | frames skipped | greedy WER | errors")
    for t, v in runs:
        print(f"{t} | {show(v)} | {100 * skipped[t, v] / frames:.1f}% | {100 * errors[t, v] / words:.2f}% | "
              f"{errors[t, v]}")
