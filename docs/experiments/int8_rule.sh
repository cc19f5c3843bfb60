#!/bin/bash
# The int8 rule (docs/onnx.md, "int8 with a scale per row"): fp32 and int8 exports of the bundled weights under the
# default decoding (beam 8 + LM, 0.99), in full context and streaming: held-out synthetic speech (data/heldout +
# data/heldout3) for WER, dev_real for WER and RTF (fp32, int8, fp32, int8 in one sitting, nothing else running).
# bash docs/experiments/int8_rule.sh > runs/int8.log 2>&1
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
H="data/heldout/manifest.jsonl data/heldout3/manifest.jsonl"
D=../shared/data/dev_real/manifest.jsonl
E="--beam 8 --lm default --thresholds 0.99 --backend onnx --threads 2 -q"
mkdir -p runs
for C in full streaming; do
  for P in fp32 int8; do
    asr-engine eval $H --context $C --precision $P $E --json runs/int8_held_${C}_${P}.json
  done
  for R in 1 2; do
    for P in fp32 int8; do
      asr-engine eval $D --context $C --precision $P $E --json runs/int8_dev_${C}_${P}_r${R}.json
    done
  done
  (cd docs/experiments && python paired.py --json ../../runs/int8_held_${C}_fp32.json ../../runs/int8_held_${C}_int8.json \
    ../../data/heldout/manifest.jsonl+../../data/heldout3/manifest.jsonl 0.99)
done
python - <<'PY'
import json
for c in ("full", "streaming"):
    held = {p: json.load(open(f"runs/int8_held_{c}_{p}.json"))["settings"][0] for p in ("fp32", "int8")}
    dev = {p: [json.load(open(f"runs/int8_dev_{c}_{p}_r{r}.json"))["settings"][0] for r in (1, 2)]
           for p in ("fp32", "int8")}
    rtf = {p: sum(s["rtf"] for s in runs) / 2 for p, runs in dev.items()}
    for p in ("fp32", "int8"):
        print(f"{c:9} {p}: held-out WER {held[p]['wer']:.2%} (CER {held[p]['cer']:.2%}), dev_real WER "
              f"{dev[p][0]['wer']:.2%} / {dev[p][1]['wer']:.2%}, RTF {dev[p][0]['rtf']:.4f} + {dev[p][1]['rtf']:.4f} "
              f"-> {rtf[p]:.4f}")
    print(f"{c:9} int8 - fp32: held-out {100 * (held['int8']['wer'] - held['fp32']['wer']):+.2f} points, dev_real "
          f"{100 * (dev['int8'][0]['wer'] - dev['fp32'][0]['wer']):+.2f} points; fp32 / int8 RTF "
          f"{rtf['fp32'] / rtf['int8']:.2f}x")
PY
