#!/bin/bash
# Stage 24 as declared in whisper-import.md (twenty-ninth session, 2026-12-06): stage 23 with masks on the cached
# outputs (cache_mask), the same speech (data/v3e), start (the mean of stage 22 and its start), cache and steps. Its
# candidate, the mean of stage 24 and that start, is judged against the bundled model, the mean of stage 23 and the
# same start: the sign test between them is the masks' A/B. Runnable on a fresh machine (about 2 h on 2 cores with the
# corpus to make, 50 minutes after stage23.sh on the same machine).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/v3e --num 15000 --mix configs/synth/mix-fast-dry.json --seed 29 --prefix d29 --workers 2
START_COMMIT=${START_COMMIT:-896aaa6}  # the model shipped with stage 22 (the mean of stage 22 and its start)
BUNDLED_COMMIT=${BUNDLED_COMMIT:-aa7704b}  # the model shipped with stage 23 (the mean of stage 23 and the above)
bash docs/experiments/model_from_git.sh avg22 $START_COMMIT
bash docs/experiments/model_from_git.sh avg23 $BUNDLED_COMMIT
asr-engine train configs/whisper-heads-s24.json --resume  # starts afresh, or resumes an interrupted run
bash docs/experiments/package_stage.sh 24 avg22 \
  "the bundled model of commit $START_COMMIT (the mean of stage 22 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/v3e: WordNet, fortunes, State of the \
Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by piper, hibari and \
flite, its cached block outputs masked as SpecAugment masks features (4 time spans of up to 5% of each utterance, 10% \
of the channels)"
bash docs/experiments/judge.sh avg23 avg24
