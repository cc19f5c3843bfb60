"""Corpora of recorded speech with a script (the voice acting of the games in `fotaq` and `drascula`): which lines
are kept, which speakers are held out, and the files written."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["Recording", "split_groups", "usable", "write_corpus"]


@dataclass(frozen=True)
class Recording:
    name: str  # the audio file's stem in the corpus
    text: str  # the script's words, as written
    speaker: str
    group: str  # what is held out together (a character, with the hero's lines to them)
    load: Callable[[], np.ndarray]  # the audio at the corpus's sample rate
    extra: dict = field(default_factory=dict)


def usable(text: str, words, names: bool = True) -> bool:
    """Whether a line's words are English the recognizer should learn to write: each is in `words` (a lexicon),
    or, with `names`, is a name (capitalised in the script after its first word: "Floda", "Ironstein"). Gibberish
    is not ("Chunga warunga", "Frrblrt, trgn smrrldn."). A script written in capitals (Drascula's) shows no names:
    give names=False."""
    from asr_engine.text import normalize

    norm = normalize(text).split()
    if not norm:
        return False
    named = {normalize(w) for i, w in enumerate(text.split()) if i and w[:1].isupper()} if names else set()
    return all(w in words or w in named for w in norm)


def split_groups(durations: dict[str, float], fraction: float) -> set[str]:
    """The groups held out: taken in the order of their names' MD5 until they hold `fraction` of the audio, so that
    the choice depends on nothing but the names."""
    total, held, out = sum(durations.values()), 0.0, set()
    for g in sorted(durations, key=lambda g: hashlib.md5(g.encode()).hexdigest()):
        if held >= fraction * total:
            break
        out.add(g)
        held += durations[g]
    return out


def write_corpus(recordings: list[Recording], out: str | Path, words, heldout_fraction: float,
                 always_train: frozenset[str] = frozenset(), names: bool = True, train_only: list[Recording] = (),
                 sample_rate: int = 16000) -> dict:
    """Write `out`/audio/NAME.flac (16-bit, `sample_rate`) for every `usable` line and two manifests:
    manifest.jsonl (training) and heldout.jsonl, the groups `split_groups` picks (never those in
    `always_train`: a hero who speaks in every scene). `train_only`: more lines for training, left out of the
    split altogether (it is the same with or without them). `names`: as `usable` takes it. Audio already written is
    reused, so a rerun is cheap. Returns utterances and hours per manifest and the groups held out."""
    from asr_engine.manifest import Utterance, write_manifest
    from asr_engine.text import normalize

    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows, extra = [], []
    for r, only_train in [*((r, False) for r in recordings), *((r, True) for r in train_only)]:
        if not usable(r.text, words, names):
            continue
        audio = out / "audio" / f"{r.name}.flac"
        if audio.is_file():
            duration = sf.info(audio).duration
        else:
            x = r.load()
            tmp = audio.with_suffix(".partial.flac")
            sf.write(tmp, x, sample_rate, subtype="PCM_16")
            tmp.replace(audio)  # a run stopped midway leaves no half-written file to be reused
            duration = len(x) / sample_rate
        u = Utterance(Path("audio", audio.name), normalize(r.text), round(duration, 3),
                      {"speaker": r.speaker, "group": r.group, "script": r.text, **r.extra})
        (extra if only_train else rows).append(u)
    by_group: dict[str, float] = {}
    for u in rows:
        if u.extra["group"] not in always_train:
            by_group[u.extra["group"]] = by_group.get(u.extra["group"], 0.0) + u.duration
    total = sum(u.duration for u in rows)
    held = split_groups(by_group, heldout_fraction * total / max(sum(by_group.values()), 1e-9))
    stats: dict = {}
    for name, part in (("manifest.jsonl", [u for u in rows if u.extra["group"] not in held] + extra),
                       ("heldout.jsonl", [u for u in rows if u.extra["group"] in held])):
        write_manifest(out / name, part)
        stats[name] = {"utterances": len(part), "hours": round(sum(u.duration for u in part) / 3600, 3)}
    stats["heldout_groups"] = sorted(held)
    return stats
