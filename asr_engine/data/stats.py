"""What a synthetic corpus holds: hours per engine and per augmentation, distinct speakers, neural share."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from asr_engine.manifest import read_manifest

NEURAL_ENGINES = ("piper", "hibari", "kokoro")
_ALWAYS = {"vtlp", "pitch", "tempo", "peak"}  # every augmented utterance has these


def _effects(augment: str) -> list[str]:
    """An `augment` description (AugmentPlan.describe) -> its effects: room, reverb, agc, clip, noise, babble,
    bed:<folder>, channel:<codec>."""
    out = []
    for part in filter(None, augment.split(",")):
        key = part.split("=")[0].split("@")[0]
        if key in _ALWAYS:
            continue
        if key == "bed":
            out.append("bed:" + part.split("=")[1].split("/")[0])
        elif key in ("room", "reverb", "agc", "clip", "noise", "babble"):  # reverb: older corpora's decay
            out.append(key)
        else:
            out.append("channel:" + key)
    return out


def corpus_stats(manifests: list[str | Path]) -> dict:
    """Hours (total, per engine, per augmentation effect, per text source), utterances, speakers (distinct
    engine/voice pairs; Kokoro's mixed ones included) and the neural voices' share of the audio."""
    hours, by_engine, by_effect, by_text, speakers, n = 0.0, Counter(), Counter(), Counter(), set(), 0
    for u in (u for manifest in manifests for u in read_manifest(manifest)):
        h = u.duration / 3600
        engine = u.extra.get("engine", "?")
        hours += h
        n += 1
        by_engine[engine] += h
        by_text[u.extra.get("text_source", "wordnet+fortunes")] += h  # rows without one: the default pool
        speakers.add((engine, u.extra.get("voice", "")))
        augment = u.extra.get("augment", "")
        if augment:
            by_effect["augmented"] += h
        for effect in _effects(augment):
            by_effect[effect] += h
    neural = sum(by_engine[e] for e in NEURAL_ENGINES)
    return {"utterances": n, "hours": round(hours, 3), "speakers": len(speakers),
            "speakers_per_engine": dict(sorted(Counter(e for e, _ in speakers).items())),
            "neural_share": round(neural / hours, 4) if hours else 0.0,
            "hours_per_engine": {k: round(v, 3) for k, v in by_engine.most_common()},
            "hours_per_augmentation": {k: round(v, 3) for k, v in by_effect.most_common()},
            "hours_per_text_source": {k: round(v, 3) for k, v in by_text.most_common()}}
