#!/bin/bash
# Stage 15 as declared in whisper-import.md (twenty-third session, 2026-12-05): v3f (the fast engines, mostly
# word lists), then stage 12's recipe from the bundled model on data/mixed + v3w + v3c + v3f, its mean with the
# bundled model, judged on data/heldout + data/heldout3 against runs/held_avg14.json (the bundled model's report
# of the twenty-first session, on the same files). Needs stage14.sh's corpora and runs/avg14 (the bundled model).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
[ -n "$NO_SYNTH" ] || asr-engine data synth --out data/v3f --num 15000 --mix configs/synth/mix-fast-words.json --seed 11 --prefix s11 --workers 2
asr-engine train configs/whisper-heads-s15.json
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s15/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.1f}\")")
S15="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 600 steps from the bundled model (the mean of stage 14 and its start) on $HOURS h ($UTTS utterances) of synthetic speech (data/mixed's first 1,500, v3w's and v3c's first 3,000 and v3f: WordNet, fortunes, State of the Union and chatterbot text, and lists of wordfreq's 20,000 most frequent English words, v3f's spoken by espeak-ng, flite, festival, piper and hibari only) with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s15/last runs/s15-pkg --trained-on "$S15"
python docs/experiments/average.py runs/avg15 runs/avg14 runs/s15-pkg --labels "the bundled model of commit f07cffc (the mean of stage 14 and its start)" \
  "stage 15 (configs/whisper-heads-s15.json, 600 steps from it)" --trained-on "the mean of the bundled model of commit f07cffc and stage 15 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 15: $S15"
asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/avg15 \
  --backend torch --thresholds 1.0,0.99 --threads 2 --json runs/held_avg15.json
python docs/experiments/paired.py --json runs/held_avg14.json runs/held_avg15.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 1.0
python docs/experiments/paired.py --json runs/held_avg14.json runs/held_avg15.json data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 0.99
# measured after the choice, not used in it
asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/avg15 --backend torch --thresholds 1.0,0.99 --threads 2 \
  --json runs/dev_avg15.json
