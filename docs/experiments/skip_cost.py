"""Where skipping's WER cost comes from: the gate's misses or the top layers' lost context.

A skipping pass changes two things against the full pass: (1) a skipped frame emits the gating
head's output instead of the final head's (cost when the final head would have emitted a token
there: a gate miss), and (2) the kept frames' top layers attend without the skipped frames (their
context changes). Greedy WER of four mixes of the two passes' log-probs separates them:

    full           the final head on every frame (no skipping)
    skip           the skipping pass as the engine runs it
    misses only    kept frames from the full pass, skipped frames the gate's output
    context only   kept frames from the skipping pass, skipped frames from the full pass
    kept as keys   a design not built: skipped frames stay in the top layers' sequence with their
                   gate-layer state (not updated: no FFN or query for them, only keys and values),
                   kept frames attend to them; skipped frames emit the gate's output

and per threshold: the share of frames skipped, and the share of skipped frames on which the full
pass's best token is not blank (the gate's misses).

    python docs/experiments/skip_cost.py MODEL MANIFEST[+MANIFEST...] 0.99,0.98,0.95 [EVERY]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from asr_engine.audio import load_audio
from asr_engine.backend import load_model
from asr_engine.decoding import BLANK_ID, greedy_search
from asr_engine.manifest import read_manifest
from asr_engine.model.config import SkipOptions
from asr_engine.model.encoder import HeadOutput
from asr_engine.model.layers import make_plan
from asr_engine.text import word_error_counts

VARIANTS = ("full", "skip", "misses only", "context only", "kept as keys")


def bottom(enc, feats, lengths):
    """The stem and layers up to the gate, once per batch for every threshold's "kept as keys" pass."""
    x, frames, _ = enc.embed(feats, lengths)
    plan = make_plan(enc.cfg, frames)
    x3, _, gate_raw = enc._bottom(x, plan)
    return plan, x3, gate_raw


def kept_as_keys(enc, plan, x3, gate_raw, top_mask, threshold) -> np.ndarray:
    """The "kept as keys" pass (simulated on the full sequence: the top layers run on every frame and
    skipped frames are reset to their gate-layer state after each layer). Real frames skip as the
    engine's pass did (top_mask); lookahead copies skip where the gate's blank probability exceeds
    the threshold."""
    T = plan.frames.n_real
    keep = torch.cat([top_mask, HeadOutput(gate_raw[:, T:]).blank_prob() <= threshold], 1)[:, :, None]
    h = x3
    for layer in enc.layers[enc.cfg.skip_layer:]:
        h = torch.where(keep, layer(h, plan), x3)
    final = torch.where(top_mask[:, :, None], enc.final_head(h[:, :T]).raw, gate_raw[:, :T])
    return enc.ops.log_probs(final).float().numpy()


def main() -> None:
    model = load_model(sys.argv[1], backend="torch", threads=2)
    thresholds = [float(t) for t in sys.argv[3].split(",")]
    every = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    utts = [u for m in sys.argv[2].split("+") for u in read_manifest(m)][::every]  # MANIFEST[+MANIFEST...]
    enc, tok = model.encoder, model.tokenizer
    errors = {(t, v): 0 for t in thresholds for v in VARIANTS}
    skipped = {t: 0 for t in thresholds}
    misses = {t: 0 for t in thresholds}
    words = frames = 0
    for start in range(0, len(utts), 16):
        batch = utts[start:start + 16]
        with torch.inference_mode():
            feats = [torch.from_numpy(model.fbank(load_audio(u.audio)[None])[0]) for u in batch]
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
            lengths = torch.tensor([f.shape[0] for f in feats])
            full = enc(x, lengths, None)
            full_lp = enc.ops.log_probs(full.final.raw).float().numpy()
            runs = {t: enc(x, lengths, SkipOptions(t, enc.cfg.skip_dilation)) for t in thresholds}
            below = bottom(enc, x, lengths)
            keys_lp = {t: kept_as_keys(enc, *below, runs[t].top_mask, t) for t in thresholds}
        for j, u in enumerate(batch):
            n = int(full.lengths[j])
            f = full_lp[j, :n]
            words += len(u.text.split())
            frames += n
            hyp = tok.decode(list(greedy_search(f).tokens))
            for t, out in runs.items():
                s = enc.ops.log_probs(out.final.raw[j, :n]).float().numpy()
                keep = out.top_mask[j, :n].numpy().astype(bool)
                skipped[t] += int((~keep).sum())
                misses[t] += int(((f.argmax(-1) != BLANK_ID) & ~keep).sum())
                mixes = {"full": f, "skip": s, "misses only": np.where(keep[:, None], f, s),
                         "context only": np.where(keep[:, None], s, f), "kept as keys": keys_lp[t][j, :n]}
                for v, lp in mixes.items():
                    h = hyp if v == "full" else tok.decode(list(greedy_search(lp).tokens))
                    errors[t, v] += word_error_counts(u.text, h)[0]
    print(f"{len(utts)} utterances, {words} words, {frames} frames")
    print("threshold | skipped | gate misses (of skipped) | " + " | ".join(VARIANTS))
    for t in thresholds:
        wers = " | ".join(f"{100 * errors[t, v] / words:.2f}%" for v in VARIANTS)
        print(f"{t} | {100 * skipped[t] / frames:.1f}% | {100 * misses[t] / max(1, skipped[t]):.2f}% | {wers}")


if __name__ == "__main__":
    main()
