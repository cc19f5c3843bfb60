"""Reuse a frozen-layer cache for another init_from whose frozen layers are the same tensors.

    python docs/experiments/link_cache.py CACHE OLD_CKPT NEW_CKPT DEST [K]

A cache (asr_engine.frozen_cache) is keyed by the init_from path it was built from. A heads-only stage changes
nothing below its frozen layers, so its successor's cache would be the same rows: this checks that the stem and
layers 1..K (default 5) of NEW_CKPT equal OLD_CKPT's, then links CACHE's arrays into DEST with a meta.json naming
NEW_CKPT as the source (instead of recomputing them: 25 minutes for 25 h of speech on 2 threads).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def main(cache: str, old: str, new: str, dest: str, k: int = 5) -> None:
    a, b = (load_file(str(Path(p) / "model.safetensors")) for p in (old, new))
    below = tuple(f"layers.{i}." for i in range(k))
    frozen = [n for n in a if n.startswith(("subsampling.", "feat_", *below))]
    different = [n for n in frozen if not torch.equal(a[n], b[n])]
    if not frozen or different:
        sys.exit(f"{new}'s frozen layers differ from {old}'s: {different or 'none found'}")
    meta = json.loads((Path(cache) / "meta.json").read_text())
    if meta["source"] != old or meta["k"] != k:
        sys.exit(f"{cache} was built from {meta['source']} with k = {meta['k']}, not {old} with k = {k}")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(cache).glob("layer*.npy"):
        (out / f.name).unlink(missing_ok=True)
        (out / f.name).symlink_to(f.resolve())
    (out / "meta.json").write_text(json.dumps({**meta, "source": new}))


if __name__ == "__main__":
    main(*sys.argv[1:5], *map(int, sys.argv[5:6]))
