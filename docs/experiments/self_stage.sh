#!/bin/bash
# What stages 25-27 of whisper-import.md share: blocks 4-6 of the bundled model of commit df4f616 trained from
# configs/whisper-self-sN.json on data/v3e to read compacted sequences, then judged by the rule declared there
# (held-out at 1.0, 0.99, 0.95, 0.9 and the sign tests against the bundled model; dev_real afterwards).
# bash docs/experiments/self_stage.sh N "TRAINED_ON" (TRAINED_ON: how blocks 4-6 were trained, for the package's
# description). Runnable on a fresh machine (the corpus and held-out sets are made from their seeds); training
# resumes if stopped.
set -ex
N=${1:?usage: self_stage.sh N TRAINED_ON}
HOW=${2:?usage: self_stage.sh N TRAINED_ON}
cd "$(dirname "$0")/../.." && source .venv/bin/activate
bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/v3e --num 15000 --mix configs/synth/mix-fast-dry.json --seed 29 --prefix d29 --workers 2
START_COMMIT=${START_COMMIT:-df4f616}  # the model shipped with stage 24 (the mean of stage 24 and its start)
bash docs/experiments/model_from_git.sh avg24 $START_COMMIT
H="data/heldout/manifest.jsonl data/heldout3/manifest.jsonl"
[ -s runs/held_avg24_low.json ] || asr-engine eval $H --model runs/avg24 --backend torch --thresholds 0.95,0.9 \
  --threads 2 -q --json runs/held_avg24_low.json
asr-engine train configs/whisper-self-s$N.json --resume  # starts afresh, or resumes an interrupted run
asr-engine package runs/whisper-self-s$N/last runs/s$N-pkg --init-from "the bundled model of commit $START_COMMIT" \
  --trained-on "the bundled model of commit $START_COMMIT (the mean of stage 24 and its start), then blocks 4-6 \
(Whisper's attention and feed-forward weights) $HOW on the 16.41 h of dry synthetic speech of data/v3e (piper, \
hibari and flite)"
asr-engine eval $H --model runs/s$N-pkg --backend torch --thresholds 1.0,0.99,0.95,0.9 --threads 2 -q \
  --json runs/held_s$N-pkg.json
J="data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl"
python docs/experiments/paired.py --json runs/held_avg24.json runs/held_s$N-pkg.json $J 1.0
python docs/experiments/paired.py --json runs/held_avg24.json runs/held_s$N-pkg.json $J 0.99
asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/s$N-pkg --backend torch \
  --thresholds 1.0,0.99,0.95,0.9 --threads 2 -q --json runs/dev_s$N-pkg.json
[ -s runs/dev_avg24_low.json ] || asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/avg24 \
  --backend torch --thresholds 0.95,0.9 --threads 2 -q --json runs/dev_avg24_low.json
