"""CTC decoding: greedy and prefix beam search, with token and word timestamps and confidences.

A hypothesis records, for each token, the encoder frame where it was emitted and
its posterior there. Words take the time span of their tokens; a word's confidence
is the mean posterior of its tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asr_engine.tokenizer import BLANK_ID, Tokenizer

__all__ = ["Hypothesis", "Word", "greedy_search", "prefix_beam_search", "words_from_hypothesis"]

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]
    frames: tuple[int, ...]  # encoder frame of each token's emission
    probs: tuple[float, ...]  # posterior of each token at its frame
    score: float  # log-probability (for beam search: of the prefix, all alignments)


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float

    def to_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3),
                "confidence": round(self.confidence, 4)}


def greedy_search(log_probs: torch.Tensor) -> Hypothesis:
    """log_probs (T, V) -> best path with repeats collapsed and blanks removed."""
    best_lp, best = log_probs.max(-1)  # (T,), (T,)
    tokens, frames, probs = [], [], []
    prev = BLANK_ID
    for t, (tok, lp) in enumerate(zip(best.tolist(), best_lp.tolist())):
        if tok != BLANK_ID and tok != prev:
            tokens.append(tok)
            frames.append(t)
            probs.append(math.exp(lp))
        elif tok != BLANK_ID and probs:
            probs[-1] = max(probs[-1], math.exp(lp))
        prev = tok
    return Hypothesis(tuple(tokens), tuple(frames), tuple(probs), float(best_lp.sum()))


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class _Beam:
    """Blank- and non-blank-ending log-probs of one prefix, plus the best alignment's trace."""

    __slots__ = ("pb", "pnb", "frames", "probs", "trace_score")

    def __init__(self) -> None:
        self.pb = self.pnb = NEG_INF
        self.frames: tuple[int, ...] = ()
        self.probs: tuple[float, ...] = ()
        self.trace_score = NEG_INF

    @property
    def total(self) -> float:
        return _lse(self.pb, self.pnb)

    def offer_trace(self, score: float, frames: tuple[int, ...], probs: tuple[float, ...]) -> None:
        if score > self.trace_score:
            self.trace_score, self.frames, self.probs = score, frames, probs


def prefix_beam_search(log_probs: torch.Tensor, beam: int = 8, nbest: int = 1,
                       prune_logp: float = -12.0) -> list[Hypothesis]:
    """log_probs (T, V) -> up to `nbest` hypotheses, best first.

    Per frame only the `beam` most likely tokens above `prune_logp` are expanded.
    """
    if beam < 1:
        raise ValueError("beam must be >= 1")
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam()}
    beams[()].pb, beams[()].trace_score = 0.0, 0.0
    k = min(beam, log_probs.shape[-1])
    for t in range(log_probs.shape[0]):
        row = log_probs[t]
        top_lp, top_id = row.topk(k)
        cands = [(c, lp) for c, lp in zip(top_id.tolist(), top_lp.tolist()) if c != BLANK_ID and lp >= prune_logp]
        lp_blank = float(row[BLANK_ID])
        nxt: dict[tuple[int, ...], _Beam] = {}
        for prefix, b in beams.items():
            total = b.total
            stay = nxt.setdefault(prefix, _Beam())
            stay.pb = _lse(stay.pb, total + lp_blank)
            stay.offer_trace(total + lp_blank, b.frames, b.probs)
            for c, lp in cands:
                if prefix and c == prefix[-1]:
                    stay.pnb = _lse(stay.pnb, b.pnb + lp)  # repeat collapses into the same token
                    stay.offer_trace(b.pnb + lp, b.frames, b.probs)
                    from_score = b.pb + lp  # needs a blank in between to start a new token
                else:
                    from_score = total + lp
                if from_score == NEG_INF:
                    continue
                ext = nxt.setdefault(prefix + (c,), _Beam())
                ext.pnb = _lse(ext.pnb, from_score)
                ext.offer_trace(from_score, b.frames + (t,), b.probs + (math.exp(lp),))
        beams = dict(sorted(nxt.items(), key=lambda kv: kv[1].total, reverse=True)[:beam])
    ranked = sorted(beams.items(), key=lambda kv: kv[1].total, reverse=True)[:nbest]
    return [Hypothesis(p, b.frames, b.probs, b.total) for p, b in ranked]


def words_from_hypothesis(hyp: Hypothesis, tokenizer: Tokenizer, frame_shift_s: float) -> list[Word]:
    """Group tokens into words (char: split at the separator; BPE: '▁' starts a word)."""
    groups: list[list[int]] = []
    for i, tok in enumerate(hyp.tokens):
        if tokenizer.is_word_separator(tok):
            groups.append([])
            continue
        if not groups or tokenizer.starts_word(tok):
            groups.append([])
        groups[-1].append(i)
    words = []
    for g in groups:
        if not g:
            continue
        text = tokenizer.decode([hyp.tokens[i] for i in g]).strip()
        if not text:
            continue
        start = hyp.frames[g[0]] * frame_shift_s
        end = (hyp.frames[g[-1]] + 1) * frame_shift_s
        conf = sum(hyp.probs[i] for i in g) / len(g)
        words.append(Word(text, start, end, conf))
    return words
