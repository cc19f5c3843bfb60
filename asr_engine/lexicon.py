"""Known words for CTC prefix beam search: a penalty for spelling that is not a word.

A CTC model with a small subword vocabulary spells words out, and what it has not heard often
it misspells: 60% of the bundled model's wrong words on real speech are not words at all
(greedy; 30% with beam search and the LM, whose subword context does not rule them out).
With a lexicon, each prefix of the beam carries its current (partial) word; when that stops
being the start of any known word, or a word ends that is not a known word, the prefix pays
`penalty` (a log-score <= 0) once for that word. A word the lexicon lacks can still win when
the acoustics are sure of it; the penalty only moves ties toward real words.

This is pyctcdecode's `unk_score_offset` (a partial word that no known word starts with pays
it); we do not use pyctcdecode itself because our search fuses our own LM in batched steps
across streams and carries its state across chunks, which its decoder does not.

The word list is plain text, one normalised word per line (`asr-engine lm lexicon` writes one);
prefix tests are a binary search of the sorted list (no trie to build: a 100,000-word list
loads in about 0.1 s and each test costs about 17 string comparisons).
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from asr_engine.text import normalize

__all__ = ["Lexicon", "LexState", "build_words", "read_words"]

LexState = tuple[str, bool]  # (the current word so far, whether it has paid the penalty)
START: LexState = ("", False)
_NORMAL = re.compile(r"[a-z]+(?:'[a-z]+)*")


def read_words(path: str | Path) -> list[str]:
    """The words of a lexicon file (one per line, normalised; blank lines and duplicates dropped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: lexicon file not found")
    words = set()
    for line in p.read_text(encoding="utf-8").splitlines():
        w = line.strip()
        if not _NORMAL.fullmatch(w):  # `lm lexicon` writes normalised words: only others need normalize (slow)
            w = normalize(w)
        if w and " " not in w:
            words.add(w)
    if not words:
        raise ValueError(f"{p}: no words in the lexicon")
    return sorted(words)


def build_words(sentences: list[str], wordfreq_top: int = 0) -> list[str]:
    """The words of `sentences` (normalised), plus the `wordfreq_top` most frequent English words of the
    wordfreq package (its data: CC-BY-SA 4.0, from subtitles, books, the web and more; the `data`
    extra), the words a lexicon should know beyond the LM's own text."""
    words = {w for s in sentences for w in normalize(s).split()}
    if wordfreq_top > 0:
        try:
            import wordfreq
        except ImportError as e:
            raise ValueError("--wordfreq needs the wordfreq package (pip install 'asr-engine[data]')") from e
        for w in wordfreq.top_n_list("en", wordfreq_top):
            n = normalize(w)
            if n and " " not in n and n.replace("'", "").isalpha() and n.isascii():
                words.add(n)
    return sorted(words)


class _Union:
    """Membership in two sets without building their union (a 100,000-word set per search would cost)."""

    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __contains__(self, w) -> bool:
        return w in self.a or w in self.b


class Lexicon:
    def __init__(self, words: list[str], tokenizer, penalty: float = -4.0):
        if not penalty <= 0:
            raise ValueError(f"lexicon penalty must be <= 0 (a log-score), got {penalty}")
        self.words = sorted(set(words))
        if not self.words:
            raise ValueError("a lexicon needs at least one word")
        self.known = set(self.words)
        self.extra: tuple[str, ...] = ()  # words added by with_words
        self.penalty = float(penalty)
        vocab = tokenizer.vocab
        # per token: (starts a new word, its letters); the separator starts a word with no letters
        self.tokens = [(tokenizer.is_word_separator(t) or tokenizer.starts_word(t),
                        "" if tokenizer.is_word_separator(t) else vocab[t].replace("▁", ""))
                       for t in range(len(vocab))]

    def with_words(self, extra) -> "Lexicon":
        """This lexicon knowing `extra` words too (a search's hotwords: a lexicon must not charge for
        the words a user asked to favour), without copying or sorting the main list again."""
        extra = frozenset(w for w in extra if w not in self.known)
        if not extra:
            return self
        out = object.__new__(Lexicon)
        out.__dict__.update(self.__dict__)
        out.known = _Union(self.known, extra)
        out.extra = tuple(sorted({*self.extra, *extra}))
        return out

    @classmethod
    def from_file(cls, path: str | Path, tokenizer, penalty: float = -4.0) -> "Lexicon":
        return cls(read_words(path), tokenizer, penalty)

    def __len__(self) -> int:
        return len(self.words)

    def is_prefix(self, partial: str) -> bool:
        i = bisect.bisect_left(self.words, partial)
        if i < len(self.words) and self.words[i].startswith(partial):
            return True
        return any(w.startswith(partial) for w in self.extra)

    def _closing(self, state: LexState) -> float:
        word, paid = state
        return self.penalty if word and not paid and word not in self.known else 0.0

    def step(self, state: LexState, token: int) -> tuple[LexState, float]:
        """The state after `token` and the score it adds (0 or the penalty; at most one per word)."""
        new_word, letters = self.tokens[token]
        delta = 0.0
        if new_word:
            delta, word, paid = self._closing(state), letters, False
        else:
            word, paid = state[0] + letters, state[1]
        if word and not paid and not self.is_prefix(word):
            delta, paid = delta + self.penalty, True
        return (word, paid), delta

    def final(self, state: LexState) -> float:
        """What a hypothesis ending in `state` still owes: its last word, if that is not a word."""
        return self._closing(state)
