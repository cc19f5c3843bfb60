#!/bin/bash
# The rule of stages 30 and 31 (whisper-import.md, "Stages 30 and 31"), for candidate models runs/TAG against the
# bundled model runs/BUNDLED_TAG:   bash docs/experiments/judge_real.sh BUNDLED_TAG TAG [TAG ...]
# Greedy, torch, at 0.99: data/fotaq's held-out characters in the streaming layout and the sign test against the
# bundled model (the rule), held-out synthetic speech (the guard); then dev_real in both layouts, measured after the
# choice and never used in it.
set -ex
B=${1:?usage: judge_real.sh BUNDLED_TAG TAG [TAG ...]}; shift
cd "$(dirname "$0")/../.." && source .venv/bin/activate
for M in $B "$@"; do
  [ -s runs/fotaq_$M.json ] || asr-engine eval data/fotaq/heldout.jsonl --model runs/$M --backend torch \
    --thresholds 0.99 --threads 2 -q --json runs/fotaq_$M.json
done
for M in "$@"; do
  python docs/experiments/paired.py --json runs/fotaq_$B.json runs/fotaq_$M.json data/fotaq/heldout.jsonl 0.99
done
for M in "$@"; do
  [ -s runs/held_$M.json ] || asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl \
    --model runs/$M --backend torch --thresholds 0.99 --threads 2 -q --json runs/held_$M.json
  python docs/experiments/paired.py --json runs/held_$B.json runs/held_$M.json \
    data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl 0.99
done
for M in $B "$@"; do  # measured after the choice, never used in it
  for C in streaming full; do
    [ -s runs/dev_${C}_$M.json ] || asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$M \
      --backend torch --context $C --thresholds 0.99 --threads 2 -q --json runs/dev_${C}_$M.json
  done
done
