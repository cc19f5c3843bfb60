"""Greedy WER with the blank's log-probability lowered by B (a blank penalty: fewer deletions,
more insertions), and the word errors split into substitutions, deletions and insertions.
The encoder runs once per utterance (whole utterances, torch, no skipping: the same log-probs
as streaming, which the parity tests hold); each B is a greedy decode of them.

    python docs/experiments/blank_bias.py MODEL MANIFEST[,MANIFEST...] 0,0.5,1,1.5,2
"""

from __future__ import annotations

import sys

import numpy as np
from rapidfuzz.distance import Levenshtein

from asr_engine.audio import load_audio
from asr_engine.backend import load_model
from asr_engine.decoding import BLANK_ID, greedy_search
from asr_engine.manifest import read_manifest
from asr_engine.text import normalize


def log_probs(model, utts) -> list[np.ndarray]:
    out = []
    for start in range(0, len(utts), 16):
        encoded = model.encode([load_audio(u.audio) for u in utts[start:start + 16]], None)
        out += [r[0] if r else np.zeros((0, model.cfg.vocab_size), np.float32) for r in encoded]  # None: too short
    return out


def main() -> None:
    model = load_model(sys.argv[1], backend="torch", threads=2)
    biases = [float(b) for b in sys.argv[3].split(",")]
    for manifest in sys.argv[2].split(","):
        utts = read_manifest(manifest)
        lps = log_probs(model, utts)
        print(f"{manifest}: {len(utts)} utterances")
        print("blank penalty | WER | sub | del | ins")
        for b in biases:
            counts = {"replace": 0, "delete": 0, "insert": 0}
            words = 0
            for u, lp in zip(utts, lps):
                lp = lp.copy()
                lp[:, BLANK_ID] -= b
                r = normalize(u.text).split()
                h = normalize(model.tokenizer.decode(list(greedy_search(lp).tokens))).split()
                words += len(r)
                for op in Levenshtein.editops(r, h):
                    counts[op.tag] += 1
            s, d, i = (100 * counts[k] / words for k in ("replace", "delete", "insert"))
            print(f"{b} | {s + d + i:.2f}% | {s:.2f}% | {d:.2f}% | {i:.2f}%")


if __name__ == "__main__":
    main()
