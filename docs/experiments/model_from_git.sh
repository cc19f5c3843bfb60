#!/bin/bash
# A bundled model of an earlier commit as runs/TAG (unless it is there), and its greedy report on the held-out sets
# as runs/held_TAG.json (unless that is there), for the stage scripts that judge candidates against it:
#   bash docs/experiments/model_from_git.sh TAG COMMIT
set -ex
TAG=${1:?usage: model_from_git.sh TAG COMMIT}; COMMIT=${2:?usage: model_from_git.sh TAG COMMIT}
cd "$(dirname "$0")/../.." && source .venv/bin/activate
[ -s runs/$TAG/model.safetensors ] || { mkdir -p runs/$TAG && git archive $COMMIT asr_engine/models/default \
  | tar -x --strip-components=3 -C runs/$TAG; }
[ -s runs/held_$TAG.json ] || asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl \
  --model runs/$TAG --backend torch --thresholds 1.0,0.99 --threads 2 -q --json runs/held_$TAG.json
