#!/bin/bash
# Package a Whisper-based run and measure it: dev_real and held-out synthetic (greedy, skip
# thresholds), beam 8 + the bundled LM, streaming ONNX speed. Usage:
#   bash docs/experiments/eval_whisper.sh RUN OUT "TRAINED_ON"
# e.g. bash docs/experiments/eval_whisper.sh runs/whisper-top4-r16 runs/top4-pkg "..."
set -x
cd "$(dirname "$0")/../.." && source .venv/bin/activate
RUN=$1 P=$2 TRAINED_ON=$3
rm -rf "$P"
asr-engine package "$RUN/last" "$P" --trained-on "$TRAINED_ON"
du -sh "$P"
DEV=../shared/data/dev_real/manifest.jsonl
asr-engine eval $DEV --model "$P" --backend torch --thresholds 1.0,0.99,0.98,0.97,0.95 --threads 2 2>&1 | grep -v "eval:"
asr-engine eval data/heldout/manifest.jsonl --model "$P" --backend torch --thresholds 1.0,0.99,0.98,0.97,0.95 --threads 2 2>&1 | grep -v "eval:"
asr-engine eval $DEV --model "$P" --backend torch --thresholds 1.0,0.99 --beam 8 --lm default --threads 2 2>&1 | grep -v "eval:"
python -m bench stream --manifest $DEV --model "$P" --chunk-ms 640 --batch 1 --backend onnx --threads 1 --limit 20 --results '' 2>&1 | grep -v "it/s\]" | tail -15
