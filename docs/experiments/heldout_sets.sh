#!/bin/bash
# The held-out sets every heads stage since the twenty-first session is judged on, made from their seeds (synthesis
# resumes: what exists is kept). heldout3's babble is drawn from data/mixed's first 1,500 utterances, so those come
# first. Also data/heldout/tune.jsonl (its odd lines), on which the LM's fusion weights are chosen.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine data synth --out data/mixed --num 1500 --seed 2 --prefix s2 --workers 2
asr-engine data synth --out data/heldout --split heldout --num 400 --augment-prob 0.3 --seed 5 --prefix h2 \
  --engines espeak-ng,flite,festival,piper,hibari --workers 2
asr-engine data synth --out data/heldout3 --split heldout --num 1200 --augment-prob 0.3 \
  --mix configs/synth/mix-text.json --seed 9 --prefix h9 --workers 2
awk 'NR%2==1' data/heldout/manifest.jsonl > data/heldout/tune.jsonl
