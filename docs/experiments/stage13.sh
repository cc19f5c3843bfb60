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
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s13/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.1f}\")")
S13="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 600 steps from stage 12 on $HOURS h ($UTTS utterances) of synthetic speech (data/mixed's first 1,500 + v3c's first 7,000: WordNet, fortunes, State of the Union and chatterbot text) with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s13/last runs/s13-pkg --trained-on "$S13"
python docs/experiments/average.py runs/avg13 runs/bundled runs/s13-pkg --labels "stage 12 (the bundled model of commit c9f7337)" \
  "stage 13 (configs/whisper-heads-s13.json, 600 steps from stage 12)" --trained-on "the mean of stage 12 and stage 13 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 13: $S13"
HELD=data/heldout/manifest.jsonl+data/heldout2/manifest.jsonl
for m in bundled s13-pkg avg13; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout2/manifest.jsonl --model runs/$m --backend torch \
    --thresholds 1.0,0.99 --threads 2 --json runs/held_$m.json
done
for m in s13-pkg avg13; do
  python docs/experiments/paired.py --json runs/held_bundled.json runs/held_$m.json $HELD 1.0
done
# measured after the choice, not used in it
for m in bundled s13-pkg avg13; do
  asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$m --backend torch --thresholds 1.0,0.99 --threads 2
done
# shipped by the rule (the mean): cp runs/avg13/{model.safetensors,config.json} asr_engine/models/default/
#   && asr-engine export asr_engine/models/default --ship; then beam 8 + the bundled LM on ONNX Runtime:
asr-engine eval ../shared/data/dev_real/manifest.jsonl --backend onnx --thresholds 1.0,0.99 --beam 8 --lm default --threads 2
