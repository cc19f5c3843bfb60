#!/bin/bash
# Make a packaged candidate the bundled model: bash docs/experiments/ship_model.sh TAG
# runs/TAG's weights, tokenizer and config (its provenance in "info"; the bundled model's name kept) replace
# asr_engine/models/default's (decoding.json stays), and the shipped ONNX exports are written again for them. Then
# the README's rows: bash docs/experiments/measure_bundled.sh TAG.
set -ex
T=${1:?usage: ship_model.sh TAG}
cd "$(dirname "$0")/../.." && source .venv/bin/activate
D=asr_engine/models/default
cp runs/$T/model.safetensors runs/$T/tokenizer.model $D/
python - "$T" <<'PY'
import json, sys
new = json.load(open(f"runs/{sys.argv[1]}/config.json"))
old = json.load(open("asr_engine/models/default/config.json"))
new["info"] = {"name": old["info"]["name"], **{k: v for k, v in new["info"].items() if k != "name"}}
json.dump(new, open("asr_engine/models/default/config.json", "w"), indent=2)
open("asr_engine/models/default/config.json", "a").write("\n")
PY
asr-engine export $D --ship
