"""LibriSpeech-layout corpora: ROOT/.../<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
lists `<utterance-id> TEXT` lines, next to `<utterance-id>.flac` files."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from asr_engine.manifest import Utterance

__all__ = ["read_librispeech"]


def read_librispeech(root: str | Path) -> list[Utterance]:
    """Every transcribed utterance under root (any split folders), sorted by id.

    Raises ValueError when there is no transcript, or a transcript line is malformed
    or names an audio file that is missing or unreadable."""
    root = Path(root)
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise ValueError(f"{root}: no *.trans.txt files (not a LibriSpeech-layout folder)")
    out = []
    for trans in transcripts:
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not text.strip():
                raise ValueError(f"{trans}:{n}: expected '<utterance-id> TEXT'")
            audio = trans.parent / f"{uid}.flac"
            try:
                duration = sf.info(audio).duration
            except (sf.LibsndfileError, RuntimeError) as e:
                raise ValueError(f"{trans}:{n}: audio {audio.name} is missing or unreadable ({e})") from e
            speaker, chapter = (uid.split("-") + ["", ""])[:2]
            out.append(Utterance(audio.resolve(), text.strip(), round(duration, 3),
                                 {"source": "librispeech", "speaker": speaker, "chapter": chapter}))
    return sorted(out, key=lambda u: u.audio.name)
