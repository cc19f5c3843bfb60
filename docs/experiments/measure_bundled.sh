#!/bin/bash
# Every accuracy and speed row of the README's table for the bundled model (ONNX Runtime, 2 threads), as each
# shipping of a new default model re-measures them: bash docs/experiments/measure_bundled.sh TAG > runs/shipTAG.log 2>&1
# (about 25 minutes on 2 cores; reports in runs/shipTAG_*.json). Re-export first after changing the model's
# config.json: asr-engine export asr_engine/models/default --ship
set -ex
T=${1:?usage: measure_bundled.sh TAG}
cd "$(dirname "$0")/../.." && source .venv/bin/activate
D=../shared/data/dev_real/manifest.jsonl
B=$(python -c "import json; print(json.load(open('asr_engine/models/default/decoding.json'))['beam'])")  # the default beam
# greedy, streaming and full context, off and at the default threshold, with RTF
python -m bench rtf --manifest $D --backend onnx --threads 2 --context streaming,full --threshold 0.99 --reps 2 \
  --results '' | grep -v '%|'
for C in full streaming; do
  asr-engine eval $D --context $C --beam $B --lm default --backend onnx --threads 2 --thresholds 1.0,0.99 -q \
    --json runs/ship${T}_dev_lm_$C.json
  asr-engine eval $D --context $C --beam $B --lm default --rescore whisper --backend onnx --threads 2 \
    --thresholds 1.0,0.99 -q --json runs/ship${T}_dev_rescore_$C.json
done
asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --context full --backend onnx --threads 2 \
  --thresholds 1.0,0.99 -q --json runs/ship${T}_held_full.json
asr-engine transcribe $D --streaming --two-pass --format jsonl > runs/ship${T}_two_pass.jsonl
python docs/experiments/long_files.py $D 40 7 | grep -v '%|'
