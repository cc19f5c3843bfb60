"""How well a punctuation-and-casing model writes a manifest's reference transcripts (given as the recognizer would
write them: normalised words), against a rule that only capitalizes the first word and "I" and ends each
transcript with a full stop.

    python docs/experiments/punct_eval.py MANIFEST.jsonl|heldout [MODEL_DIR]   # default: the bundled model

heldout: the training's held-out windows of the text sources (the `data` extra), as `asr-engine punct train`
measures them.

Prints the scores (asr_engine.punctuation.scores) of both, the model's time per transcript, and a few transcripts
as written.
"""

import json
import sys
import time

import numpy as np

from asr_engine.punctuation import DEFAULT_PUNCT_DIR, Punctuator, labelled_words, scores, written


def main(manifest: str, model: str = str(DEFAULT_PUNCT_DIR)) -> None:
    p = Punctuator(model)
    gold_p, gold_c, pred_p, pred_c, rule_p, rule_c, shown, ms = [], [], [], [], [], [], [], []
    if manifest == "heldout":  # the training's held-out windows (the text sources' held-out sentences)
        from asr_engine.punct_train import documents, windows

        labelled = [(" ".join(written(w, q, c, {w: f}) for w, q, c, f in lw), lw)
                    for lw in windows(documents("heldout"), 2)]
    else:
        labelled = [(ref, labelled_words(ref)) for ref in
                    (json.loads(line)["text"] for line in open(manifest, encoding="utf-8"))]
    for ref, lw in labelled:
        if not lw:
            continue
        words = [w for w, *_ in lw]
        t0 = time.perf_counter()
        pp, pc = p.labels(words)
        ms.append((time.perf_counter() - t0) * 1000)
        gold_p += [x[1] for x in lw]
        gold_c += [x[2] for x in lw]
        pred_p += list(pp)
        pred_c += list(pc)
        rule_p += [0] * (len(words) - 1) + [2]
        rule_c += [1 if i == 0 or w == "i" or w.startswith("i'") else 0 for i, w in enumerate(words)]
        if len(shown) < 12:
            shown.append((ref, " ".join(written(w, int(a), int(b), p.mixed) for w, a, b in zip(words, pp, pc))))
    g = (np.array(gold_p), np.array(gold_c))
    model_scores = scores(np.array(pred_p), g[0], np.array(pred_c), g[1])
    rule_scores = scores(np.array(rule_p), g[0], np.array(rule_c), g[1])
    print(json.dumps({"model": model_scores, "rule": rule_scores}, indent=1))
    print(f"time per transcript (one thread): p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms, "
          f"{sum(ms) / len(gold_p):.3f} ms a word")
    for ref, out in shown:
        print(f"  reference: {ref}\n  written:   {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
