#!/bin/bash
# Stage 9 of the Whisper-based model (2026-11-29, eleventh session): stage 8's recipe (half of the
# steps compacted at 0.95) from the bundled mean of stages 7 and 8, on v3b grown to 20,000
# utterances, 800 steps. Then the mean of its result and its start (the lineage's weights averaged
# again, as for stages 7 and 8).
# About 2 h on 2 cores: synthesis ~25 min, features and cache ~10 min, training ~75 min.
# Measuring: docs/experiments/eval_whisper.sh (or asr-engine eval on runs/avg9, as whisper-import.md).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# v3b's first 20,000 utterances (continues the 16,000 of stage 8: the seed's job list is a prefix list).
asr-engine data synth --out data/v3b --num 20000 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
mkdir -p runs/avg78 && git archive 0bd0eff asr_engine/models/default | tar -x --strip-components=3 -C runs/avg78
asr-engine train configs/whisper-top3-r16-s9.json
# The shipped model: stage 9 packaged, then its mean with its start (asr_engine/models/default's
# model.safetensors and config.json, byte for byte); asr-engine export asr_engine/models/default --ship after copying.
asr-engine package runs/whisper-top3-r16-s9/last runs/s9-pkg --trained-on "whisper-base encoder (MIT, OpenAI): blocks 1-3 frozen as imported; from the mean of stages 7 and 8, blocks 4-6, the conv modules of blocks 5-6 and the CTC heads trained further on 19.86 h (21,499 utterances) of synthetic speech (data/mixed's first 1,500 + v3b's first 20,000, 4,000 of which are new since stage 8), half of the steps with the top layers compacted"
python docs/experiments/average.py runs/avg9 runs/avg78 runs/s9-pkg --labels "the mean of stages 7 and 8 (the bundled model of commit 0bd0eff)" "stage 9 (configs/whisper-top3-r16-s9.json, 800 steps from that mean)" \
  --trained-on "whisper-base encoder (MIT, OpenAI): blocks 1-3 frozen as imported; blocks 4-6, the conv modules of blocks 5-6 and the CTC heads are the mean of two models of one lineage: the mean of stages 7 and 8 (16.11 h), and stage 9, trained from it on 19.86 h of synthetic speech (21,499 utterances that the trainer kept) (data/mixed's first 1,500 + v3b's first 20,000, half of the steps with the top layers compacted); stages 5-6 before them: 20.5 h and 7.35 h"
