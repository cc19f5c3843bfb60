"""Biases on the punctuation model's marks, chosen and tested by the rule of docs/punctuation.md ("Mark biases"):
the held-out windows of `punct train` (seed 2), odd windows choose and even windows test; then a manifest's
reference transcripts (dev_real), measured only.

    python docs/experiments/punct_bias.py [MODEL_DIR] [MANIFEST.jsonl]   # default: the bundled model; dev_real

Prints JSON lines: every pair's scores on the choosing half, the chosen pair, and its scores against no bias on
the testing half and on the manifest.
"""

import itertools
import json
import sys

import numpy as np

from asr_engine.punct_train import documents, windows
from asr_engine.punctuation import DEFAULT_PUNCT_DIR, Punctuator, labelled_words, labels_from, scores

GRID = (-0.5, 0.0, 0.5, 1.0, 1.5)
MARKS = (",", ".", "?")


def measured(logits: list, gold: list, bias: np.ndarray) -> dict:
    got = [labels_from(p, c, bias) for p, c in logits]
    s = scores(np.concatenate([g[0] for g in got]), np.concatenate([g[0] for g in gold]),
               np.concatenate([g[1] for g in got]), np.concatenate([g[1] for g in gold]))
    s["mean_f1"] = round(float(np.mean([s[m]["f1"] for m in MARKS])), 4)
    return s


def prepared(model: Punctuator, labelled: list) -> tuple[list, list]:
    lw = [x for x in labelled if x]
    return ([model.logits([w for w, *_ in x]) for x in lw],
            [(np.array([p for _, p, _, _ in x]), np.array([c for _, _, c, _ in x])) for x in lw])


def bias(comma: float, stop: float) -> np.ndarray:
    return np.array([0.0, comma, stop, 0.0], dtype=np.float32)


def main(model_dir: str = str(DEFAULT_PUNCT_DIR), manifest: str = "../shared/data/dev_real/manifest.jsonl") -> None:
    model = Punctuator(model_dir)
    held = windows(documents("heldout"), 2)
    choose, test = prepared(model, held[0::2]), prepared(model, held[1::2])
    rows = []
    for c, p in itertools.product(GRID, GRID):
        s = measured(*choose, bias(c, p))
        rows.append((s["mean_f1"], c, p))
        print(json.dumps({"half": "choose", "comma": c, "stop": p, "mean_f1": s["mean_f1"],
                          **{m: s[m]["f1"] for m in MARKS}, "case_accuracy": s["case_accuracy"]}))
    best = max(r[0] for r in rows)
    _, c, p = min((r for r in rows if r[0] >= best - 0.002), key=lambda r: (abs(r[1]) + abs(r[2]), r[1], r[2]))
    print(json.dumps({"chosen": {"comma": c, "stop": p}}))
    for name, data in (("test", test), ("manifest", prepared(model, [labelled_words(json.loads(line)["text"])
                                                                     for line in open(manifest, encoding="utf-8")]))):
        for label, b in (("no bias", bias(0, 0)), ("chosen", bias(c, p))):
            print(json.dumps({"half": name, "bias": label, **measured(*data, b)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
