#!/bin/bash
# Make a packaged candidate the bundled model: bash docs/experiments/ship_model.sh TAG ["ACCURACY"]
# runs/TAG's weights, tokenizer and config (its provenance in "info"; the bundled model's name kept, and the
# accuracy sentence the server reports, if given) replace asr_engine/models/default's (decoding.json stays), and the
# shipped ONNX exports are written again for them. Then the README's rows: bash docs/experiments/measure_bundled.sh
# TAG. The exports record a digest of config.json too: after any later edit of it (the accuracy sentence, once
# measured), run this again with the sentence, or `asr-engine export asr_engine/models/default --ship`, or the
# package's torch-less install finds no export that matches (tests/test_wheel.py).
set -ex
T=${1:?usage: ship_model.sh TAG [ACCURACY]}; ACCURACY=${2:-}
cd "$(dirname "$0")/../.." && source .venv/bin/activate
D=asr_engine/models/default
cp runs/$T/model.safetensors runs/$T/tokenizer.model $D/
python - "$T" "$ACCURACY" <<'PY'
import json, sys
new = json.load(open(f"runs/{sys.argv[1]}/config.json"))
old = json.load(open("asr_engine/models/default/config.json"))
head = {"name": old["info"]["name"], **({"accuracy": sys.argv[2]} if sys.argv[2] else {})}
new["info"] = {**head, **{k: v for k, v in new["info"].items() if k not in head}}
json.dump(new, open("asr_engine/models/default/config.json", "w"), indent=2)
open("asr_engine/models/default/config.json", "a").write("\n")
PY
asr-engine export $D --ship
