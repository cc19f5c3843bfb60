#!/bin/bash
# Stage 17 as declared in whisper-import.md (twenty-sixth session, 2026-12-05): stage 15's recipe from the bundled
# model on the dry utterances of stage 15's corpora and v3n; candidates stage 17 and its mean with the bundled
# model, judged on data/heldout + data/heldout3 against runs/held_avg14.json. Needs the corpora of stage15.sh, v3n
# (docs/corpus.md) and runs/avg14 (the bundled model).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
python docs/experiments/dry.py dry.jsonl data/mixed/manifest.jsonl data/v3w/manifest.jsonl data/v3f/manifest.jsonl data/v3n/manifest.jsonl
python docs/experiments/dry.py dry3000.jsonl data/v3c/manifest.jsonl --first 3000
asr-engine train configs/whisper-heads-s17.json
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s17/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.1f}\")")
S17="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 600 steps from the bundled model (the mean of stage 14 and its start) on $HOURS h ($UTTS utterances) of dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/mixed, v3w, v3c's first 3,000, v3f and v3n: WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by espeak-ng, flite, festival, piper, hibari and Kokoro, with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s17/last runs/s17-pkg --trained-on "$S17" \
  --init-from "the bundled model of commit 688f4d8 (the mean of stage 14 and its start)"
python docs/experiments/average.py runs/avg17 runs/avg14 runs/s17-pkg --labels "the bundled model of commit 688f4d8 (the mean of stage 14 and its start)" \
  "stage 17 (configs/whisper-heads-s17.json, 600 steps from it)" --trained-on "the mean of the bundled model of commit 688f4d8 and stage 17 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 17: $S17"
for M in s17-pkg avg17; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/$M \
    --backend torch --thresholds 1.0,0.99 --threads 2 --json runs/held_$M.json
  python docs/experiments/paired.py --json runs/held_avg14.json runs/held_$M.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 1.0
  python docs/experiments/paired.py --json runs/held_avg14.json runs/held_$M.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 0.99
done
(cd docs/experiments && python by_augment.py ../../data/heldout/manifest.jsonl+../../data/heldout3/manifest.jsonl \
  ../../runs/held_avg14.json ../../runs/held_s17-pkg.json ../../runs/held_avg17.json)
# measured after the choice, not used in it
for M in s17-pkg avg17; do
  asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$M --backend torch --thresholds 1.0,0.99 --threads 2 \
    --json runs/dev_$M.json
done
