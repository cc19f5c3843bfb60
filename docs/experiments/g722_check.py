"""Does dev_real's G.722 channel explain what real speech costs? The utterances of a manifest that had no augmentation
at all (no voice perturbation, codec or noise), as they are and after a G.722 round trip, written as two manifests to
decode with the same model:

    python docs/experiments/g722_check.py data/heldout/manifest.jsonl /tmp/g722
    asr-engine eval /tmp/g722/orig.jsonl --backend onnx --thresholds 1.0 --threads 2
    asr-engine eval /tmp/g722/g722.jsonl --backend onnx --thresholds 1.0 --threads 2

G.722 (64 kbit/s sub-band ADPCM, wideband telephony) is FFmpeg's codec through PyAV; its decoder output lags the input
by 22 samples, which are dropped so that the two copies line up.
"""

import io
import json
import sys
from pathlib import Path

import av
import numpy as np
import soundfile as sf

DELAY = 22  # samples: FFmpeg's G.722 encoder + decoder (the QMF filters), measured by cross-correlation


def g722_round_trip(x: np.ndarray, sr: int = 16000) -> np.ndarray:
    buf = io.BytesIO()
    with av.open(buf, "w", format="g722") as out:
        st = out.add_stream("g722", rate=sr)
        st.layout = "mono"
        pcm = (np.clip(np.concatenate([x, np.zeros(DELAY, np.float32)]), -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = sr
        for packet in (*st.encode(frame), *st.encode(None)):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r", format="g722") as inp:
        y = np.concatenate([f.to_ndarray().reshape(-1) for f in inp.decode(audio=0)])
    y = y.astype(np.float32) / (32768.0 if y.dtype == np.int16 else 1.0)
    return y[DELAY : DELAY + len(x)]


def main(manifest: str, out: str) -> None:
    base, out_dir = Path(manifest).parent, Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in open(manifest)]
    dry = [r for r in rows if not r.get("augment")]
    with open(out_dir / "orig.jsonl", "w") as fo, open(out_dir / "g722.jsonl", "w") as fg:
        for r in dry:
            src = (base / r["audio"]).resolve()
            x, sr = sf.read(src, dtype="float32")
            dst = out_dir / (src.stem + ".g722.wav")
            sf.write(dst, g722_round_trip(x, sr), sr)
            fo.write(json.dumps({**r, "audio": str(src)}) + "\n")
            fg.write(json.dumps({**r, "audio": str(dst.resolve())}) + "\n")
    print(f"{len(dry)} unaugmented utterances of {len(rows)}: {out_dir}/orig.jsonl, {out_dir}/g722.jsonl")


if __name__ == "__main__":
    main(*sys.argv[1:3])
