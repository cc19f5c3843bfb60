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
# then, in each layout, the candidate with an fp32 step once (the amended rule)
run() {  # layout, LM label, LM folder, LM precision, run
  asr-engine eval $M --context $1 --beam 16 --lm $3 --lm-precision $4 --thresholds 0.99 --backend onnx --threads 2 -q \
    --json runs/lm_$1_$2_$4_r$5.json
}
for X in full streaming; do
  for R in 1 2; do
    run $X bundled default fp32 $R
    run $X bundled default int8 $R
    run $X w512 $C int8 $R
  done
  (cd docs/experiments && python paired.py --json ../../runs/lm_${X}_bundled_int8_r1.json \
    ../../runs/lm_${X}_w512_int8_r1.json ../../$M 0.99)
done
for X in full streaming; do
  run $X w512 $C fp32 1
  (cd docs/experiments && python paired.py --json ../../runs/lm_${X}_bundled_fp32_r1.json \
    ../../runs/lm_${X}_w512_fp32_r1.json ../../$M 0.99)
done
python docs/experiments/wider_lm.py runs
