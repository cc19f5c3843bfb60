"""Write the "dry" part of corpora: the utterances whose augmentation added no noise, babble, sound bed, room
or clipping (the voice may still be perturbed in pitch, tempo and vocal tract, levelled by AGC, or sent through
a codec or the telephone band). Usage:
  python docs/experiments/dry.py NAME MANIFEST [MANIFEST ...] [--first N]
writes NAME beside each manifest (its audio paths are relative to its folder) from its first N lines (all by
default) and prints how many utterances and hours each kept. Why: Whisper-base itself reads held-out synthetic
speech with babble at 91% WER, in rooms at 51% and in noise at 43% (against 19% dry): such utterances teach the
CTC heads little but noise (docs/whisper-import.md, stage 17)."""

import argparse
import json
from pathlib import Path

WET = ("noise", "babble", "bed", "room", "reverb", "clip")


def dry(augment: str) -> bool:
    return not any(part.split("=")[0] in WET for part in augment.split(",") if part)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--first", type=int)
    args = p.parse_args(argv)
    for m in args.manifests:
        lines = open(m).read().splitlines()[: args.first]
        kept = [line for line in lines if dry(json.loads(line).get("augment", ""))]
        (Path(m).parent / args.name).write_text("".join(line + "\n" for line in kept))
        hours = sum(json.loads(line)["duration"] for line in kept) / 3600
        print(f"{m}: {len(kept)} of {len(lines)} kept, {hours:.2f} h")


if __name__ == "__main__":
    main()
