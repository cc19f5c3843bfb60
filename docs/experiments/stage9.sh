#!/bin/bash
# Stage 9 of the Whisper-based model (2026-11-29, eleventh session): stage 8's recipe (half of the
# steps compacted at 0.95) from the bundled mean of stages 7 and 8, on v3b grown to 20,000
# utterances, 800 steps. Then the mean of its result and its start (the lineage's weights averaged
# again, as for stages 7 and 8).
# About 2 h on 2 cores: synthesis ~25 min, features and cache ~10 min, training ~75 min.
# Measuring: docs/experiments/eval_whisper.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# v3b's first 20,000 utterances (continues the 16,000 of stage 8: the seed's job list is a prefix list).
asr-engine data synth --out data/v3b --num 20000 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
mkdir -p runs/avg78 && git archive 0bd0eff asr_engine/models/default | tar -x --strip-components=3 -C runs/avg78
asr-engine train configs/whisper-top3-r16-s9.json
