#!/bin/bash
# Stage 21 as declared in whisper-import.md (twenty-seventh session, 2026-12-05): stage 18's recipe from the bundled
# model (runs/avg18) on its dry speech plus data/v3d (13.1 h of new dry speech from piper, hibari and flite); candidates
# stage 21 and its mean with the bundled model, judged on data/heldout + data/heldout3 against runs/held_avg18.json.
# Needs the corpora of stage18.sh, data/v3d (docs/corpus.md) and runs/avg18 (the bundled model). The cache of blocks
# 1-5 for 35,296 utterances is new (about 50 minutes on 2 threads).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine train configs/whisper-heads-s21.json --resume  # starts afresh, or resumes an interrupted run
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s21/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.2f}\")")
BUNDLED="the bundled model of commit 8b2c6a2 (the mean of stage 18 and its start)"
S21="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 900 steps from $BUNDLED on $HOURS h ($UTTS utterances) of dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/mixed, v3w, v3c, v3f, v3n and v3d: WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by espeak-ng, flite, festival, piper, hibari and Kokoro, with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s21/last runs/s21-pkg --trained-on "$S21" --init-from "$BUNDLED"
python docs/experiments/average.py runs/avg21 runs/avg18 runs/s21-pkg --labels "$BUNDLED" \
  "stage 21 (configs/whisper-heads-s21.json, 900 steps from it)" --trained-on "the mean of $BUNDLED and stage 21 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 21: $S21"
bash docs/experiments/judge.sh avg18 avg21 s21-pkg
