"""Two passes in continuous mode: a manifest's utterances joined with 0.2-0.8 s of silence into N streams of K
utterances, streamed in 100 ms pieces through the default endpointer, with one pass (the streaming layout's
finals) and with two (each endpointed utterance decoded again in full context). Reports the WER of the joined
finals, per-stream wins and losses (a sign test), and the time each final's second pass took.

    python docs/experiments/two_pass.py MANIFEST K N [--beam 1] [--json OUT]
"""
import argparse
import json
import math
import time

import numpy as np

import asr_engine
from asr_engine.audio import load_audio
from asr_engine.engine import EndpointConfig, SessionOptions
from asr_engine.text import word_error_counts

ap = argparse.ArgumentParser()
ap.add_argument("manifest")
ap.add_argument("k", type=int)
ap.add_argument("n", type=int)
ap.add_argument("--beam", type=int, default=None, help="default: the model's recommendation (beam 8 + LM)")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--json", default=None)
args = ap.parse_args()

root = args.manifest.rsplit("/", 1)[0]
rows = [json.loads(line) for line in open(args.manifest)]
rng = np.random.default_rng(0)
streams, refs = [], []
for f in range(args.n):
    pick = rows[f * args.k:(f + 1) * args.k]
    parts = []
    for r in pick:
        p = r["audio"] if r["audio"].startswith("/") else root + "/" + r["audio"]
        parts += [load_audio(p), np.zeros(int(rng.uniform(0.2, 0.8) * 16000), np.float32)]
    streams.append(np.concatenate(parts))
    refs.append(" ".join(r["text"] for r in pick))
audio_s = sum(len(a) for a in streams) / 16000
print(f"{args.n} streams, {audio_s / args.n:.0f} s each")

kw = {} if args.beam is None else {"beam": args.beam, "lm": None}


def run(engine):
    """Each stream alone, as a live source: finals from pop_finals and finish; the second passes run inline
    (no server), timed apart from the first pass."""
    texts, seconds, finals = [], [], 0
    t0 = time.perf_counter()
    from asr_engine import engine as engine_module

    full_pass = engine_module._full_pass

    def timed(*a, **k):
        t = time.perf_counter()
        r = full_pass(*a, **k)
        seconds.append(time.perf_counter() - t)
        return r

    engine_module._full_pass = timed
    try:
        for a in streams:
            s = engine.session(options=SessionOptions(endpoint=EndpointConfig()))
            out = []
            for i in range(0, len(a), 1600):
                s.accept_audio(a[i: i + 1600])
                engine.step([s])
                out += s.pop_finals()
            last = s.finish()
            out += s.pop_finals() + ([last] if last.text else [])
            finals += len(out)
            texts.append(" ".join(r.text for r in out if r.text))
            engine.close(s)
    finally:
        engine_module._full_pass = full_pass
    return texts, time.perf_counter() - t0, seconds, finals


report = {}
for name, two in (("one pass", False), ("two passes", True)):
    eng = asr_engine.load(threads=args.threads, two_pass=two, **kw)
    texts, wall, seconds, finals = run(eng)
    errs = [word_error_counts(r, h) for r, h in zip(refs, texts)]
    wer = sum(e for e, _ in errs) / sum(n for _, n in errs)
    report[name] = {"wer": wer, "rtf": wall / audio_s, "finals": finals, "stream_errors": [e for e, _ in errs],
                    "second_pass_ms": {"p50": float(np.percentile(seconds, 50)) * 1e3,
                                       "p95": float(np.percentile(seconds, 95)) * 1e3} if seconds else None,
                    "texts": texts}
    print(f"{name}: WER {wer:.2%}, RTF {wall / audio_s:.4f}, {finals} finals"
          + (f", second pass p50 {report[name]['second_pass_ms']['p50']:.0f} ms, "
             f"p95 {report[name]['second_pass_ms']['p95']:.0f} ms" if seconds else ""))
a, b = report["one pass"]["stream_errors"], report["two passes"]["stream_errors"]
wins, losses = sum(y < x for x, y in zip(a, b)), sum(y > x for x, y in zip(a, b))
n = wins + losses
p = min(1.0, 2 * sum(math.comb(n, i) for i in range(0, min(wins, losses) + 1)) / 2 ** n) if n else 1.0
print(f"streams better with two passes: {wins}, worse: {losses}, sign test p = {p:.3g}")
if args.json:
    open(args.json, "w").write(json.dumps(report, indent=1) + "\n")
