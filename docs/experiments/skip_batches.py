"""Where skipping's saving goes when files stream in batches on ONNX Runtime (docs/onnx.md): per skip threshold,
the seconds in each exported stage and the positions the top stage computes (its kept frames and lookahead
copies, padding to the batch's most included).

    python docs/experiments/skip_batches.py MANIFEST [THRESHOLDS] [EVERY]

e.g. `python docs/experiments/skip_batches.py ../shared/data/dev_real/manifest.jsonl 1.0,0.99,0.95 2`.
"""

import collections
import sys
import time

from asr_engine.backend import load_model
from asr_engine.evaluate import evaluate
from asr_engine.manifest import read_manifest

SECONDS: dict[str, float] = collections.defaultdict(float)
POSITIONS = [0]


class Timed:
    """An ORT session whose run() adds its seconds (and, for the top stage, its positions) up."""

    def __init__(self, session, name: str):
        self.session, self.name = session, name

    def run(self, outputs, feed):
        t = time.perf_counter()
        out = self.session.run(outputs, feed)
        SECONDS[self.name] += time.perf_counter() - t
        if self.name == "top":
            ahead = feed["x_ahead"].shape[1] if "x_ahead" in feed else 0  # exports without lookahead have none
            POSITIONS[0] += feed["x"].shape[0] * (feed["x"].shape[1] + ahead)
        return out

    def __getattr__(self, name):
        return getattr(self.session, name)


def main(manifest: str, thresholds: str = "1.0,0.99,0.95", every: str = "1") -> None:
    m = load_model(None, "onnx", threads=2, for_files=True)
    m.bottom, m.top, m._fbank = Timed(m.bottom, "bottom"), Timed(m.top, "top"), Timed(m._fbank, "fbank")
    utts = read_manifest(manifest)[:: int(every)]
    for th in (float(t) for t in thresholds.split(",")):
        SECONDS.clear()
        POSITIONS[0] = 0
        t = time.perf_counter()
        s = evaluate(m, utts, ["all"] * len(utts), [th]).settings[0]
        wall = time.perf_counter() - t
        stages = " ".join(f"{k} {v:.2f} s" for k, v in SECONDS.items())
        print(f"threshold {th}: frames through the top {s.top_fraction:.1%}, top-stage positions {POSITIONS[0]:,}, "
              f"{wall:.2f} s: {stages}, the rest {wall - sum(SECONDS.values()):.2f} s; WER {s.total.wer:.2%}",
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
