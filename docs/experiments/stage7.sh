#!/bin/bash
# Stage 7 of the Whisper-based model (2026-11-29, ninth session): stage 6 again with more speech
# and more steps. The corpus of stage 6 (docs/experiments/stage6.sh) grows by v3b's next 3,100
# utterances; the run starts from the stage-6 model (the bundled model as of commit 3106cec).
# About 1 h 40 min on 2 cores: synthesis 18 min, features and cache 5 min, training ~75 min.
# Measuring and shipping: docs/experiments/eval_whisper.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# v3b's first 9,600 utterances (continues the 6,500 of stage 6: the seed's job list is a prefix list).
asr-engine data synth --out data/v3b --num 9600 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
mkdir -p runs/stage6 && git archive 3106cec asr_engine/models/default | tar -x --strip-components=3 -C runs/stage6
asr-engine train configs/whisper-top3-r16-s7.json
