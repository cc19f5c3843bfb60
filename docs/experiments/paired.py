"""Two models on the same utterances, utterance by utterance: greedy word errors of each (whole
utterances, torch, no skipping), how many utterances each one wins, and a two-sided sign test
on those wins (scipy's binomtest), so that a difference in WER can be told from noise.

    python docs/experiments/paired.py MODEL_A MODEL_B MANIFEST[,MANIFEST...]

Manifests joined by "+" are one set (one test over all their utterances): the shipping rule's held-out
set from the fourteenth session on is data/heldout/manifest.jsonl+data/heldout2/manifest.jsonl.
"""

from __future__ import annotations

import sys

from scipy.stats import binomtest

from asr_engine.backend import load_model
from asr_engine.decoding import greedy_search
from asr_engine.manifest import read_manifest
from asr_engine.text import word_error_counts
from blank_bias import log_probs


def errors(model, utts) -> list[tuple[int, int]]:
    return [word_error_counts(u.text, model.tokenizer.decode(list(greedy_search(lp).tokens)))
            for u, lp in zip(utts, log_probs(model, utts))]


def main() -> None:
    a, b = (load_model(m, backend="torch", threads=2) for m in sys.argv[1:3])
    for manifest in sys.argv[3].split(","):
        utts = [u for part in manifest.split("+") for u in read_manifest(part)]
        ea, eb = errors(a, utts), errors(b, utts)
        words = sum(n for _, n in ea)
        wins_a = sum(x[0] < y[0] for x, y in zip(ea, eb))
        wins_b = sum(x[0] > y[0] for x, y in zip(ea, eb))
        p = binomtest(wins_a, wins_a + wins_b).pvalue if wins_a + wins_b else 1.0
        print(f"{manifest}: {len(utts)} utterances, {words} words; WER A {100 * sum(e for e, _ in ea) / words:.2f}%, "
              f"B {100 * sum(e for e, _ in eb) / words:.2f}%; A better on {wins_a}, B on {wins_b}, "
              f"ties {len(utts) - wins_a - wins_b}; sign test p = {p:.3g}")


if __name__ == "__main__":
    main()
