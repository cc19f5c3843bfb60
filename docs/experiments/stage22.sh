#!/bin/bash
# Stage 22 as declared in whisper-import.md (twenty-eighth session, 2026-12-05), runnable on a fresh machine in one
# session (about 1.5 h on 2 cores): the held-out sets made again from their seeds (data/heldout and data/heldout3, as
# stage14.sh makes them), data/v3d (13.1 h of dry speech from piper, hibari and flite, the voice families nearest real
# speech) made again from its seed, the bundled model measured on the held-out sets, then stage 18's recipe from the
# bundled model on data/v3d alone (600 steps); candidates stage 22 and its mean with the bundled model.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# the held-out sets as every stage since the twenty-first session measured them: heldout3's babble is drawn from
# data/mixed's first 1,500 utterances, so those come first (synthesis resumes: what exists is kept)
asr-engine data synth --out data/mixed --num 1500 --seed 2 --prefix s2 --workers 2
asr-engine data synth --out data/heldout --split heldout --num 400 --augment-prob 0.3 --seed 5 --prefix h2 \
  --engines espeak-ng,flite,festival,piper,hibari --workers 2
asr-engine data synth --out data/heldout3 --split heldout --num 1200 --augment-prob 0.3 \
  --mix configs/synth/mix-text.json --seed 9 --prefix h9 --workers 2
awk 'NR%2==1' data/heldout/manifest.jsonl > data/heldout/tune.jsonl
asr-engine data synth --out data/v3d --num 12000 --mix configs/synth/mix-fast-dry.json --seed 28 --prefix d28 --workers 2
BUNDLED_COMMIT=${BUNDLED_COMMIT:-8b2c6a2}  # the model shipped with stage 18 (the mean of stage 18 and its start)
mkdir -p runs/bundled && git archive $BUNDLED_COMMIT asr_engine/models/default | tar -x --strip-components=3 -C runs/bundled
[ -s runs/held_bundled.json ] || asr-engine eval data/heldout/manifest.jsonl data/heldout3/manifest.jsonl \
  --model runs/bundled --backend torch --thresholds 1.0,0.99 --threads 2 -q --json runs/held_bundled.json
asr-engine train configs/whisper-heads-s22.json --resume  # starts afresh, or resumes an interrupted run
read UTTS HOURS < <(python -c "import json;i=json.load(open('runs/whisper-heads-s22/last/config.json'))['info'];print(f\"{i['utterances']:,} {i['hours']:.2f}\")")
BUNDLED="the bundled model of commit $BUNDLED_COMMIT (the mean of stage 18 and its start)"
S22="whisper-base encoder (MIT, OpenAI): blocks 1-3 as imported; blocks 4-6 as in stage 12 (a tenth of the way from the mean of stages 10 and 11 back to Whisper's weights); then block 6's conv module and the CTC heads trained again 600 steps from $BUNDLED on $HOURS h ($UTTS utterances) of dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/v3d: WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, spoken by piper, hibari and flite, with Whisper's weights frozen, half of the steps with the top layers compacted"
asr-engine package runs/whisper-heads-s22/last runs/s22-pkg --trained-on "$S22" --init-from "$BUNDLED"
python docs/experiments/average.py runs/avg22 runs/bundled runs/s22-pkg --labels "$BUNDLED" \
  "stage 22 (configs/whisper-heads-s22.json, 600 steps from it)" --trained-on "the mean of $BUNDLED and stage 22 (block 6's conv module and the CTC heads averaged; the encoder is the same in both). Stage 22: $S22"
bash docs/experiments/judge.sh bundled s22-pkg avg22
