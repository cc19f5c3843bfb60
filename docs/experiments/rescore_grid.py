"""The second pass's weight on a manifest: one first pass (beam search, optionally with an LM), the final
beam of every utterance scored by Whisper's decoder once, then the WER of every weight of the grid.

    python docs/experiments/rescore_grid.py MANIFEST [--model DIR] [--backend torch] [--beam 8] [--lm default]
        [--threshold 0.99] [--weights 0.25,0.5,1,2] [--threads 2] [--json OUT]

Prints a table (weight 0 is the first pass alone; "oracle" the best hypothesis of each beam).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from asr_engine.audio import load_audio
from asr_engine.backend import load_model, resolve_backend
from asr_engine.engine import DecodeOptions, Engine
from asr_engine.manifest import read_corpus
from asr_engine.rescore import WhisperRescorer
from asr_engine.text import normalize, word_error_counts


class Recorder(WhisperRescorer):
    """Keeps each utterance's beam, first-pass scores and decoder scores; leaves the order as it is."""

    rows: list

    def rerank(self, hidden, valid, texts, first_pass):
        self.rows.append((texts, list(first_pass), self.scores(hidden, valid, texts)))
        return list(range(len(texts)))


def sign_test(better: int, worse: int) -> float:
    """Two-sided sign test over the utterances where two decodings differ."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest")
    p.add_argument("--model", default=None)
    p.add_argument("--backend", default="torch")
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--lm", default="default")
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--weights", default="0.25,0.5,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    model = load_model(args.model, args.backend, "cpu", args.threads, for_files=True)
    lm = None
    if args.lm:
        from asr_engine.lm.fusion import load_fusion

        lm = load_fusion(args.lm, model.tokenizer, backend=resolve_backend(args.backend, "cpu"))
    base = WhisperRescorer.load(1.0)
    rec = Recorder(base.decoder, base.tokenizer, base.final_norm, 1.0)
    rec.rows = []
    utts = read_corpus(args.manifest)
    refs = [normalize(u.text) for u in utts]
    eng = Engine(model, DecodeOptions(beam=args.beam, nbest=args.beam, skip_threshold=args.threshold, lm=lm,
                                      rescorer=rec, max_batch=16))
    t0 = time.perf_counter()
    rows = []  # per utterance: (beam texts, first-pass scores, decoder scores or None)
    for i in range(0, len(utts), 16):
        rec.rows = []
        results = eng.transcribe_arrays([load_audio(u.audio) for u in utts[i:i + 16]],
                                        [str(j) for j in range(i, i + 16)], streaming=args.backend == "onnx")
        calls = iter(rec.rows)  # in the utterances' order; too short ones never reach the second pass
        row = next(calls, None)
        for r in results:
            if row is not None and row[0][: len(r.nbest)] == r.nbest:
                rows.append(row)
                row = next(calls, None)
            else:
                rows.append(([r.text], [0.0], None))
    wall = time.perf_counter() - t0
    skipped = sum(d is None for _, _, d in rows)
    words = sum(len(r.split()) for r in refs)

    picked = {}

    def wer(pick, name: str) -> float:
        errors = 0
        picked[name] = [texts[pick(texts, first, dec)] for texts, first, dec in rows]
        for ref, hyp in zip(refs, picked[name]):
            errors += word_error_counts(ref, normalize(hyp))[0]
        return 100 * errors / words

    oracle_errors = sum(min(word_error_counts(ref, normalize(t))[0] for t in texts)
                        for ref, (texts, _, _) in zip(refs, rows))
    table = {"oracle": 100 * oracle_errors / words}
    for w in [0.0, *(float(x) for x in args.weights.split(","))]:
        table[f"{w:g}"] = wer(lambda t, f, d, w=w: max(range(len(t)), key=lambda k: (
            f[k] + w * (0.0 if d is None else d[k]), -k)), f"{w:g}")
    print(f"{len(utts)} utterances ({skipped} not rescored: too short, or every frame skipped the top layers), "
          f"{words} words, beam {args.beam}, LM {args.lm}, threshold {args.threshold}, {wall:.0f} s")
    print("| weight | WER | better / worse than the first pass | sign test p |\n|---|---|---|---|")
    first = [word_error_counts(r, normalize(h))[0] for r, h in zip(refs, picked["0"])]
    for k, v in table.items():
        if k == "oracle":
            print(f"| oracle | {v:.2f}% | | |")
            continue
        errs = [word_error_counts(r, normalize(h))[0] for r, h in zip(refs, picked[k])]
        better, worse = sum(e < f for e, f in zip(errs, first)), sum(e > f for e, f in zip(errs, first))
        print(f"| {k} | {v:.2f}% | {better} / {worse} | {sign_test(better, worse):.2g} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"manifest": args.manifest, "beam": args.beam, "lm": args.lm,
                                               "threshold": args.threshold, "wer": table, "hypotheses": picked},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
