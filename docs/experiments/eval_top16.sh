#!/bin/bash
# evaluation of the frozen-Whisper top-trained model (session of 2026-11-29)
set -x
cd "$(dirname "$0")/../.." && source .venv/bin/activate
P=${P:-runs/whisper-top-r16-pkg}
rm -rf $P
asr-engine package runs/whisper-top-r16/last $P --trained-on "whisper-base encoder (frozen layers 1-5) + block 6 and heads trained on 17.7 h of synthetic speech (data/mixed + data/v3)"
du -sh $P
DEV=../shared/data/dev_real/manifest.jsonl
asr-engine eval $DEV --model $P --backend torch --thresholds 1.0,0.99,0.98,0.95 --threads 2 2>&1 | grep -v "eval:"
asr-engine eval data/heldout/manifest.jsonl --model $P --backend torch --thresholds 1.0,0.98,0.95 --threads 2 2>&1 | grep -v "eval:"
asr-engine eval $DEV --model $P --backend torch --thresholds 1.0,0.98 --beam 8 --lm default --threads 2 2>&1 | grep -v "eval:"
python -m bench stream --manifest $DEV --model $P --chunk-ms 640 --batch 1 --backend onnx --threads 1 --limit 20 --results '' 2>&1 | grep -v "it/s\]" | tail -15
