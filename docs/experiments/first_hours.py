"""Write the first HOURS hours of a manifest, in manifest order, next to it (audio paths stay relative).

    python docs/experiments/first_hours.py data/v3b/manifest.jsonl 10 data/v3b/first10h.jsonl
"""
import json
import sys
from pathlib import Path

src, hours, dst = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
assert src.parent.resolve() == dst.parent.resolve(), "the subset must sit next to its corpus (relative audio paths)"
total, kept = 0.0, []
for line in src.read_text().splitlines():
    if total >= hours * 3600:
        break
    total += json.loads(line)["duration"]
    kept.append(line)
if total < hours * 3600:
    sys.exit(f"{src} holds only {total / 3600:.2f} h")
dst.write_text("\n".join(kept) + "\n")
print(f"{dst}: {len(kept)} utterances, {total / 3600:.3f} h")
