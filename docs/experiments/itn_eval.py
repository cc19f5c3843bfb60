"""How well numbers come back as figures (asr_engine.itn) from text read aloud: each sentence of the text sources
that writes a number with a digit is read as the recognizer would give it (asr_engine.text.normalize: "$5.50" ->
"five dollars fifty cents"), written again, and its figures compared with the sentence's own; sentences without a
digit count the figures written where the text spelled its numbers. text2num's alpha2digit alone is the baseline.

    python docs/experiments/itn_eval.py [heldout|all|MANIFEST.jsonl]   # default: heldout (the `data` extra)

heldout: the held-out sentences of the punctuation model's text sources (fortunes, State of the Union, chatterbot);
all: every sentence of them; a manifest: its reference transcripts.
"""

import collections
import json
import re
import sys
import time

from text_to_num import alpha2digit

from asr_engine.itn import numbers_written
from asr_engine.text import normalize

_FIGURE = re.compile(r"[$€]?\d[\d,.:]*(?:st|nd|rd|th|s|%)?|[$€]?\.\d+%?")


def figures(text: str) -> list[str]:
    """The written numbers of a text ("$5.50", "1999", "3:30", "21st", "40%"), trailing punctuation cut off."""
    return [m.group(0).rstrip(".,:") for m in _FIGURE.finditer(text)]


def main(which: str = "heldout") -> None:
    if which in ("heldout", "all"):
        from asr_engine.punct_train import documents

        sents = [s for split in (["heldout"] if which == "heldout" else ["heldout", "train"])
                 for doc in documents(split).values() for s in doc]
    else:
        sents = [json.loads(line)["text"] for line in open(which, encoding="utf-8")]
    rows = {"asr_engine.itn": numbers_written, "alpha2digit": lambda t: alpha2digit(t, "en")}
    stats = {name: collections.Counter() for name in rows}
    shown = []
    seconds = collections.Counter()
    for s in sents:
        gold = figures(s)
        spoken = normalize(s)
        if not spoken:
            continue
        for name, write in rows.items():
            t0 = time.perf_counter()
            out = write(spoken)
            seconds[name] += time.perf_counter() - t0
            hyp = figures(out)
            st = stats[name]
            st["words"] += len(spoken.split())
            if gold:
                left = collections.Counter(hyp)
                hit = sum((collections.Counter(gold) & left).values())
                st["gold"] += len(gold)
                st["hyp_in_numbered"] += len(hyp)
                st["hit"] += hit
                st["sentences"] += 1
                st["exact"] += hyp == gold
                if name == "asr_engine.itn" and hyp != gold and len(shown) < 25:
                    shown.append((s, out))
            else:
                st["spelled_sentences"] += 1
                st["figures_where_spelled"] += len(hyp)
                st["spelled_changed"] += bool(hyp)
    print(f"{len(sents)} sentences; {stats['asr_engine.itn']['sentences']} write a number with a digit")
    print("| writer | figures found (recall) | figures right (precision) | sentences all right | "
          "sentences without a digit given one | ms per 1,000 words |")
    print("|---|---|---|---|---|---|")
    for name, st in stats.items():
        print(f"| {name} | {st['hit'] / max(st['gold'], 1):.1%} ({st['hit']}/{st['gold']}) | "
              f"{st['hit'] / max(st['hyp_in_numbered'], 1):.1%} | {st['exact'] / max(st['sentences'], 1):.1%} | "
              f"{st['spelled_changed'] / max(st['spelled_sentences'], 1):.2%} "
              f"({st['spelled_changed']}/{st['spelled_sentences']}) | "
              f"{seconds[name] * 1e6 / max(st['words'], 1):.2f} |")
    print("\nsome sentences not written back as they were:")
    for s, out in shown:
        print(f"  {s[:110]}\n    -> {out[:110]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
