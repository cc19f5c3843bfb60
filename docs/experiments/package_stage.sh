#!/bin/bash
# Packages a stage and averages it with the model it started from (whisper-import.md, stages 20 on):
#   bash docs/experiments/package_stage.sh STAGE START_TAG START_DESCRIPTION SPEECH_DESCRIPTION
# reads runs/whisper-heads-sSTAGE/last (its steps, hours and utterances) and writes runs/sSTAGE-pkg (the stage) and
# runs/avgSTAGE (its mean with runs/START_TAG), each with its provenance in config.json's info. SPEECH_DESCRIPTION
# completes "... on H h (N utterances) of ..."; judge.sh measures the two afterwards.
# A stage that is not a heads stage sets, in the environment: RUN (its run folder), CONFIG (its config), TRAINED (its
# whole provenance, in place of the heads stages' sentence; SPEECH_DESCRIPTION is then left out) and AVERAGED (what
# the mean averages).
set -e
S=${1:?usage: package_stage.sh STAGE START_TAG START_DESCRIPTION SPEECH_DESCRIPTION}; START=${2:?}; FROM=${3:?}
SPEECH=${4:-}  # needed by the heads stages' sentence only (below): a stage that sets TRAINED leaves it out
cd "$(dirname "$0")/../.." && source .venv/bin/activate
RUN=${RUN:-runs/whisper-heads-s$S}
CONFIG=${CONFIG:-configs/whisper-heads-s$S.json}
AVERAGED=${AVERAGED:-"block 6's conv module and the CTC heads averaged; the encoder is the same in both"}
read STEPS UTTS HOURS < <(python -c "
import json; i = json.load(open('$RUN/last/config.json'))['info']; t = json.load(open('$RUN/train_config.json'))
print(t['steps'], f\"{i['utterances']:,}\", f\"{i['hours']:.2f}\")")
TRAINED=${TRAINED:-"whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth \
of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads \
trained again $STEPS steps from $FROM on $HOURS h ($UTTS utterances) of ${SPEECH:?SPEECH_DESCRIPTION}, with \
Whisper's weights frozen, half of the steps with the top layers compacted"}
set -x
asr-engine package $RUN/last runs/s$S-pkg --trained-on "$TRAINED" --init-from "$FROM"
python docs/experiments/average.py runs/avg$S runs/$START runs/s$S-pkg --labels "$FROM" \
  "stage $S ($CONFIG, $STEPS steps from it)" --trained-on "the mean of $FROM and stage $S ($AVERAGED). Stage $S: \
$TRAINED"
