"""An evaluation set in a synthesizer family that no training corpus uses: festival's HTS voice
cmu_us_slt_arctic_hts (an HMM-based statistical parametric voice, Debian's festvox-us-slt-hts)
reading the held-out sentences, clean. `asr-engine data synth` never draws it (its festival
engine lists only the diphone voices), so it stays unseen; it asks how a model does on a kind of
synthetic voice it has not been fitted to, a nearer stand-in for real voices than the held-out
set, whose engines are all in training.

    python docs/experiments/make_hts.py data/heldout/manifest.jsonl data/heldout_hts
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asr_engine.data.synth import SynthJob, synthesize_corpus


def main(src: str, out: str) -> None:
    rows = [json.loads(line) for line in Path(src).read_text().splitlines()]
    jobs = [SynthJob(f"hts{i:07d}", r["text"], "festival", "cmu_us_slt_arctic_hts", 1.0, 50)
            for i, r in enumerate(rows)]
    manifest, failures = synthesize_corpus(jobs, Path(out), workers=1)
    print(f"{manifest}: {len(jobs) - len(failures)} utterances, {len(failures)} failed")
    for f in failures:
        print(" ", f)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
