"""Two models on the same utterances, utterance by utterance: greedy word errors of each (whole
utterances, torch, no skipping), how many utterances each one wins, and a two-sided sign test
on those wins (scipy's binomtest), so that a difference in WER can be told from noise.

    python docs/experiments/paired.py MODEL_A MODEL_B MANIFEST[,MANIFEST...]

Manifests joined by "+" are one set (one test over all their utterances): the shipping rule's held-out
set from the fourteenth session on is data/heldout/manifest.jsonl+data/heldout2/manifest.jsonl.

    python docs/experiments/paired.py --json A.json B.json MANIFEST[+MANIFEST...] [THRESHOLD]

compares two `asr-engine eval ... --json` reports of the same manifests instead (any decoder: beam
search, an LM), at the setting with skip threshold THRESHOLD (default 0.99).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy.stats import binomtest

from asr_engine.backend import load_model
from asr_engine.decoding import greedy_search
from asr_engine.manifest import read_manifest
from asr_engine.text import word_error_counts
from blank_bias import log_probs


def errors(model, utts) -> list[tuple[int, int]]:
    return [word_error_counts(u.text, model.tokenizer.decode(list(greedy_search(lp).tokens)))
            for u, lp in zip(utts, log_probs(model, utts))]


def sign_test(manifest: str, ea: list[tuple[int, int]], eb: list[tuple[int, int]]) -> str:
    words = sum(n for _, n in ea)
    wins_a = sum(x[0] < y[0] for x, y in zip(ea, eb))
    wins_b = sum(x[0] > y[0] for x, y in zip(ea, eb))
    p = binomtest(wins_a, wins_a + wins_b).pvalue if wins_a + wins_b else 1.0
    return (f"{manifest}: {len(ea)} utterances, {words} words; WER A {100 * sum(e for e, _ in ea) / words:.2f}%, "
            f"B {100 * sum(e for e, _ in eb) / words:.2f}%; A better on {wins_a}, B on {wins_b}, "
            f"ties {len(ea) - wins_a - wins_b}; sign test p = {p:.3g}")


def report_errors(path: str, refs: list[str], threshold: float) -> list[tuple[int, int]]:
    report = json.loads(Path(path).read_text())
    if report["failed"]:
        raise SystemExit(f"{path}: unreadable files in the report, the utterances cannot be paired")
    setting = next((s for s in report["settings"] if abs(s["threshold"] - threshold) < 1e-9), None)
    if setting is None or len(setting["hypotheses"]) != len(refs):
        raise SystemExit(f"{path}: no setting at threshold {threshold} with {len(refs)} hypotheses")
    return [word_error_counts(r, h) for r, h in zip(refs, setting["hypotheses"])]


def main() -> None:
    if sys.argv[1] == "--json":
        manifest = sys.argv[4]
        refs = [u.text for part in manifest.split("+") for u in read_manifest(part)]
        threshold = float(sys.argv[5]) if len(sys.argv) > 5 else 0.99
        print(sign_test(manifest, *(report_errors(p, refs, threshold) for p in sys.argv[2:4])))
        return
    a, b = (load_model(m, backend="torch", threads=2) for m in sys.argv[1:3])
    for manifest in sys.argv[3].split(","):
        utts = [u for part in manifest.split("+") for u in read_manifest(part)]
        print(sign_test(manifest, errors(a, utts), errors(b, utts)))


if __name__ == "__main__":
    main()
