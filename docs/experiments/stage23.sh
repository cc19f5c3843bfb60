#!/bin/bash
# Stage 23 as declared in whisper-import.md (twenty-ninth session, 2026-12-06), runnable on a fresh machine in one
# session (about 2 h on 2 cores): the held-out sets made again from their seeds if absent (as stage22.sh makes them),
# data/v3e (15,000 utterances of new dry speech from piper, hibari and flite, data/v3d's mix from a new seed), the
# bundled model (the mean of stage 22 and its start) measured on the held-out sets if it has not been, then stage
# 22's recipe from it on data/v3e alone (600 steps); candidates stage 23 and its mean with the bundled model.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/v3e --num 15000 --mix configs/synth/mix-fast-dry.json --seed 29 --prefix d29 --workers 2
BUNDLED_COMMIT=${BUNDLED_COMMIT:-896aaa6}  # the model shipped with stage 22 (the mean of stage 22 and its start)
bash docs/experiments/model_from_git.sh avg22 $BUNDLED_COMMIT
asr-engine train configs/whisper-heads-s23.json --resume  # starts afresh, or resumes an interrupted run
bash docs/experiments/package_stage.sh 23 avg22 \
  "the bundled model of commit $BUNDLED_COMMIT (the mean of stage 22 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/v3e: WordNet, fortunes, State of the \
Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by piper, hibari and flite"
bash docs/experiments/judge.sh avg22 s23-pkg avg23
