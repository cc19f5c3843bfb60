"""How far real speech sits from each synthetic voice family in Whisper's own representation.

    python docs/experiments/feature_distance.py REAL_MANIFEST SYNTH_MANIFEST[+...] [LAYER] [PER_GROUP] [cmn]

Runs the bundled model's frozen stem and blocks 1..LAYER (default 5: what the trained layers and heads read) in full
context, and compares the frame distributions of the real utterances and of each engine's dry utterances (no noise,
babble, bed, room or clipping) by the Fréchet distance of Gaussians fitted to them (as FID does; scipy's sqrtm), and
by a linear probe's accuracy at telling each group from real speech (frames balanced, half of the utterances of each
side for fitting, L2-regularized logistic regression, the other half for scoring). Groups are capped at PER_GROUP
utterances (default 120). Only aggregates of the real set are used: nothing is tuned on it. With `cmn`, each
utterance's mean frame is subtracted first (a per-utterance normalization); the probe is then at chance by
construction (both sides have a zero mean), so only the Fréchet distance says anything.
"""

import json
import sys
from collections import defaultdict

import numpy as np
import torch
from scipy import linalg

from asr_engine.checkpoint import load_checkpoint
from asr_engine.data.loader import load_features
from asr_engine.manifest import Utterance, read_corpus
from asr_engine.model.encoder import Encoder
from asr_engine.model.fbank import Fbank
from asr_engine.model.layers import make_plan
from asr_engine.train import _teacher

WET = ("noise", "babble", "bed", "room", "clip")


def frames(model: Encoder, fs, layer: int) -> list[np.ndarray]:
    out = []
    with torch.no_grad():
        for f in fs.feats:
            x, xl = f.float()[None], torch.tensor([f.shape[0]])
            h, fr, _ = model.embed(x, xl, torch.zeros(1, dtype=torch.long))
            plan = make_plan(model.cfg, fr)
            for blk in model.layers[:layer]:
                h = blk(h, plan)
            out.append(h[0, : fr.n_real].numpy())
    return out


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s = linalg.sqrtm(ca @ cb).real
    return float(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * s))


def probe(real: list[np.ndarray], other: list[np.ndarray]) -> float:
    """Held-out accuracy of a logistic regression (L2, Adam) telling `other`'s frames from real ones (0.5:
    indistinguishable)."""

    def split(u):
        return np.concatenate(u[0::2]), np.concatenate(u[1::2])

    (ra, rb), (oa, ob) = split(real), split(other)
    rng = np.random.default_rng(0)
    n_fit, n_test = min(len(ra), len(oa), 20000), min(len(rb), len(ob), 20000)
    pick = lambda x, n: x[rng.choice(len(x), n, replace=False)]  # noqa: E731
    xf = np.concatenate([pick(ra, n_fit), pick(oa, n_fit)])
    xt = np.concatenate([pick(rb, n_test), pick(ob, n_test)])
    yf, yt = np.r_[np.zeros(n_fit), np.ones(n_fit)], np.r_[np.zeros(n_test), np.ones(n_test)]
    mu, sd = xf.mean(0), xf.std(0) + 1e-6
    xf, xt = (torch.from_numpy((x - mu) / sd).float() for x in (xf, xt))
    w = torch.zeros(xf.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    target = torch.from_numpy(yf).float()
    for _ in range(300):  # full-batch steps: a few seconds for 40,000 frames of 512 dimensions
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xf @ w + b, target) + 1e-3 * (w * w).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((((xt @ w + b) > 0).float().numpy() == yt).mean())


def centred(utts: list[np.ndarray]) -> list[np.ndarray]:
    return [u - u.mean(0, keepdims=True) for u in utts]


def main(real_manifest: str, synth: str, layer: int = 5, per_group: int = 120, cmn: bool = False) -> None:
    ck = load_checkpoint("asr_engine/models/default")
    model = _teacher(ck.model)  # a frozen copy attending over the whole utterance
    fbank = Fbank(ck.features)
    groups: dict[str, list[Utterance]] = defaultdict(list)
    rows = [json.loads(line) for m in synth.split("+") for line in open(m)]
    for u, r in zip((u for m in synth.split("+") for u in read_corpus(m)), rows):
        if not any(w in r.get("augment", "") for w in WET) and len(groups[r["engine"]]) < per_group:
            groups[r["engine"]].append(u)
    norm = centred if cmn else (lambda u: u)
    real = norm(frames(model, load_features(real_manifest, ck.tokenizer, fbank), layer))
    print(f"block {layer} output, full context{', each utterance centred' if cmn else ''}; "
          f"real: {len(real)} utterances, {sum(map(len, real))} frames")
    print("group | utterances | Fréchet distance to real | linear probe accuracy (0.5 = indistinguishable)")
    halves = real[0::2], real[1::2]  # the floor: real speech against itself
    print(f"real, odd against even utterances | {len(halves[1])} | "
          f"{frechet(np.concatenate(halves[0]), np.concatenate(halves[1])):.1f} | "
          f"{probe(halves[0], halves[1]):.3f}", flush=True)
    for name, utts in sorted(groups.items()):
        other = norm(frames(model, load_features(utts, ck.tokenizer, fbank), layer))
        print(f"{name} | {len(other)} | {frechet(np.concatenate(real), np.concatenate(other)):.1f} | "
              f"{probe(real, other):.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5]), cmn="cmn" in sys.argv[5:])
