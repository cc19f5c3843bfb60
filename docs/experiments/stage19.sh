#!/bin/bash
# Stage 19 as declared in whisper-import.md (twenty-seventh session, 2026-12-05): stage 18's recipe and speech from the
# bundled model (runs/avg18) with a new BPE-1024 tokenizer in place of BPE-256 (the heads' output layers start afresh);
# judged on data/heldout + data/heldout3 against runs/held_avg18.json. Needs the corpora and cache of stage18.sh.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# blocks 1-5 of runs/avg18 are those of runs/avg17 (stage 18 trained only block 6's conv module and the heads), so
# stage 18's cache of their outputs serves: linked, with its source renamed, instead of 25 minutes of recomputing it
CACHE=runs/whisper-bpe1024-s19/frozen_cache
if [ ! -e $CACHE/meta.json ]; then
  mkdir -p $CACHE
  python - <<'PY'
import json, torch
from safetensors.torch import load_file
a, b = load_file("runs/avg17/model.safetensors"), load_file("runs/avg18/model.safetensors")
frozen = [k for k in a if k.startswith(("subsampling.", "feat_")) or k.split(".")[:2] in [["layers", str(i)] for i in range(5)]]
assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
meta = json.load(open("runs/whisper-heads-s18/frozen_cache/meta.json"))
assert meta["source"] == "runs/avg17"
json.dump({**meta, "source": "runs/avg18"}, open("runs/whisper-bpe1024-s19/frozen_cache/meta.json", "w"))
PY
  for F in runs/whisper-heads-s18/frozen_cache/layer*.npy; do ln -s "$PWD/$F" $CACHE/; done
fi
asr-engine train configs/whisper-bpe1024-s19.json
