"""JSONL manifests, one format everywhere: `audio` (relative to the manifest's folder),
`text`, `duration` in seconds; other keys (engine, voice, ...) are carried along."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Utterance", "corpus_name", "read_corpus", "read_manifest", "write_manifest"]


@dataclass(frozen=True)
class Utterance:
    audio: Path  # absolute (resolved against the manifest's folder)
    text: str
    duration: float
    extra: dict = field(default_factory=dict)


def is_evaluation_data(path: str | Path) -> bool:
    """Whether a path lies in the shared evaluation sets (../shared/data), or is where they come from
    (Asterisk's prompt recordings, `asterisk-core-sounds-*`: dev_real's speaker and texts): never
    trained, tuned or calibrated on."""
    p = Path(path).resolve().as_posix()
    return "shared/data" in p or "asterisk/sounds" in p


def read_manifest(path: str | Path) -> list[Utterance]:
    path = Path(path)
    root = path.parent
    out = []
    with open(path, encoding="utf-8") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError:  # an audio file given for its manifest, most often
            raise ValueError(f"{path}: not a manifest (UTF-8 JSON lines with audio, text, duration)") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio, text, duration = row.pop("audio"), row.pop("text"), float(row.pop("duration"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}:{n}: not a manifest row with audio, text, duration ({e})") from e
        out.append(Utterance(root / audio, text, duration, row))
    return out


def write_manifest(path: str | Path, utterances: list[Utterance]) -> None:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for u in utterances:
            try:
                audio = u.audio.relative_to(path.parent.resolve()) if u.audio.is_absolute() else u.audio
            except ValueError:
                audio = u.audio
            f.write(json.dumps({"audio": str(audio), "text": u.text, "duration": u.duration, **u.extra}) + "\n")


def read_corpus(path: str | Path) -> list[Utterance]:
    """A JSONL manifest, or a folder in the LibriSpeech layout."""
    if not Path(path).exists():
        raise ValueError(f"{path}: no such manifest or folder")
    if Path(path).is_dir():
        from asr_engine.data.librispeech import read_librispeech

        return read_librispeech(path)
    return read_manifest(path)


def corpus_name(path: str | Path) -> str:
    """A short name for a corpus: the folder's name (LibriSpeech), the folder of a manifest named
    manifest.jsonl, or another manifest's file name without its suffix (two manifests side by side
    in one folder are two corpora)."""
    path = Path(path)
    if path.is_dir():
        return path.name
    return path.parent.name if path.name == "manifest.jsonl" else path.stem
