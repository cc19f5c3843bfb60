#!/bin/bash
# Stage 14 as run in the twenty-first session (2026-12-05), from a fresh machine (no corpus, no run): the
# corpora made again from their seeds, v3w's first 3,000 (the `words` text source), then stage 14 (stage 12's
# recipe from the bundled model on data/mixed + v3w) and its mean with the bundled model, judged by the rule
# declared in whisper-import.md ("Stage 14 as it is run"): data/heldout + data/heldout3. About 1.5 h on 2 cores.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine data synth --out data/mixed --num 1500 --seed 2 --prefix s2 --workers 2
asr-engine data synth --out data/v3w --num 3000 --mix configs/synth/mix-words.json --seed 10 --prefix s10 --workers 2
asr-engine data synth --out data/heldout --split heldout --num 400 --augment-prob 0.3 --seed 5 --prefix h2 \
  --engines espeak-ng,flite,festival,piper,hibari --workers 2
asr-engine data synth --out data/heldout3 --split heldout --num 1200 --augment-prob 0.3 \
  --mix configs/synth/mix-text.json --seed 9 --prefix h9 --workers 2
awk 'NR%2==1' data/heldout/manifest.jsonl > data/heldout/tune.jsonl
# the bundled model before this session
mkdir -p runs/bundled && git archive a82ed0b asr_engine/models/default | tar -x --strip-components=3 -C runs/bundled
asr-engine train configs/whisper-heads-s14.json
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s14/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.1f}\")")
S14="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 600 steps from the bundled model (the mean of stages 12 and 13) on $HOURS h ($UTTS utterances) of synthetic speech (data/mixed's first 1,500 + v3w's first 3,000: WordNet, fortunes, State of the Union and chatterbot text, and lists of wordfreq's 20,000 most frequent English words) with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s14/last runs/s14-pkg --trained-on "$S14"
python docs/experiments/average.py runs/avg14 runs/bundled runs/s14-pkg --labels "the bundled model of commit a82ed0b (the mean of stages 12 and 13)" \
  "stage 14 (configs/whisper-heads-s14.json, 600 steps from it)" --trained-on "the mean of the bundled model of commit a82ed0b and stage 14 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 14: $S14"
HELD=data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl
for m in bundled avg14; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/$m \
    --backend torch --thresholds 1.0,0.99 --threads 2 --json runs/held_$m.json
done
python docs/experiments/paired.py --json runs/held_bundled.json runs/held_avg14.json $HELD 1.0
# measured after the choice, not used in it
for m in bundled avg14; do
  asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$m --backend torch --thresholds 1.0,0.99 --threads 2 \
    --json runs/dev_$m.json
done
# the LM fusion rule of docs/language-model.md (the bundled acoustic model of a82ed0b, data/heldout2, beam 8, 0.99)
asr-engine data synth --out data/heldout2 --split heldout --num 1200 --augment-prob 0.3 --seed 7 --prefix h7 --workers 2
for f in "0.7 2.0 -8" "0.55 2.0 -5"; do
  read W B P <<< "$f"
  asr-engine eval data/heldout2/manifest.jsonl --model runs/bundled --backend onnx --thresholds 0.99 --beam 8 --lm default \
    --lm-weight $W --length-bonus $B --lexicon-penalty=$P --threads 2 --json runs/lm_heldout2_${W}_${B}_${P}.json
done
