#!/bin/bash
# The thirteenth session (2026-11-29): WiSE-FT candidates of the bundled model (the mean of stages 10
# and 11, runs/avg11) toward the import, and stage 12: stage 10's recipe (block 6's conv module and the
# CTC heads learn above cached blocks 1-5, Whisper's weights frozen) from ALPHA 0.9. Candidates were
# judged by the rule in whisper-import.md ("The shipping rule from the thirteenth session on").
# About 1 h on 2 cores: evaluations 3 x 2.5 min, paired tests 3 x 3 min, cache 20 min, training 25 min.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
mkdir -p runs/avg11 && git archive 7e9f0ef asr_engine/models/default | tar -x --strip-components=3 -C runs/avg11
asr-engine data synth --out data/v3b --num 21000 --mix configs/synth/mix-beds.json --seed 4 --prefix s4 --workers 2
asr-engine import-whisper runs/whisper-import-fresh --chunk-size 32 --left-chunks 4 --skip-layer 3
for a in 0.9 0.8 0.7; do
  python docs/experiments/wise.py runs/w13-$a runs/avg11 runs/whisper-import-fresh $a
  asr-engine eval data/heldout/manifest.jsonl ../shared/data/dev_real/manifest.jsonl --model runs/w13-$a \
    --backend torch --thresholds 1.0,0.99 --threads 2
  (cd docs/experiments && python paired.py ../../runs/avg11 ../../runs/w13-$a ../../data/heldout/manifest.jsonl)
done
asr-engine train configs/whisper-wise-heads-s12.json
asr-engine package runs/whisper-wise-heads-s12/last runs/s12-pkg --trained-on "whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 a tenth of the way from the previous bundled model (the mean of stages 10 and 11) back to Whisper's weights (WiSE-FT, alpha 0.9); then block 6's conv module and the CTC heads trained 600 steps on 20.8 h (22,499 utterances) of synthetic speech (data/mixed's first 1,500 + v3b's first 21,000) with Whisper's weights frozen, half of the steps with the top layers compacted"
for m in s12-pkg; do
  asr-engine eval data/heldout/manifest.jsonl ../shared/data/dev_real/manifest.jsonl --model runs/$m --backend torch \
    --thresholds 1.0,0.99 --threads 2
  (cd docs/experiments && python paired.py ../../runs/avg11 ../../runs/$m ../../data/heldout/manifest.jsonl)
done
# shipped by the rule: cp runs/s12-pkg/{model.safetensors,config.json} asr_engine/models/default/
#   && asr-engine export asr_engine/models/default --ship
