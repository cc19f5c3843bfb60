#!/bin/bash
# The wider LM's rule (docs/language-model.md, "A wider LM"): the fusion grid at beam 16 on the tuning half for
# the bundled LM and the candidate, the candidate's best point written into its lm.json, then both LMs on
# data/heldout3 in both layouts, each run twice, alternated, in one sitting; the paired comparison and the
# real-time factors. The candidate is trained first (the command in the rule). bash docs/experiments/wider_lm.sh
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
C=runs/lm-w512-ship  # the candidate as it would ship (fp16 weights, the bundled lexicon)
M=data/heldout3/manifest.jsonl
GRID="--part decode --manifest data/heldout/tune.jsonl --context full --beam 16 --lm-backend onnx
  --lm-weights 0.55,0.7,0.85 --length-bonuses 1.5,2.0,2.5 --lexicon-penalties=-5,-8,-11 --threads 2"
[ -s runs/grid_bundled_b16.jsonl ] || python -m bench lm $GRID --lm default --results runs/grid_bundled_b16.jsonl
python docs/experiments/wider_lm.py pack runs/lm-w512 $C
[ -s runs/grid_w512_b16.jsonl ] || python -m bench lm $GRID --lm $C --results runs/grid_w512_b16.jsonl
python docs/experiments/wider_lm.py grid runs/grid_bundled_b16.jsonl runs/grid_w512_b16.jsonl --write $C/lm.json
asr-engine lm export $C
# per layout: the bundled LM with an fp32 and an int8 step and the candidate with an int8 step, twice, alternated;
# the candidate with an fp32 step once (the amended rule)
for X in full streaming; do
  for R in 1 2; do
    for L in bundled w512; do
      LM=default; [ $L = w512 ] && LM=$C
      for P in fp32 int8; do
        [ $L = w512 ] && [ $P = fp32 ] && [ $R = 2 ] && continue
        asr-engine eval $M --context $X --lm $LM --lm-precision $P --thresholds 0.99 --backend onnx --threads 2 -q \
          --json runs/lm_${X}_${L}_${P}_r${R}.json
      done
    done
  done
  for P in fp32 int8; do
    (cd docs/experiments && python paired.py --json ../../runs/lm_${X}_bundled_${P}_r1.json \
      ../../runs/lm_${X}_w512_${P}_r1.json ../../$M 0.99)
  done
done
python docs/experiments/wider_lm.py runs
