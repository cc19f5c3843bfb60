#!/bin/bash
# Stage 31 as declared in whisper-import.md (forty-eighth session, 2026-12-07): stage 30's speech and start with
# blocks 4-6 learning too (stage 29's recipe); its two candidates judged by judge_real.sh against the bundled model
# of commit df4f616, as stage 30's were. Runnable after stage30.sh on the same machine.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
FROM="the bundled model of commit df4f616 (the mean of stage 24 and its start)"
SPEECH="2.40 h of real speech (data/fotaq: the dialogue of Flight of the Amazon Queen as its actors recorded it, \
the characters BOB, LOU and SHOWERAM held out) and 1.33 h of synthetic speech (data/mixed)"
asr-engine train configs/whisper-blocks-s31.json --resume
RUN=runs/whisper-blocks-s31 CONFIG=configs/whisper-blocks-s31.json \
AVERAGED="blocks 4-6, block 6's conv module and the CTC heads averaged" TRAINED="whisper-base encoder (MIT, OpenAI): \
blocks 1-3 as imported; blocks 4-6 as in stage 12, then trained again with the CTC heads and block 6's conv module 300 \
steps from $FROM at 0.2 of the rate, held near it by an L2-SP anchor, on $SPEECH, half of the steps with the top \
layers compacted" bash docs/experiments/package_stage.sh 31 avg24 "$FROM"
bash docs/experiments/judge_real.sh avg24 s31-pkg avg31
