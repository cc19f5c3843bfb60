#!/bin/bash
# Stage 30 as declared in whisper-import.md (forty-eighth session, 2026-12-07): the bundled model's heads trained on
# real speech (data/fotaq: Flight of the Amazon Queen's voice acting, `apt-get install flight-of-the-amazon-queen`)
# plus data/mixed; its two candidates (stage 30 and its mean with the bundled model) judged on data/fotaq's held-out
# characters (the rule), with held-out synthetic speech as the guard; dev_real measured after. Stage 31 (blocks 4-6
# too) is stage31.sh, judged in a later sitting (the amendment in whisper-import.md).
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
bash docs/experiments/judge_real.sh avg24 s30-pkg avg30
