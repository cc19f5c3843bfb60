#!/bin/bash
# Stage 19 as declared in whisper-import.md (twenty-seventh session, 2026-12-05): stage 18's recipe and speech from the
# bundled model (runs/avg18) with a new BPE-1024 tokenizer in place of BPE-256 (the heads' output layers start afresh);
# judged on data/heldout + data/heldout3 against runs/held_avg18.json. Needs the corpora and cache of stage18.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# the config's cache_dir is stage 18's cache: runs/avg18's stem and blocks 1-5 are runs/avg17's (stage 18 trained
# only block 6's conv module and the heads), so the cache's fingerprint of the frozen weights matches
asr-engine train configs/whisper-bpe1024-s19.json
