#!/usr/bin/env bash
# One call on a machine with a CUDA GPU: the whole test suite (in parallel; the GPU tests build their
# tensors on the device), `bench encoder` (skipping on and off per batch size; profiled, streaming
# steps, streaming steps as CUDA graphs, fp16, threshold 0.95), `bench rtf --device cuda`, `bench server
# --device cuda` (streaming capacity, eager and with --cuda-graphs), then `bench kernels` (two shapes)
# and `bench train` (training throughput of three model sizes, skip-aware steps on and off), in that
# order. Every step has its own time limit, cut to end by GPU_CHECK_BUDGET (540 s);
# GPU_CHECK_SKIP="train kernels" (step names) leaves steps out; GPU_CHECK_CLIENTS sets the server's levels.
# It writes JSON lines to $OUT/gpu_check.jsonl ($OUT: the device tool's return folder; /tmp/gpu_check
# otherwise), the steps' outcomes among them, and ends with one table and issue 28's targets, each met, not
# met or not measured (bench/gpu_summary.py; `python -m bench.gpu_summary FILE` reads the file again).
#
# The GPU machine has torch, Triton, ONNX Runtime, onnx, numpy, safetensors, sentencepiece, tqdm,
# pytest (with xdist and timeout) and no network. What it lacks travels as wheels, fetched here once:
#     bash bench/gpu_check.sh --fetch-wheels     # -> .whl/ (ignored by git), about 5 MB
# then the run (device tool): command "bash bench/gpu_check.sh", carry [".whl"].
# The working tree that travels (tracked and untracked-not-ignored files, and the carried .whl) is
# limited to 64 MiB and the tracked files are ~104 MiB. Before the call, take out of the working copy
# what the call does not need: the ONNX exports (the script makes them again there, as `asr-engine
# export --ship` and `asr-engine lm export` do here), docs/ and bench's recorded results and README; the script
# does it and says what will travel (it stops if that is over the limit). Afterwards, put them back:
#     bash bench/gpu_check.sh --slim       # before the call
#     bash bench/gpu_check.sh --restore    # after it
# (`--size` says what would travel, changing nothing.)
# The suite's tests that need what the GPU machine lacks and the wheels do not bring (PyAV, Ray,
# pyroomacoustics, Chromium, espeak-ng, the dev_real recordings) skip or fail there for that reason
# alone; the log names each.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS="soundfile soxr websockets cffi pycparser rapidfuzz jiwer text2num"
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

# what the GPU call does not need, and makes again there where a test needs it
# (the bundled punctuation model cannot be made there: its tests skip, and the bundled model decodes without it;
# the tiny model's tokenizer is the bundled model's, byte for byte, and is copied from it there; the bundled LM's
# weights, 7.3 MiB since it grew to width 512, do not fit beside the bundled model, the tiny one and the wheels:
# the server steps there decode with the recommended beam and no LM, the bundled model's tests decode so too, and
# the tests of the bundled LM itself skip (tests/conftest.py), while the LM's GPU kernels are tested on LMs the
# tests make)
SLIM=(tests/models/tiny/onnx-* asr_engine/models/default/onnx-* asr_engine/models/default-lm/lm.onnx docs
      bench/results.jsonl bench/sweep.png bench/README.md asr_engine/models/default-punct
      tests/models/tiny/tokenizer.model asr_engine/models/default-lm/lm.safetensors
      asr_engine/models/default-lm/lexicon.txt)
LIMIT_MIB=64
travel_mib() {  # MiB the device tool would send once SLIM is out: files git tracks or does not ignore, and .whl
  local spec=() p
  for p in "${SLIM[@]}"; do spec+=(":(exclude)$p"); done
  { git ls-files -z --cached --others --exclude-standard -- . "${spec[@]}" | xargs -0 stat -c %s 2>/dev/null
    [ -d .whl ] && find .whl -type f -exec stat -c %s {} +; } | awk '{s += $1} END {printf "%.1f\n", s / 1048576}'
}
case "${1:-}" in
  --size|--slim)
    mib=$(travel_mib)
    echo "gpu_check: $mib MiB would travel ($([ -d .whl ] && echo "with" || echo "without") .whl), of $LIMIT_MIB MiB"
    awk -v m="$mib" -v l="$LIMIT_MIB" 'BEGIN {exit !(m <= l)}' || { echo "gpu_check: over the limit" >&2; exit 1; }
    [ "$1" = --slim ] && rm -rf "${SLIM[@]}" && echo "gpu_check: left out ${SLIM[*]} (--restore puts them back)"
    exit 0 ;;
  --restore)
    git checkout -- "${SLIM[@]}" && echo "gpu_check: restored ${SLIM[*]}"
    exit $? ;;
esac

OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
RES="$OUT/gpu_check.jsonl"
: > "$RES"
LOG="$OUT/gpu_check.log"
PY=python3
status=0
# the device tool stops a call at 600 s: every step ends by BUDGET, leaving time for the table
BUDGET=${GPU_CHECK_BUDGET:-540}
MIN_STEP=${GPU_CHECK_MIN_STEP:-20}  # a step with less time left is left out
record() {  # record NAME OUTCOME SECONDS: a JSON line for bench/gpu_summary.py
  $PY -c 'import json, sys; print(json.dumps({"bench": "gpu_check", "step": sys.argv[1], "outcome": sys.argv[2],
                                               "seconds": int(sys.argv[3])}))' "$@" >> "$RES"
}
step() {  # step NAME SECONDS CMD...: run with a time limit, log, remember a failure
  local name=$1 limit=$2; shift 2
  for w in ${GPU_CHECK_SKIP:-}; do
    case "$name" in *"$w"*) echo "== $name: left out (GPU_CHECK_SKIP)" | tee -a "$LOG"; record "$name" "left out" 0
                            return 0 ;; esac
  done
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt "$MIN_STEP" ]; then
    echo "== $name: left out, ${left}s of GPU_CHECK_BUDGET=${BUDGET}s left" | tee -a "$LOG"; status=1
    record "$name" "left out (budget)" 0
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 40
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
  record "$name" "$([ "$rc" -eq 0 ] && echo passed || { [ "$rc" -eq 124 ] && echo "timed out" || echo "failed (exit $rc)"; })" \
    $((SECONDS - t0))
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

[ -f tests/models/tiny/tokenizer.model ] || cp asr_engine/models/default/tokenizer.model tests/models/tiny/
# the ONNX exports that were left behind to fit the working-tree limit, made again as here (the
# device tool may leave their folders there, empty: look for the files)
for m in tests/models/tiny asr_engine/models/default; do
  ls "$m"/onnx-*/export.json >/dev/null 2>&1 || step "export $m" 120 $PY -m asr_engine.cli export "$m" --ship
done
LM_ARG=(--lm none)  # the bundled LM's weights stayed home (SLIM) unless they are here
if [ -f asr_engine/models/default-lm/lm.safetensors ]; then
  LM_ARG=()
  [ -f asr_engine/models/default-lm/lm.onnx ] || \
    step "export the bundled LM" 60 $PY -m asr_engine.cli lm export asr_engine/models/default-lm
fi
# the package's metadata (tests read its version), not its code: the working tree stays first on the path
$PY -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site-meta . >/dev/null 2>&1 \
  && export PYTHONPATH="$PYTHONPATH:/tmp/site-meta"
# one thread per test process: 14 processes that each took every core ran the suite 10x slower.
# tests/test_wheel.py installs the wheel's dependencies from the package registry, which the GPU
# machine cannot reach.
step "test suite" 330 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY -m pytest -v -p no:cacheprovider -n 14 \
  --timeout 240 -rfEs --ignore tests/test_wheel.py tests
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
step "bench encoder (streaming steps, profiled)" 60 $PY -m bench encoder --device cuda --context stream \
  --batch 1,16,64 --seconds 8 --profile --results "$RES"
step "bench encoder (streaming steps, CUDA graphs)" 60 $PY -m bench encoder --device cuda --context stream \
  --graphs --batch 1,16,64 --seconds 8 --results "$RES"
step "bench encoder (fp16)" 50 $PY -m bench encoder --device cuda --dtype float16 --batch 16,64 --results "$RES"
step "bench encoder (fp32, threshold 0.95)" 50 $PY -m bench encoder --device cuda --batch 16,64 --threshold 0.95 \
  --results "$RES"
step "bench rtf (cuda)" 80 $PY -m bench rtf --manifest "$MAN" --backend torch --device cuda --reps 3 --results "$RES"
step "bench server (cuda)" 120 $PY -m bench server --manifest "$MAN" --device cuda --backend torch "${LM_ARG[@]}" \
  --clients "${GPU_CHECK_CLIENTS:-16,64,128}" --seconds 8 --results "$RES"
step "bench server (cuda, CUDA graphs)" 120 $PY -m bench server --manifest "$MAN" --device cuda --backend torch \
  "${LM_ARG[@]}" --cuda-graphs --clients "${GPU_CHECK_CLIENTS:-16,64,128}" --seconds 8 --results "$RES"
# last, where a short budget cuts first: the targets these two measure were met on 2026-11-29
step "bench kernels" 50 $PY -m bench kernels --results "$RES"
step "bench kernels (d 512, 64 x 30 s)" 50 $PY -m bench kernels --shape 64x1500x512x257 --results "$RES"
step "bench train" 130 $PY -m bench train --device cuda --results "$RES"

$PY -m bench.gpu_summary "$RES" | tee -a "$LOG"  # the table, then issue 28's targets: met or not
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED, see $LOG)"
exit $status
