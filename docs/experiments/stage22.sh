#!/bin/bash
# Stage 22 as declared in whisper-import.md (twenty-eighth session, 2026-12-05), runnable on a fresh machine in one
# session (about 1.5 h on 2 cores): the held-out sets made again from their seeds (data/heldout and data/heldout3, as
# stage14.sh makes them), data/v3d (13.1 h of dry speech from piper, hibari and flite, the voice families nearest real
# speech) made again from its seed, the bundled model measured on the held-out sets, then stage 18's recipe from the
# bundled model on data/v3d alone (600 steps); candidates stage 22 and its mean with the bundled model.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/v3d --num 12000 --mix configs/synth/mix-fast-dry.json --seed 28 --prefix d28 --workers 2
BUNDLED_COMMIT=${BUNDLED_COMMIT:-8b2c6a2}  # the model shipped with stage 18 (the mean of stage 18 and its start)
bash docs/experiments/model_from_git.sh bundled $BUNDLED_COMMIT
asr-engine train configs/whisper-heads-s22.json --resume  # starts afresh, or resumes an interrupted run
bash docs/experiments/package_stage.sh 22 bundled \
  "the bundled model of commit $BUNDLED_COMMIT (the mean of stage 18 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/v3d: WordNet, fortunes, State of the \
Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by piper, hibari and flite"
bash docs/experiments/judge.sh bundled s22-pkg avg22
