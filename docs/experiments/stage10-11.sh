#!/bin/bash
# Stages 10 and 11 of the Whisper-based model (2026-11-29, twelfth session), and the shipped mean.
# Stage 10: the bundled model of commit 3d2041a (runs/avg9, the mean of stage 9 and its start)
# interpolated a fifth of the way back to Whisper in blocks 4-6 (WiSE-FT), then block 6's conv module
# and the CTC heads trained (blocks 1-5 cached, Whisper's weights frozen). Stage 11: from stage 10,
# blocks 4-6 train with an L2 pull toward Whisper's weights (anchor 0.05). Shipped: their mean.
# About 1 h 40 min on 2 cores: caches 36 + 10 min, training 24 + 33 min (with other jobs running).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
mkdir -p runs/avg9 && git archive 3d2041a asr_engine/models/default | tar -x --strip-components=3 -C runs/avg9
# v3b's first 20,500 utterances (the seed's job list is a prefix list: 500 more than stage 9)
asr-engine data synth --out data/v3b --num 20500 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
asr-engine import-whisper runs/whisper-import-fresh --chunk-size 32 --left-chunks 4 --skip-layer 3
python docs/experiments/wise.py runs/wise0.8 runs/avg9 runs/whisper-import-fresh 0.8
asr-engine train configs/whisper-wise-heads-s10.json
asr-engine package runs/whisper-wise-heads-s10/last runs/s10-pkg --trained-on "whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 a fifth of the way from the bundled model of commit 3d2041a back to Whisper's weights (WiSE-FT, docs/experiments/wise.py, alpha 0.8); then block 6's conv module and the CTC heads trained 600 steps on 20.33 h (21,999 utterances) of synthetic speech (data/mixed's first 1,500 + v3b's first 20,500) with blocks 1-6's Whisper weights frozen, half of the steps with the top layers compacted"
asr-engine train configs/whisper-anchor-s11.json
asr-engine package runs/whisper-anchor-s11/last runs/s11-pkg --trained-on "whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; from stage 10 (blocks 4-6 interpolated a fifth of the way back to Whisper, then block 6's conv module and the heads trained), blocks 4-6, their conv modules and the CTC heads trained 400 steps with an L2 pull toward Whisper's weights (anchor 0.05) on 20.33 h (21,999 utterances) of synthetic speech (data/mixed's first 1,500 + v3b's first 20,500), half of the steps with the top layers compacted"
python docs/experiments/average.py runs/avg11 runs/s10-pkg runs/s11-pkg --labels "stage 10 (configs/whisper-wise-heads-s10.json: the bundled model of commit 3d2041a interpolated a fifth of the way back to Whisper in blocks 4-6, then block 6's conv module and the CTC heads trained 600 steps)" "stage 11 (configs/whisper-anchor-s11.json, 400 steps from stage 10 with an L2 pull toward Whisper's weights)" \
  --trained-on "whisper-base encoder (MIT, OpenAI): blocks 1-3 frozen as imported; blocks 4-6, the conv modules of blocks 5-6 and the CTC heads are the mean of stage 10 and stage 11 (stage 11 trained from stage 10 with an L2 pull toward Whisper's weights) on 20.33 h of synthetic speech (21,999 utterances that the trainer kept) (data/mixed's first 1,500 + v3b's first 20,500, half of the steps with the top layers compacted); stage 10 started from the previous bundled model (stages 5-9, 40.5 h in all) interpolated a fifth of the way back to Whisper"
# then: cp runs/avg11/model.safetensors runs/avg11/config.json asr_engine/models/default/ && asr-engine export asr_engine/models/default --ship
