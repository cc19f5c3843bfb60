#!/bin/bash
# The sixteenth session (2026-12-04), from a fresh machine (no corpus, no run): the corpora made again
# from their seeds, then stage 13 (stage 12's recipe from the bundled model on v3c's new text) and its
# mean with the bundled model, judged by the rule declared in whisper-import.md ("Stage 13").
# About 2 h 30 min on 2 cores: synthesis 70 min, cache and training 35 min, evaluations 25 min.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine data synth --out data/mixed --num 1500 --seed 2 --prefix s2 --workers 2
asr-engine data synth --out data/heldout --split heldout --num 400 --augment-prob 0.3 --seed 5 --prefix h2 \
  --engines espeak-ng,flite,festival,piper,hibari --workers 2
asr-engine data synth --out data/heldout2 --split heldout --num 1200 --augment-prob 0.3 --seed 7 --prefix h7 --workers 2
asr-engine data synth --out data/v3c --num 7000 --mix configs/synth/mix-text.json --seed 8 --prefix s8 --workers 2
# the bundled model before this session
mkdir -p runs/bundled && git archive c9f7337 asr_engine/models/default | tar -x --strip-components=3 -C runs/bundled
asr-engine train configs/whisper-heads-s13.json
asr-engine package runs/whisper-heads-s13/last runs/s13-pkg --trained-on "$S13_TRAINED_ON"
python docs/experiments/average.py runs/avg13 runs/bundled runs/s13-pkg --labels "stage 12 (the bundled model of commit c9f7337)" \
  "stage 13 (configs/whisper-heads-s13.json)" --trained-on "$AVG13_TRAINED_ON"
H=data/heldout/manifest.jsonl+data/heldout2/manifest.jsonl
for m in bundled s13-pkg avg13; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout2/manifest.jsonl --model runs/$m --backend torch \
    --thresholds 1.0,0.99 --threads 2 --json runs/held_$m.json
done
for m in s13-pkg avg13; do
  python docs/experiments/paired.py --json runs/held_bundled.json runs/held_$m.json $H 1.0
done
# measured after the choice, not used in it
for m in bundled s13-pkg avg13; do
  asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$m --backend torch --thresholds 1.0,0.99 --threads 2
done
