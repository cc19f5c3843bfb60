#!/bin/bash
# Stage 29 as declared in whisper-import.md (thirty-second session, 2026-12-06): stage 28's speech (data/v3e and
# data/v3r) and start (the bundled model of commit df4f616), with blocks 4-6 learning too (stage 11's recipe: a cache
# of block 3's outputs, Whisper's blocks at 0.2 of the rate, an L2-SP anchor on the start). Its candidates, stage 29
# and the mean of stage 29 and its start, are judged against the bundled model; then the new families' own held-out
# speech. Runnable after stage28.sh on the same machine.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine train configs/whisper-blocks-s29.json --resume  # starts afresh, or resumes an interrupted run
FROM="the bundled model of commit df4f616 (the mean of stage 24 and its start)"
RUN=runs/whisper-blocks-s29 CONFIG=configs/whisper-blocks-s29.json \
AVERAGED="blocks 4-6, block 6's conv module and the CTC heads averaged" \
TRAINED="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way \
from the mean of stages 10 and 11 back to Whisper's weights), then trained again with the CTC heads and block 6's conv \
module 300 steps from $FROM at 0.2 of the rate, held near it by an L2-SP anchor, on 26.42 h (24,000 utterances) of dry \
synthetic speech (data/v3e: piper, hibari and flite; data/v3r: RHVoice, SVOX Pico and MBROLA), half of the steps with \
the top layers compacted" \
  bash docs/experiments/package_stage.sh 29 avg24 "$FROM"
bash docs/experiments/judge.sh avg24 s29-pkg avg29
for M in s29-pkg avg29; do
  asr-engine eval data/heldout_r/manifest.jsonl --model runs/$M --by-source --backend torch --thresholds 1.0 \
    --threads 2 -q --json runs/heldr_$M.json
done
