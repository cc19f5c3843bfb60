"""Quiet input, with the engine's gain off and on (docs/streaming.md "Quiet input"); greedy, the bundled model.

  python docs/experiments/quiet.py files MANIFEST 0,-20,-30,-40,-50    # whole recordings, full context
  python docs/experiments/quiet.py streams MANIFEST 0,-30,-40          # each utterance, and 2-minute joins, live
  python docs/experiments/quiet.py openings MANIFEST                   # streams that open on something else
  python docs/experiments/quiet.py noisy MANIFEST                      # quiet and noisy recordings, full context

MANIFEST: ../shared/data/dev_real/manifest.jsonl. Levels are dB relative to the recordings (float copies).
"""

import json
import sys
from pathlib import Path

import numpy as np

import asr_engine
from asr_engine.audio import SAMPLE_RATE, load_audio
from asr_engine.engine import SessionOptions
from asr_engine.text import word_error_counts


def read(manifest: str) -> tuple[list[np.ndarray], list[str]]:
    m = Path(manifest)
    rows = [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
    return [load_audio(m.parent / r["audio"]) for r in rows], [r["text"] for r in rows]


def wer(refs: list[str], texts: list[str]) -> float:
    errors, words = map(sum, zip(*(word_error_counts(r, t) for r, t in zip(refs, texts))))
    return 100 * errors / words


def live(engine, audios: list[np.ndarray], on: bool) -> list:
    """Each array streamed as live audio (a session's own gain, not the whole recording's)."""
    return engine._stream_arrays(audios, [""] * len(audios), SessionOptions(auto_gain=on), None)


def files(audios, refs, levels):
    engine = asr_engine.load(beam=1, for_files=True, context="full", threads=2)
    for db in levels:
        xs = [a * np.float32(10 ** (db / 20)) for a in audios]
        got = [wer(refs, [r.text for r in engine.transcribe_arrays(xs, [""] * len(xs), SessionOptions(auto_gain=on))])
               for on in (False, True)]
        print(f"files {db:+.0f} dB: {got[0]:.2f}% as before, {got[1]:.2f}% brought up", flush=True)


def streams(audios, refs, levels):
    engine = asr_engine.load(beam=1, context="streaming", threads=2)
    joined, joined_refs, cur, ref = [], [], [], []
    for a, r in zip(audios, refs):  # the utterances joined in order into streams of just over 2 minutes
        cur.append(a)
        ref.append(r)
        if sum(map(len, cur)) > 120 * SAMPLE_RATE:
            joined.append(np.concatenate(cur))
            joined_refs.append(" ".join(ref))
            cur, ref = [], []
    joined.append(np.concatenate(cur))
    joined_refs.append(" ".join(ref))
    for db in levels:
        s = np.float32(10 ** (db / 20))
        for on in (False, True):
            alone = wer(refs, [r.text for r in live(engine, [a * s for a in audios], on)])
            long = wer(joined_refs, [r.text for r in live(engine, [a * s for a in joined], on)])
            print(f"streams {db:+.0f} dB gain {'on' if on else 'off'}: each utterance {alone:.2f}%, "
                  f"{len(joined)} 2-minute streams {long:.2f}%", flush=True)


def openings(audios, refs, seconds=10.0):
    """10 s of something else, then an utterance at its recorded level: words inside the opening, and the WER
    of what follows it."""
    engine = asr_engine.load(beam=1, context="streaming", threads=2)
    n, rng = int(seconds * SAMPLE_RATE), np.random.default_rng(0)
    first = audios[:80]
    frames = np.concatenate([a[: len(a) // 160 * 160].reshape(-1, 160) for a in first])
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(1))
    spliced = frames[rms <= np.percentile(rms, 10)].ravel()  # the quietest 10 ms frames, joined
    talk = np.concatenate(audios[200:])[:n]
    opens = {f"white noise {d} dBFS RMS": (rng.standard_normal(n) * 10 ** (d / 20)).astype(np.float32)
             for d in (-70, -60, -50)}
    opens["quietest frames spliced"] = np.resize(spliced, n).astype(np.float32)
    opens["talk at -40 dB"] = talk * np.float32(0.01)
    opens["talk at -30 dB"] = talk * np.float32(10 ** (-30 / 20))
    for name, lead in opens.items():
        k = 40 if name.startswith("talk") else 80
        for on in (False, True):
            rs = live(engine, [np.concatenate([lead, a]) for a in first[:k]], on)
            inside = [sum(w.start < seconds - 0.2 for w in r.words) for r in rs]
            after = wer(refs[:k], [" ".join(w.word for w in r.words if w.start >= seconds - 0.2) for r in rs])
            print(f"{name:26s} gain {'on' if on else 'off'}: {np.mean(inside):.1f} words a stream inside the "
                  f"opening ({sum(inside)} in all), WER after it {after:.2f}%", flush=True)


def noisy(audios, refs):
    """Speech at a level, white noise at another (dBFS RMS), whole recordings in full context."""
    engine = asr_engine.load(beam=1, for_files=True, context="full", threads=2)
    rng = np.random.default_rng(0)
    for db, noise in ((-40, -70), (-40, -65), (-30, -60), (0, -30)):
        xs = [(a * np.float32(10 ** (db / 20)) + 10 ** (noise / 20) * rng.standard_normal(len(a))).astype(np.float32)
              for a in audios]
        got = [wer(refs, [r.text for r in engine.transcribe_arrays(xs, [""] * len(xs), SessionOptions(auto_gain=on))])
               for on in (False, True)]
        print(f"speech {db:+d} dB, white noise {noise} dBFS RMS: {got[0]:.2f}% as before, {got[1]:.2f}% brought up",
              flush=True)


if __name__ == "__main__":
    what, manifest = sys.argv[1], sys.argv[2]
    audios, refs = read(manifest)
    if what in ("openings", "noisy"):
        {"openings": openings, "noisy": noisy}[what](audios, refs)
    else:
        {"files": files, "streams": streams}[what](audios, refs, [float(x) for x in sys.argv[3].split(",")])
