#!/bin/bash
# Stage 16 as declared in whisper-import.md (twenty-sixth session, 2026-12-05): two new blocks above the bundled
# model's six, trained with stage 15's recipe and data (its cache of blocks 1-5 reused), judged on data/heldout +
# data/heldout3 against runs/held_avg14.json (the bundled model's report, on the same files). Needs stage15.sh's
# corpora (data/v3c/first3000.jsonl: v3c's first 3,000 lines, the part of v3c stage 15 trained on) and runs/avg14.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
[ -f data/v3c/first3000.jsonl ] || head -3000 data/v3c/manifest.jsonl > data/v3c/first3000.jsonl
asr-engine train configs/whisper-grow-s16.json
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-grow-s16/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.1f}\")")
S16="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); two new blocks (7 and 8) added above them, starting as the identity; then block 6's conv module, blocks 7-8 and the CTC heads trained 600 steps from the bundled model (the mean of stage 14 and its start) on $HOURS h ($UTTS utterances) of synthetic speech (data/mixed's first 1,500, v3w's and v3c's first 3,000 and v3f's 11,000: WordNet, fortunes, State of the Union and chatterbot text, and lists of wordfreq's 20,000 most frequent English words) with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-grow-s16/last runs/s16-pkg --trained-on "$S16" \
  --init-from "the bundled model of commit 688f4d8 (the mean of stage 14 and its start)"
asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/s16-pkg \
  --backend torch --thresholds 1.0,0.99 --threads 2 --json runs/held_s16.json
python docs/experiments/paired.py --json runs/held_avg14.json runs/held_s16.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 1.0
python docs/experiments/paired.py --json runs/held_avg14.json runs/held_s16.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 0.99
# measured after the choice, not used in it
asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/s16-pkg --backend torch --thresholds 1.0,0.99 --threads 2 \
  --json runs/dev_s16.json
