"""WER of `asr-engine eval --json` reports split by the utterances' augmentation: dry (no noise, babble, sound
bed, room or clipping; see dry.py) and wet, and each wet kind. Usage:
  python docs/experiments/by_augment.py MANIFEST[+MANIFEST...] REPORT.json [REPORT.json ...] [--threshold T]
The reports must be of the manifests joined by "+", in that order (as `paired.py --json` reads them)."""

import argparse
import json
from collections import defaultdict

from dry import WET, dry

from asr_engine.text import word_error_counts


def kinds(augment: str) -> list[str]:
    wet = sorted({part.split("=")[0] for part in augment.split(",") if part.split("=")[0] in WET})
    return ["dry"] if dry(augment) else ["wet", *wet]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifests")
    p.add_argument("reports", nargs="+")
    p.add_argument("--threshold", type=float, default=1.0)
    args = p.parse_args(argv)
    utts = [json.loads(line) for m in args.manifests.split("+") for line in open(m)]
    rows = {}
    for report in args.reports:
        setting = next(s for s in json.load(open(report))["settings"] if s["threshold"] == args.threshold)
        hyps = setting["hypotheses"]
        if len(hyps) != len(utts):
            raise SystemExit(f"{report}: {len(hyps)} hypotheses for {len(utts)} utterances")
        errors = defaultdict(lambda: [0, 0, 0])
        for u, h in zip(utts, hyps):
            e, n = word_error_counts(u["text"], h)
            for k in ["all", *kinds(u.get("augment", ""))]:
                errors[k][0] += e
                errors[k][1] += n
                errors[k][2] += 1
        rows[report] = errors
    names = sorted({k for e in rows.values() for k in e}, key=lambda k: (k not in ("all", "dry", "wet"), k))
    print(f"threshold {args.threshold}: WER (utterances)")
    print("report | " + " | ".join(f"{k} ({rows[args.reports[0]][k][2]})" for k in names))
    for report, e in rows.items():
        print(report + " | " + " | ".join(f"{100 * e[k][0] / max(e[k][1], 1):.2f}%" for k in names))


if __name__ == "__main__":
    main()
