"""Average the weights of checkpoint folders of one architecture (a model soup of fine-tunes
from one lineage). Usage: python docs/experiments/average.py OUT DIR [DIR ...]
OUT gets the first folder's config.json (its info noting the sources) and tokenizer, and the
element-wise mean of the folders' model.safetensors in the first one's dtypes."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def main(out: str, *dirs: str) -> None:
    srcs = [Path(d) for d in dirs]
    tensors = [load_file(str(d / "model.safetensors")) for d in srcs]
    if any(t.keys() != tensors[0].keys() for t in tensors):
        raise SystemExit("the folders' weights have different names")
    mean = {k: (sum(t[k].astype(np.float64) for t in tensors) / len(tensors)).astype(tensors[0][k].dtype)
            for k in tensors[0]}
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(dst / "model.safetensors"))
    cfg = json.loads((srcs[0] / "config.json").read_text())
    cfg["info"] = {**cfg.get("info", {}), "averaged_from": [str(d) for d in srcs]}
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in srcs[0].glob("tokenizer*"):
        shutil.copy(f, dst / f.name)


if __name__ == "__main__":
    main(*sys.argv[1:])
