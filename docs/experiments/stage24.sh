#!/bin/bash
# Stage 24 as declared in whisper-import.md (twenty-ninth session, 2026-12-06): stage 23 with masks on the cached
# outputs (cache_mask), the same speech, start and steps; run after stage23.sh, whose corpus, cache and bundled-model
# report it reads. Its candidate is the mean of stage 24 and the bundled model.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine train configs/whisper-heads-s24.json --resume  # starts afresh, or resumes an interrupted run
bash docs/experiments/package_stage.sh 24 avg22 \
  "the bundled model of commit ${BUNDLED_COMMIT:-896aaa6} (the mean of stage 22 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/v3e: WordNet, fortunes, State of the \
Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by piper, hibari and \
flite, its cached block outputs masked as SpecAugment masks features (4 time spans of up to 5% of each utterance, 10% \
of the channels)"
bash docs/experiments/judge.sh avg22 avg24
