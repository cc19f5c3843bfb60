#!/bin/bash
# The held-out rule's measurements for candidate models (whisper-import.md, "The shipping rule" and stages 17 on):
#   bash docs/experiments/judge.sh BUNDLED_TAG TAG [TAG ...]
# runs/TAG is a model folder; runs/held_BUNDLED_TAG.json the bundled model's report on the same sets. Greedy WER on
# data/heldout + data/heldout3 off and at 0.99, the sign test of each candidate against the bundled model, WER by
# augmentation; then dev_real, measured after the choice and never used in it.
set -ex
B=${1:?usage: judge.sh BUNDLED_TAG TAG [TAG ...]}; shift
cd "$(dirname "$0")/../.." && source .venv/bin/activate
H=data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl
for M in "$@"; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/$M \
    --backend torch --thresholds 1.0,0.99 --threads 2 -q --json runs/held_$M.json
  for T in 1.0 0.99; do python docs/experiments/paired.py --json runs/held_$B.json runs/held_$M.json $H $T; done
done
(cd docs/experiments && python by_augment.py ../../data/heldout/manifest.jsonl+../../data/heldout3/manifest.jsonl \
  ../../runs/held_$B.json $(for M in "$@"; do echo ../../runs/held_$M.json; done))
for M in "$@"; do
  asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$M --backend torch --thresholds 1.0,0.99 \
    --threads 2 -q --json runs/dev_$M.json
done
