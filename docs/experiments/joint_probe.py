"""Joint CTC / attention decoding (joint_decode.py, beside this script) against CTC greedy on a manifest.

    python docs/experiments/joint_probe.py MANIFEST [--model DIR] [--weights 0.3,0.5] [--beam 8]
        [--threshold 1.0] [--every 1] [--json OUT]

Whole utterances on the torch backend; one encoder pass per utterance, every CTC weight decoded from it.
"""

from __future__ import annotations

import argparse
import json
import time

from joint_decode import JointDecoder  # beside this script

from asr_engine.audio import load_audio
from asr_engine.backend import load_model
from asr_engine.manifest import read_corpus
from asr_engine.model.config import SkipOptions
from asr_engine.rescore import WhisperRescorer
from asr_engine.text import normalize, word_error_counts


def greedy(lp, tok) -> str:
    ids, prev = [], -1
    for t in lp.argmax(-1).tolist():
        if t != prev and t != 0:
            ids.append(t)
        prev = t
    return normalize(tok.decode(ids))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("manifest")
    p.add_argument("--model", default=None)
    p.add_argument("--weights", default="0.3,0.5")
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--threshold", type=float, default=1.0)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    model = load_model(a.model, "torch", "cpu", a.threads, for_files=True)
    r = WhisperRescorer.load(1.0)
    ws = [float(x) for x in a.weights.split(",")]
    decs = {w: JointDecoder(r, model.tokenizer, w, a.beam) for w in ws}
    skip = None if a.threshold >= 1.0 else SkipOptions(threshold=a.threshold)
    utts = read_corpus(a.manifest)[:: a.every]
    errs = {"greedy": 0, **{w: 0 for w in ws}}
    hyps = {"greedy": [], **{w: [] for w in ws}}
    words = 0
    t_dec = {w: 0.0 for w in ws}
    audio_s = 0.0
    for n, u in enumerate(utts):
        x = load_audio(u.audio)
        audio_s += len(x) / 16000
        enc = model.encode([x], skip, hidden=True)[0]
        ref = normalize(u.text)
        words += len(ref.split())
        lp, _, mask, hid = enc
        g = greedy(lp, model.tokenizer)
        errs["greedy"] += word_error_counts(ref, g)[0]
        hyps["greedy"].append(g)
        for w, d in decs.items():
            t0 = time.perf_counter()
            h = d.decode(lp, hid, mask.astype(bool))
            t_dec[w] += time.perf_counter() - t0
            h = g if h is None else h
            errs[w] += word_error_counts(ref, h)[0]
            hyps[w].append(h)
        if n % 20 == 19:
            print(n + 1, {k: round(100 * v / words, 2) for k, v in errs.items()}, flush=True)
    print(f"{len(utts)} utterances, {words} words, {audio_s:.0f} s of audio")
    for k, v in errs.items():
        extra = f"  decode RTF {t_dec[k] / audio_s:.3f}" if k in t_dec else ""
        print(f"{k}: WER {100 * v / words:.2f}%{extra}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"manifest": a.manifest, "every": a.every,
                       "wer": {str(k): 100 * v / words for k, v in errs.items()},
                       "hypotheses": {str(k): v for k, v in hyps.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
