#!/bin/bash
# Stage 8 of the Whisper-based model (2026-11-29, tenth session): stage 7 again with v3b grown
# from 9,600 to 16,000 utterances, and the top layers run compacted (skip-aware, threshold 0.95)
# on half of the steps instead of 30%: skip_cost.py showed skipping's cost is the top layers' lost
# context, which only training on compacted sequences teaches them. The run starts from the
# stage-7 model (the bundled model as of commit 9e740a0).
# About 2 h 10 min on 2 cores: synthesis ~35 min, features and cache ~10 min, training ~75 min.
# Measuring and shipping: docs/experiments/eval_whisper.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# v3b's first 16,000 utterances (continues the 9,600 of stage 7: the seed's job list is a prefix list).
asr-engine data synth --out data/v3b --num 16000 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
mkdir -p runs/stage7 && git archive 9e740a0 asr_engine/models/default | tar -x --strip-components=3 -C runs/stage7
asr-engine train configs/whisper-top3-r16-s8.json
