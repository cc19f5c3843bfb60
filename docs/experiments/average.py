"""Average the weights of checkpoint folders of one architecture (a model soup of fine-tunes
from one lineage). Usage:
  python docs/experiments/average.py OUT DIR [DIR ...] [--labels L ...] [--trained-on TEXT]
OUT gets the element-wise mean of the folders' model.safetensors in the first one's dtypes, the
first folder's config.json and tokenizer, and an `info` that names the sources (their labels,
else their paths). With --trained-on, `info` describes the mean as shipped: the sources, the
last folder's training data (train_manifest, utterances, hours) and TEXT as its `trained_on`;
without it, the first folder's `info` with the sources added."""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--labels", nargs="+", help="what to call each source in info.averaged_from")
    p.add_argument("--trained-on", help="info.trained_on of the mean")
    args = p.parse_args(argv)
    srcs = [Path(d) for d in args.dirs]
    if args.labels and len(args.labels) != len(srcs):
        raise SystemExit("give one label per folder")
    tensors = [load_file(str(d / "model.safetensors")) for d in srcs]
    if any(t.keys() != tensors[0].keys() for t in tensors):
        raise SystemExit("the folders' weights have different names")
    mean = {k: (sum(t[k].astype(np.float64) for t in tensors) / len(tensors)).astype(tensors[0][k].dtype)
            for k in tensors[0]}
    dst = Path(args.out)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(dst / "model.safetensors"))
    cfg = json.loads((srcs[0] / "config.json").read_text())
    sources = args.labels or [str(d) for d in srcs]
    if args.trained_on:
        last = json.loads((srcs[-1] / "config.json").read_text()).get("info", {})
        data = {k: last[k] for k in ("train_manifest", "utterances") if k in last}
        if "hours" in last:
            data["hours"] = round(float(last["hours"]), 2)
        cfg["info"] = {"averaged_from": sources, **data, "trained_on": args.trained_on}
    else:
        cfg["info"] = {**cfg.get("info", {}), "averaged_from": sources}
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in srcs[0].glob("tokenizer*"):
        shutil.copy(f, dst / f.name)


if __name__ == "__main__":
    main()
