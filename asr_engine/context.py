"""Hotwords (context biasing) for CTC prefix beam search.

The phrases' token sequences form a trie with Aho-Corasick failure links. A beam's
prefix walks the trie token by token and earns `boost` per matched token; when the
walk falls off a partial match, that partial bonus is taken back (the step's delta is
negative), and when a phrase is complete its bonus is kept for good and the walk
restarts at the root. A hypothesis that ends inside a partial match keeps only the
bonus of completed phrases (`final_bonus`).
"""

from __future__ import annotations

from collections import deque

from asr_engine.text import normalize

__all__ = ["ContextGraph", "hotword_graph"]

ROOT = 0


class ContextGraph:
    def __init__(self, phrases: list[list[int]], boost: float = 2.0, words: frozenset[str] = frozenset()):
        if boost < 0:
            raise ValueError(f"hotword boost must be >= 0, got {boost}")
        self.boost = boost
        self.words = words  # the phrases' words (from_phrases), which a lexicon must not charge for
        self.next: list[dict[int, int]] = [{}]
        self.depth = [0]
        self.is_end = [False]
        for tokens in phrases:
            if not tokens:
                continue
            node = ROOT
            for t in tokens:
                if t not in self.next[node]:
                    self.next.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.is_end.append(False)
                    self.next[node][t] = len(self.next) - 1
                node = self.next[node][t]
            self.is_end[node] = True
        self.fail = [ROOT] * len(self.next)
        queue = deque(self.next[ROOT].values())
        while queue:  # breadth first: a node's failure link is the longest proper suffix that is in the trie
            node = queue.popleft()
            for t, child in self.next[node].items():
                f = self.fail[node]
                while f != ROOT and t not in self.next[f]:
                    f = self.fail[f]
                self.fail[child] = self.next[f].get(t, ROOT)
                queue.append(child)

    @classmethod
    def from_phrases(cls, phrases: list[str], tokenizer, boost: float = 2.0) -> "ContextGraph":
        """Phrases as text, tokenized like training transcripts; phrases with no token are refused."""
        seqs = []
        for p in phrases:
            ids = tokenizer.encode(p)
            if not ids:
                raise ValueError(f"hotword {p!r} has no token the model knows")
            seqs.append(ids)
        return cls(seqs, boost, frozenset(w for p in phrases for w in normalize(p).split()))

    def __len__(self) -> int:
        return len(self.next) - 1

    def score(self, state: int) -> float:
        """The partial bonus a prefix holds while inside a match."""
        return self.depth[state] * self.boost

    def step(self, state: int, token: int) -> tuple[int, float]:
        """Walk one token from `state`: (next state, change of bonus)."""
        node = state
        while node != ROOT and token not in self.next[node]:
            node = self.fail[node]
        nxt = self.next[node].get(token, ROOT)
        delta = self.score(nxt) - self.score(state)
        if self.is_end[nxt]:  # a whole phrase: keep its bonus, start looking for the next one
            return ROOT, delta
        return nxt, delta


def hotword_graph(hotwords: tuple[str, ...] | list[str], boost: float, tokenizer, beam: int) -> ContextGraph | None:
    """The graph for a decoder's hotwords, or None without any; greedy search cannot use them."""
    if not hotwords:
        return None
    if beam == 1:
        raise ValueError("hotwords need beam search: set a beam of 4 or more")
    return ContextGraph.from_phrases(list(hotwords), tokenizer, boost)
