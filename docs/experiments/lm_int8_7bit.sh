#!/bin/bash
# The LM step's int8 bar (docs/language-model.md, "A wider LM": within +0.1 of the fp32 step's WER on data/heldout3
# in both layouts, beam 16, the bundled LM) run again with 7-bit weights (docs/onnx.md, "7-bit weights"), the encoder
# in fp32 (what the int8 rule left the default). bash docs/experiments/lm_int8_7bit.sh > runs/lm_int8_7bit.log 2>&1
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
mkdir -p runs
for C in full streaming; do
  for P in fp32 int8; do
    asr-engine eval data/heldout3/manifest.jsonl --context $C --beam 16 --lm default --precision fp32 \
      --lm-precision $P --thresholds 0.99 --backend onnx --threads 2 -q --json runs/lm7_${C}_${P}.json
  done
  (cd docs/experiments && python paired.py --json ../../runs/lm7_${C}_fp32.json ../../runs/lm7_${C}_int8.json \
    ../../data/heldout3/manifest.jsonl 0.99)
done
