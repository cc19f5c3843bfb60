#!/bin/bash
# The last rule of "Mail in the LM's text" (docs/language-model.md, "Why the second candidate lost streaming"): the
# second candidate (runs/lm-email5000-ship, 5,000 steps) at the fusion the twenty-fifth session's 12-word bar gives
# it (the bundled LM's 0.7 / 2.5 / -8), against the bundled LM, on data/heldout4 (new) in both layouts and
# data/heldout_email in full context; alternated, one sitting; the verdict. Needs email_lm.sh 5000 to have run.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
C=runs/lm-email5000-bar
asr-engine data synth --out data/heldout4 --split heldout --num 1200 --augment-prob 0.3 \
  --mix configs/synth/mix-text.json --seed 17 --prefix h17 --workers 2 -q  # kept as made: synthesis resumes
rm -rf $C && cp -r runs/lm-email5000-ship $C
python docs/experiments/email_lm.py bar runs/grid_email5000_b16.jsonl $C/lm.json
run() {  # set, layout, LM label, LM folder, run
  asr-engine eval data/$1/manifest.jsonl --context $2 --beam 16 --lm $4 --thresholds 0.99 --backend onnx \
    --threads 2 -q --json runs/email_bar_$1_$2_$3_r$5.json
}
for R in 1 2; do
  run heldout4 full bundled default $R
  run heldout4 full email $C $R
  if [ $R = 1 ]; then  # WER has been the same on both runs of every pair so far; once streaming
    run heldout4 streaming bundled default 1
    run heldout4 streaming email $C 1
  fi
  run heldout_email full bundled default $R
  run heldout_email full email $C $R
done
python docs/experiments/email_lm.py runs email_bar --sets heldout4,heldout_email
