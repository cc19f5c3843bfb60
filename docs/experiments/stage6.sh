#!/bin/bash
# Stage 6 of the Whisper-based model from a fresh machine (2026-11-29, eighth session): the
# machine had lost every corpus and run, so the corpus is made again here and the run starts
# from the bundled (stage-5) model. About 1 h 50 min on 2 cores: synthesis 53 min, features and
# cache 4 min, training about 55 min. Measuring and shipping: docs/experiments/eval_whisper.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# The babble source of mix-babble/mix-beds: the first 1,500 utterances of data/mixed's seed.
asr-engine data synth --out data/mixed --num 1500 --seed 2 --prefix s2 --workers 2
# Held-out synthetic speech (unseen sentences; the five engines it was first made with).
asr-engine data synth --out data/heldout --split heldout --num 400 --augment-prob 0.3 --seed 5 --prefix h2 \
  --engines espeak-ng,flite,festival,piper,hibari --workers 2
# New training speech: the first 6,500 utterances of v3b's seed (music and ambience beds too; 42 min).
# The job list of --num N is a prefix of the same seed's longer list, so a larger N continues it.
asr-engine data synth --out data/v3b --num 6500 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
# The stage-5 model it starts from: the bundled model as of commit 7af247a.
mkdir -p runs/stage5 && git archive 7af247a asr_engine/models/default | tar -x --strip-components=3 -C runs/stage5
asr-engine train configs/whisper-top3-r16.json
