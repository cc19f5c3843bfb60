"""Training text from Debian packages: WordNet example sentences and fortunes.

Sentences are normalised with `asr_engine.text.normalize`, deduplicated, and split
deterministically into train and held-out by a hash of the normalised text, so a
held-out sentence never reaches training whatever the sampling seed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from asr_engine.text import normalize

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """Quoted example sentences from WordNet's data.{noun,verb,adj,adv} glosses."""
    out: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        if not path.exists():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            gloss = line.split("|", 1)[1]
            out += re.findall(r'"([^"]{8,})"', gloss)
    return out


def fortune_sentences(fortunes_dir: Path = FORTUNES_DIR, max_words: int = 30) -> list[str]:
    """Prose sentences from the fortune files (skips verse-like and ascii-art lines)."""
    out: list[str] = []
    if not fortunes_dir.exists():
        return out
    for path in sorted(fortunes_dir.iterdir()):
        if path.suffix or path.name.startswith("."):
            continue  # .dat indexes and .u8 duplicates
        text = path.read_text(encoding="utf-8", errors="ignore")
        for entry in text.split("\n%\n"):
            body = " ".join(entry.split())
            for sent in re.split(r"(?<=[.!?])\s+", body):
                letters = sum(c.isalpha() for c in sent)
                if 3 <= len(sent.split()) <= max_words and letters > 0.7 * len(sent.replace(" ", "")):
                    out.append(sent)
    return out


def is_held_out(normalized: str, held_out_percent: float) -> bool:
    digest = hashlib.sha1(normalized.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10000 < held_out_percent * 100


def load_sentences(held_out_percent: float = 2.0) -> tuple[list[str], list[str]]:
    """(train, held_out) normalised, deduplicated, sorted sentences."""
    seen: set[str] = set()
    for raw in wordnet_examples() + fortune_sentences():
        norm = normalize(raw)
        if 2 <= len(norm.split()) <= 30:
            seen.add(norm)
    train = sorted(s for s in seen if not is_held_out(s, held_out_percent))
    held = sorted(s for s in seen if is_held_out(s, held_out_percent))
    return train, held
