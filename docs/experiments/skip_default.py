"""The skip gate under the default decoding (docs/language-model.md): runs/skip_default_{full,streaming}.json, from
`asr-engine eval data/heldout3/manifest.jsonl --context C --beam 16 --lm default --thresholds 1.0,0.99
--backend onnx --threads 2 --json runs/skip_default_C.json`, compared utterance by utterance (a sign test).
Run from the repository root: python docs/experiments/skip_default.py"""

import json

from scipy.stats import binomtest

from asr_engine.manifest import read_manifest
from asr_engine.text import word_error_counts

utts = read_manifest("data/heldout3/manifest.jsonl")
for c in ("full", "streaming"):
    off, on = json.load(open(f"runs/skip_default_{c}.json"))["settings"]
    e_off = [word_error_counts(u.text, h)[0] for u, h in zip(utts, off["hypotheses"])]
    e_on = [word_error_counts(u.text, h)[0] for u, h in zip(utts, on["hypotheses"])]
    b, w = sum(x < y for x, y in zip(e_off, e_on)), sum(x > y for x, y in zip(e_off, e_on))
    print(f"{c}: off {off['wer']:.2%} RTF {off['rtf']:.4f}; 0.99 {on['wer']:.2%} RTF {on['rtf']:.4f} "
          f"top {on['top_fraction']:.1%}; off better on {b}, 0.99 better on {w}, "
          f"p = {binomtest(b, b + w).pvalue if b + w else 1:.3g}")
