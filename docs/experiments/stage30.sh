#!/bin/bash
# Stages 30 and 31 as declared in whisper-import.md (forty-eighth session, 2026-12-07): the bundled model's heads
# (stage 30), then blocks 4-6 too (stage 31), trained on real speech (data/fotaq: Flight of the Amazon Queen's voice
# acting, `apt-get install flight-of-the-amazon-queen`) plus data/mixed; four candidates judged on data/fotaq's
# held-out characters (the rule), with held-out synthetic speech as the guard; dev_real measured after.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine data fotaq --out data/fotaq  # reruns reuse the audio written
bash docs/experiments/model_from_git.sh avg24 df4f616
FROM="the bundled model of commit df4f616 (the mean of stage 24 and its start)"
SPEECH="2.40 h of real speech (data/fotaq: the dialogue of Flight of the Amazon Queen as its actors recorded it, \
the characters BOB, LOU and SHOWERAM held out) and 1.33 h of synthetic speech (data/mixed)"
asr-engine train configs/whisper-heads-s30.json --resume
RUN=runs/whisper-heads-s30 CONFIG=configs/whisper-heads-s30.json TRAINED="whisper-base encoder (MIT, OpenAI): \
blocks 1-3 as imported; blocks 4-6 as in stage 12; then block 6's conv module and the CTC heads trained again 600 \
steps from $FROM on $SPEECH, Whisper's weights frozen, the cached block outputs masked, half of the steps with the top \
layers compacted" bash docs/experiments/package_stage.sh 30 avg24 "$FROM"
asr-engine train configs/whisper-blocks-s31.json --resume
RUN=runs/whisper-blocks-s31 CONFIG=configs/whisper-blocks-s31.json \
AVERAGED="blocks 4-6, block 6's conv module and the CTC heads averaged" TRAINED="whisper-base encoder (MIT, OpenAI): \
blocks 1-3 as imported; blocks 4-6 as in stage 12, then trained again with the CTC heads and block 6's conv module 300 \
steps from $FROM at 0.2 of the rate, held near it by an L2-SP anchor, on $SPEECH, half of the steps with the top \
layers compacted" bash docs/experiments/package_stage.sh 31 avg24 "$FROM"
for M in avg24 s30-pkg avg30 s31-pkg avg31; do  # the rule: real speech, then the guard
  asr-engine eval data/fotaq/heldout.jsonl --model runs/$M --backend torch --thresholds 0.99 --threads 2 -q \
    --json runs/fotaq_$M.json
done
for M in s30-pkg avg30 s31-pkg avg31; do
  python docs/experiments/paired.py --json runs/fotaq_avg24.json runs/fotaq_$M.json data/fotaq/heldout.jsonl 0.99
done
for M in s30-pkg avg30 s31-pkg avg31; do
  asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl --model runs/$M --backend torch \
    --thresholds 0.99 --threads 2 -q --json runs/held_$M.json
done
for M in avg24 s30-pkg avg30 s31-pkg avg31; do  # measured after the choice, never used in it
  for C in streaming full; do
    asr-engine eval ../shared/data/dev_real/manifest.jsonl --model runs/$M --backend torch --context $C \
      --thresholds 0.99 --threads 2 -q --json runs/dev_${C}_$M.json
  done
done
