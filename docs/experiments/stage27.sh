#!/bin/bash
# Stage 27 as declared in whisper-import.md (thirty-first session, 2026-12-06): blocks 4-6 taught to read compacted
# sequences by a fixed teacher, the start model's whole pass (skip_teacher_from; no transcripts, no dropout; as stage 26
# with more learning: 3e-4, conv modules and heads too, three steps in four compacted), from the bundled model of commit
# df4f616 on data/v3e, then judged by the rule declared there. Runnable on a fresh machine (the corpus and
# held-out sets are made from their seeds; the block-3 cache is stage 25's); training resumes if stopped.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/v3e --num 15000 --mix configs/synth/mix-fast-dry.json --seed 29 --prefix d29 --workers 2
START_COMMIT=${START_COMMIT:-df4f616}  # the model shipped with stage 24 (the mean of stage 24 and its start)
bash docs/experiments/model_from_git.sh avg24 $START_COMMIT
H="data/heldout/manifest.jsonl data/heldout3/manifest.jsonl"
[ -s runs/held_avg24_low.json ] || asr-engine eval $H --model runs/avg24 --backend torch --thresholds 0.95,0.9 \
  --threads 2 -q --json runs/held_avg24_low.json
asr-engine train configs/whisper-self-s27.json --resume  # starts afresh, or resumes an interrupted run
asr-engine package runs/whisper-self-s27/last runs/s27-pkg --init-from "the bundled model of commit $START_COMMIT" \
  --trained-on "the bundled model of commit $START_COMMIT (the mean of stage 24 and its start), then blocks 4-6 \
(Whisper's attention and feed-forward weights) trained 400 steps to read sequences with the gate's blank frames \
removed (threshold 0.9), with their conv modules and the heads, taught only by the start model's whole pass (no transcripts) \
on the 16.41 h of dry synthetic speech of data/v3e (piper, hibari and flite)"
asr-engine eval $H --model runs/s27-pkg --backend torch --thresholds 1.0,0.99,0.95,0.9 --threads 2 -q \
  --json runs/held_s27-pkg.json
J="data/heldout/manifest.jsonl+data/heldout3/manifest.jsonl"
python docs/experiments/paired.py --json runs/held_avg24.json runs/held_s27-pkg.json $J 1.0
python docs/experiments/paired.py --json runs/held_avg24.json runs/held_s27-pkg.json $J 0.99
asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/s27-pkg --backend torch \
  --thresholds 1.0,0.99,0.95,0.9 --threads 2 -q --json runs/dev_s27-pkg.json
[ -s runs/dev_avg24_low.json ] || asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/avg24 \
  --backend torch --thresholds 0.95,0.9 --threads 2 -q --json runs/dev_avg24_low.json
