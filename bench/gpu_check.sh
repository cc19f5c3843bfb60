#!/usr/bin/env bash
# One call on a machine with a CUDA GPU: the GPU tests, `bench kernels` (two shapes), `bench encoder`
# (skipping on and off per batch size; profiled, fp16, threshold 0.95), `bench rtf --device cuda` and
# `bench train` (training throughput of three model sizes, skip-aware steps on and off). 2.6 minutes
# on an H200 (2026-11-29); every step has its own time limit, so the whole script ends inside 8 minutes.
# It prints one table at the end and writes JSON lines to $OUT/gpu_check.jsonl ($OUT: the device tool's return folder; /tmp/gpu_check otherwise).
#
# The GPU machine has torch, Triton, ONNX Runtime, numpy, safetensors, sentencepiece, tqdm and
# pytest, and no network. What it lacks travels as wheels, fetched here once (with pip's network):
#     bash bench/gpu_check.sh --fetch-wheels     # -> .whl/ (ignored by git), about 5 MB
# then the run (device tool): command "bash bench/gpu_check.sh", carry [".whl"].
# The working tree that travels is limited to 64 MiB and the tracked files are ~106 MB: before the
# call, take out of the working copy what the GPU steps do not use (the tiny test model's weights and
# exports, the bundled LM), and put it back afterwards:
#     rm -rf tests/models/tiny/onnx-c8 tests/models/tiny/onnx-c64 tests/models/tiny/model.safetensors \
#            asr_engine/models/default-lm/lm.onnx asr_engine/models/default-lm/lm.safetensors
#     git checkout -- tests/models asr_engine/models/default-lm
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS="soundfile soxr websockets cffi pycparser rapidfuzz"
if [ "${1:-}" = "--fetch-wheels" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  for w in $WHEELS; do  # the H200 machine's Python was 3.12.3 (2026-11-29)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl "$w" || exit 1
  done
  ls -la .whl
  exit 0
fi

OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
RES="$OUT/gpu_check.jsonl"
: > "$RES"
LOG="$OUT/gpu_check.log"
PY=python3
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log, remember a failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 40
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU here (this script is for a GPU machine; CI and the CPU tests need none)"
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"

$PY --version | tee -a "$LOG"
if [ -d .whl ]; then  # pip picks the wheels that fit this Python; a failure is reported, not fatal
  $PY -m pip install -q --no-index --no-deps --find-links .whl --no-compile --no-cache-dir --target /tmp/site $WHEELS \
    2>&1 | tail -n 3 | tee -a "$LOG"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# the package itself from the working tree, without touching the machine's torch
export PYTHONPATH="$PWD:$PYTHONPATH"

step "GPU tests" 180 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_scan.py \
  tests/test_fusion.py tests/test_train.py -k "triton or cuda or gpu or device or kernel"
step "bench kernels" 50 $PY -m bench kernels --results "$RES"
step "bench kernels (d 512, 64 x 30 s)" 50 $PY -m bench kernels --shape 64x1500x512x257 --results "$RES"
# offline RTF on the bundled samples, each repeated to fill batches
MAN="$OUT/samples.jsonl"
$PY - "$MAN" <<'EOF'
import json, sys
from pathlib import Path
rows = [json.loads(line) for line in Path("asr_engine/samples/manifest.jsonl").read_text().splitlines()]
with open(sys.argv[1], "w") as f:
    for i in range(32):
        r = dict(rows[i % len(rows)])
        r["audio"] = str((Path("asr_engine/samples") / r["audio"]).resolve())
        f.write(json.dumps(r) + "\n")
EOF
step "bench encoder (fp32, profiled)" 100 $PY -m bench encoder --device cuda --batch 1,16,64 --profile --results "$RES"
step "bench encoder (fp16)" 50 $PY -m bench encoder --device cuda --dtype float16 --batch 16,64 --results "$RES"
step "bench encoder (fp32, threshold 0.95)" 50 $PY -m bench encoder --device cuda --batch 16,64 --threshold 0.95 --results "$RES"
step "bench rtf (cuda)" 80 $PY -m bench rtf --manifest "$MAN" --backend torch --device cuda --reps 3 --results "$RES"
step "bench train" 130 $PY -m bench train --device cuda --results "$RES"

$PY - "$RES" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n| bench | setting | measure |\n|---|---|---|")
for r in rows:
    if r["bench"] == "kernels":
        print(f"| kernels | {r['kernel']} {r['shape']} {r['dtype']} | {r['triton_gbps']:.0f} GB/s "
              f"(reference {r['reference_gbps']:.0f}), {r['speedup']:.2f}x; kernels alone "
              f"{r.get('device_gbps', float('nan')):.0f} GB/s |")
    elif r["bench"] == "encoder":
        print(f"| encoder | {r['dtype']} batch {r['batch']} | {r['ms_off']:.1f} ms off, {r['ms_on']:.1f} ms on "
              f"({r['speedup']:.2f}x, top {r['top_on']:.0%}), {r['x_off']:.0f}x real time off |")
    elif r["bench"] == "train":
        print(f"| train | {r['size']} skip {r['skip']} | {r['x_realtime']:.0f}x real time, {r['ms_per_step']:.0f} ms/step |")
    else:
        keys = [k for k in r if k not in ("machine", "time", "bench")]
        print(f"| {r['bench']} | " + ", ".join(f"{k}={r[k]}" for k in keys[:6]) + " |")
EOF
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED, see $LOG)"
exit $status
