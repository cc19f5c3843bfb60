#!/bin/bash
# The default beam's rule (docs/language-model.md, "The default beam, again"): beam 8 and 16 on data/heldout3 in
# both layouts, each run twice, alternated, in one sitting with nothing else running; then the paired comparison
# and each beam's real-time factor over its two runs. bash docs/experiments/default_beam.sh > runs/beam.log 2>&1
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
M=data/heldout3/manifest.jsonl
mkdir -p runs
for C in full streaming; do
  for R in 1 2; do
    for B in 8 16; do
      asr-engine eval $M --context $C --beam $B --lm default --thresholds 0.99 --backend onnx --threads 2 -q \
        --json runs/beam_${C}_b${B}_r${R}.json
    done
  done
  (cd docs/experiments && python paired.py --json ../../runs/beam_${C}_b8_r1.json ../../runs/beam_${C}_b16_r1.json \
    ../../$M 0.99)
done
python - <<'PY'
import json
for c in ("full", "streaming"):
    res = {b: [json.load(open(f"runs/beam_{c}_b{b}_r{r}.json"))["settings"][0] for r in (1, 2)] for b in (8, 16)}
    rtf = {b: sum(s["rtf"] for s in runs) / 2 for b, runs in res.items()}  # the same audio in every run
    for b, runs in res.items():
        print(f"{c:9} beam {b:2}: WER {runs[0]['wer']:.2%} / {runs[1]['wer']:.2%}, CER {runs[0]['cer']:.2%}, "
              f"RTF {runs[0]['rtf']:.4f} + {runs[1]['rtf']:.4f} -> {rtf[b]:.4f}")
    print(f"{c:9} beam 16 / beam 8 real-time factor: {rtf[16] / rtf[8]:.2f}x")
PY
