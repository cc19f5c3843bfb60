"""Kokoro's voices, shipped and mixed: how well whisper-base reads them (WER), and how far apart they
are (median F0 per speaker).

    python docs/experiments/kokoro_intelligibility.py N WHISPER_CT2_DIR [OUT]

N training sentences are synthesized by Kokoro (voices drawn as `data synth` draws them) into OUT,
then transcribed by whisper-base (CTranslate2 int8, greedy) from WHISPER_CT2_DIR (faster-whisper).
"""

import pathlib
import sys

import numpy as np
import soundfile as sf
from faster_whisper import WhisperModel

from asr_engine.data.synth import make_jobs, synthesize
from asr_engine.data.text_sources import load_sentences
from asr_engine.text import word_error_counts


def median_f0(x: np.ndarray, sr: int) -> float | None:
    """Median F0 by autocorrelation over voiced 40 ms frames (60-400 Hz)."""
    f0 = []
    for i in range(0, len(x) - 640, 320):
        w = x[i:i + 640] * np.hanning(640)
        if np.sqrt(np.mean(w ** 2)) < 0.02:
            continue
        ac = np.correlate(w, w, "full")[639:]
        lo, hi = sr // 400, sr // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            f0.append(sr / lag)
    return float(np.median(f0)) if f0 else None


def main() -> None:
    n, whisper_dir = int(sys.argv[1]), sys.argv[2]
    out = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "kokoro-intelligibility")
    train, _ = load_sentences(2.0)
    rows = [synthesize(j, out) for j in make_jobs(train, n, 42, ["kokoro"], "q", 0.0)]
    model = WhisperModel(whisper_dir, device="cpu", compute_type="int8", cpu_threads=1)
    errors = {"shipped": [0, 0], "mixed": [0, 0]}
    f0s: dict[str, list[float]] = {}
    for r in rows:
        segments, _ = model.transcribe(str(out / r["audio"]), language="en", beam_size=1)
        e, k = word_error_counts(r["text"], " ".join(s.text for s in segments))
        kind = "mixed" if r["voice"].startswith("kmix") else "shipped"
        errors[kind][0] += e
        errors[kind][1] += k
        x, sr = sf.read(out / r["audio"])
        f0 = median_f0(x, sr)
        if f0 is not None:
            f0s.setdefault(r["voice"], []).append(f0)
    print({k: f"{e / max(1, w):.1%} WER over {w} words" for k, (e, w) in errors.items()})
    med = {v: round(float(np.median(f)), 1) for v, f in f0s.items()}
    print(f"{len(med)} speakers, median F0 {min(med.values())}-{max(med.values())} Hz; shipped voices:",
          {v: f for v, f in med.items() if not v.startswith("kmix")})


if __name__ == "__main__":
    main()
