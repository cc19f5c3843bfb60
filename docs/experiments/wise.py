"""Weight-space interpolation toward the imported Whisper weights (WiSE-FT, Wortsman et al. 2022):
  python docs/experiments/wise.py OUT FINE_TUNED BASE ALPHA
OUT gets FINE_TUNED's folder with every encoder tensor that BASE also holds (same name and shape)
replaced by ALPHA * fine-tuned + (1 - ALPHA) * base; the CTC heads (heads.*, final_head.*) and
tensors BASE lacks stay as fine-tuned. BASE: `asr-engine import-whisper` output (Whisper as it
hears real speech). A question this answers: does the top layers' drift from Whisper during
fine-tuning on synthetic speech cost real-speech accuracy?"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def main(out: str, tuned: str, base: str, alpha: float) -> None:
    ft = load_file(str(Path(tuned) / "model.safetensors"))
    b = load_file(str(Path(base) / "model.safetensors"))
    mixed, n = {}, 0
    for k, v in ft.items():
        if k in b and b[k].shape == v.shape and not k.startswith(("heads.", "final_head.")):
            v = (alpha * v.astype(np.float64) + (1 - alpha) * b[k].astype(np.float64)).astype(v.dtype)
            n += 1
        mixed[k] = v
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(mixed, str(dst / "model.safetensors"))
    cfg = json.loads((Path(tuned) / "config.json").read_text())
    cfg["info"] = {**cfg.get("info", {}), "wise": {"fine_tuned": tuned, "base": base, "alpha": alpha,
                                                   "tensors_interpolated": n}}
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in Path(tuned).glob("tokenizer*"):
        shutil.copy(f, dst / f.name)
    print(f"{out}: {n} tensors interpolated at alpha {alpha}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
