#!/bin/bash
# Stage 19 as declared in whisper-import.md (twenty-seventh session, 2026-12-05): stage 18's recipe and speech from the
# bundled model (runs/avg18) with a new BPE-1024 tokenizer in place of BPE-256 (the heads' output layers start afresh);
# judged on data/heldout + data/heldout3 against runs/held_avg18.json. Needs the corpora and cache of stage18.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# blocks 1-5 of runs/avg18 are those of runs/avg17 (stage 18 trained only block 6's conv module and the heads),
# so stage 18's cache of their outputs serves: linked, its source renamed
python docs/experiments/link_cache.py runs/whisper-heads-s18/frozen_cache runs/avg17 runs/avg18 runs/whisper-bpe1024-s19/frozen_cache
asr-engine train configs/whisper-bpe1024-s19.json
