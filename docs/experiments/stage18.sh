#!/bin/bash
# Stage 18 as declared in whisper-import.md (twenty-sixth session, 2026-12-05): stage 17's recipe from the bundled
# model (the mean of stage 17 and its start, runs/avg17) on every dry utterance of the corpora; candidates stage 18
# and its mean with the bundled model, judged on data/heldout + data/heldout3 against runs/held_avg17.json. Needs
# the corpora of stage17.sh and runs/avg17 (the bundled model).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
python docs/experiments/dry.py dry.jsonl data/mixed/manifest.jsonl data/v3w/manifest.jsonl data/v3c/manifest.jsonl \
  data/v3f/manifest.jsonl data/v3n/manifest.jsonl
asr-engine train configs/whisper-heads-s18.json
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s18/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.1f}\")")
BUNDLED="the bundled model of commit 05690ca (the mean of stage 17 and its start)"
S18="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 600 steps from $BUNDLED on $HOURS h ($UTTS utterances) of dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/mixed, v3w, v3c, v3f and v3n: WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by espeak-ng, flite, festival, piper, hibari and Kokoro, with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s18/last runs/s18-pkg --trained-on "$S18" --init-from "$BUNDLED"
python docs/experiments/average.py runs/avg18 runs/avg17 runs/s18-pkg --labels "$BUNDLED" \
  "stage 18 (configs/whisper-heads-s18.json, 600 steps from it)" --trained-on "the mean of $BUNDLED and stage 18 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 18: $S18"
for M in s18-pkg avg18; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/$M \
    --backend torch --thresholds 1.0,0.99 --threads 2 --json runs/held_$M.json
  python docs/experiments/paired.py --json runs/held_avg17.json runs/held_$M.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 1.0
  python docs/experiments/paired.py --json runs/held_avg17.json runs/held_$M.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 0.99
done
(cd docs/experiments && python by_augment.py ../../data/heldout/manifest.jsonl+../../data/heldout3/manifest.jsonl \
  ../../runs/held_avg17.json ../../runs/held_s18-pkg.json ../../runs/held_avg18.json)
# measured after the choice, not used in it
for M in s18-pkg avg18; do
  asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$M --backend torch --thresholds 1.0,0.99 --threads 2 \
    --json runs/dev_$M.json
done
