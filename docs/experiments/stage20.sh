#!/bin/bash
# Stage 20 as declared in whisper-import.md (twenty-seventh session, 2026-12-05): stage 18's recipe again, from the
# bundled model (the mean of stage 18 and its start, runs/avg18), on the same dry speech; candidates stage 20 and its
# mean with the bundled model, judged on data/heldout + data/heldout3 against runs/held_avg18.json. Needs the corpora
# and cache of stage18.sh and runs/avg18 (the bundled model).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# the config's cache_dir is stage 18's cache: runs/avg18's stem and blocks 1-5 are runs/avg17's (stage 18 trained
# only block 6's conv module and the heads), so the cache's fingerprint of the frozen weights matches
asr-engine train configs/whisper-heads-s20.json
bash docs/experiments/package_stage.sh 20 avg18 \
  "the bundled model of commit 8b2c6a2 (the mean of stage 18 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping) from data/mixed, v3w, v3c, v3f and v3n: \
WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's 20,000 most frequent English words, \
spoken by espeak-ng, flite, festival, piper, hibari and Kokoro"
bash docs/experiments/judge.sh avg18 avg20 s20-pkg
