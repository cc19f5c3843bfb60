#!/usr/bin/env bash
# Synthesis throughput per engine on this machine's cores: N utterances of each engine alone, with the
# corpus's text and augmentation (configs/synth/mix-text.json), 2 workers; prints utterances/s and hours of
# audio per hour of wall time. Run with nothing else on the CPU.
#   bash docs/experiments/synth_throughput.sh [N]
set -euo pipefail
N=${1:-60}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for engine in espeak-ng flite festival piper hibari kokoro; do
  t0=$(date +%s.%N)
  asr-engine data synth --out "$OUT/$engine" --num "$N" --mix configs/synth/mix-text.json --engines "$engine" \
    --seed 99 --prefix t --workers 2 --quiet
  t1=$(date +%s.%N)
  python - "$OUT/$engine/manifest.jsonl" "$t0" "$t1" "$engine" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
wall = float(sys.argv[3]) - float(sys.argv[2])
audio = sum(r["duration"] for r in rows)
print(f"{sys.argv[4]:10s} {len(rows)} utterances, {audio / 60:.1f} min of audio in {wall:.0f} s: "
      f"{len(rows) / wall:.2f} utterances/s, {audio / wall:.1f} h of audio per hour (2 workers)")
EOF
done
