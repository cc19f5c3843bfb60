#!/bin/bash
# Stage 21 as declared in whisper-import.md (twenty-seventh session, 2026-12-05): stage 18's recipe from the bundled
# model (runs/avg18) on its dry speech plus data/v3d (13.1 h of new dry speech from piper, hibari and flite); candidates
# stage 21 and its mean with the bundled model, judged on data/heldout + data/heldout3 against runs/held_avg18.json.
# Needs the corpora of stage18.sh, data/v3d (docs/corpus.md) and runs/avg18 (the bundled model). The cache of blocks
# 1-5 for 35,296 utterances is new (about 50 minutes on 2 threads).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine train configs/whisper-heads-s21.json --resume  # starts afresh, or resumes an interrupted run
bash docs/experiments/package_stage.sh 21 avg18 \
  "the bundled model of commit 8b2c6a2 (the mean of stage 18 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/mixed, v3w, v3c, v3f, v3n and v3d: \
WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, \
spoken by espeak-ng, flite, festival, piper, hibari and Kokoro"
bash docs/experiments/judge.sh avg18 avg21 s21-pkg
