"""CTC decoding: greedy and prefix beam search, with token and word timestamps and confidences.

A hypothesis records, for each token, the encoder frame where it was emitted and
its posterior there. Words take the time span of their tokens; a word's confidence
is the mean posterior of its tokens.

With a language model (`lm.fusion.ShallowFusion`), prefix beam search ranks prefixes by their CTC
log-probability plus the weighted LM log-probability and a length bonus. Each frame's new prefixes
get their LM state and next-token distribution from one batched LM step, taken together for all
the searches that `advance_searches` drives (one per stream), after that frame's pruning.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from asr_engine.context import ROOT, ContextGraph
from asr_engine.lexicon import START, Lexicon, LexState
from asr_engine.tokenizer import BLANK_ID, Tokenizer

if TYPE_CHECKING:
    from asr_engine.lm.fusion import ShallowFusion

__all__ = ["GreedySearch", "Hypothesis", "PrefixBeamSearch", "Word", "advance_searches", "check_beam",
           "greedy_search", "prefix_beam_search", "words_from_hypothesis"]

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]
    frames: tuple[int, ...]  # encoder frame of each token's emission
    probs: tuple[float, ...]  # posterior of each token at its frame
    score: float  # log-probability (beam search: of the prefix, all alignments, plus any hotword and LM score)


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float

    def to_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3),
                "confidence": round(self.confidence, 4)}


def check_beam(beam: int, nbest: int) -> None:
    if beam < 1 or not 1 <= nbest <= beam:
        raise ValueError("need beam >= 1 and 1 <= nbest <= beam")


def greedy_search(log_probs: np.ndarray) -> Hypothesis:
    """log_probs (T, V) -> best path with repeats collapsed and blanks removed."""
    search = GreedySearch()
    search.advance(log_probs)
    return search.hypotheses()[0]


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class _Beam:
    """Blank- and non-blank-ending log-probs of one prefix, plus the best alignment's trace, and
    what is a function of the prefix alone: its hotword state and bonus, and with an LM its fused
    LM score, its LM state (row `lm_row` of the search's state tensor) and next-token log-probs
    (None while its LM step is pending: then `lm_row` is the parent's row and `lm_token` the token),
    and with a lexicon its current word's state and the penalties paid so far (`bonus` holds them
    too: it is everything added to the prefix's score besides the CTC and LM scores)."""

    __slots__ = ("pb", "pnb", "frames", "probs", "trace_score", "ctx", "bonus", "lm", "lm_next", "lm_row",
                 "lm_token", "lex")

    def __init__(self, ctx: int = ROOT, bonus: float = 0.0, lm: float = 0.0, lm_next: list[float] | None = None,
                 lm_row: int = 0, lm_token: int = -1, lex: LexState = START) -> None:
        self.pb = self.pnb = NEG_INF
        self.frames: tuple[int, ...] = ()
        self.probs: tuple[float, ...] = ()
        self.trace_score = NEG_INF
        self.ctx, self.bonus, self.lex = ctx, bonus, lex
        self.lm, self.lm_next, self.lm_row, self.lm_token = lm, lm_next, lm_row, lm_token

    def carry(self) -> "_Beam":
        """A fresh entry for the same prefix in the next frame."""
        return _Beam(self.ctx, self.bonus, self.lm, self.lm_next, self.lm_row, self.lm_token, self.lex)

    @property
    def total(self) -> float:
        return _lse(self.pb, self.pnb)

    def offer_trace(self, score: float, frames: tuple[int, ...], probs: tuple[float, ...]) -> None:
        if score > self.trace_score:
            self.trace_score, self.frames, self.probs = score, frames, probs


class PrefixBeamSearch:
    """CTC prefix beam search that can be fed a stream of log-prob chunks.

    Per frame only the `beam` most likely tokens above `prune_logp` are expanded.
    Frames are numbered from 0 across all the chunks fed so far. With a `context`
    graph, prefixes are ranked by log-probability plus their hotword bonus; with an
    `lm`, plus their fused LM score (the LM state is carried across chunks, so a
    stream decodes the same however it is cut); with a `lexicon` (by default the LM's,
    if it has one), plus the penalties of their words that are not known words.
    """

    def __init__(self, beam: int = 8, prune_logp: float = -12.0, context: ContextGraph | None = None,
                 lm: "ShallowFusion | None" = None, lexicon: Lexicon | None = None):
        if beam < 1:
            raise ValueError("beam must be >= 1")
        self.beam, self.prune_logp, self.context, self.lm = beam, prune_logp, context, lm
        self.lexicon = lexicon if lexicon is not None else getattr(lm, "lexicon", None)  # the LM's own, if any
        if self.lexicon is not None and context is not None:
            self.lexicon = self.lexicon.with_words(context.words)  # hotwords are words, whatever the list says
        root = _Beam()
        root.pb, root.trace_score = 0.0, 0.0
        if lm is not None:
            self.lm_state = lm.initial_state  # (L, rows, d): the LM states of the live prefixes
            root.lm_next = lm.initial_next
        self.beams: dict[tuple[int, ...], _Beam] = {(): root}
        self.frame = 0
        self.prune = True  # False: every new prefix is built and scored before the beam is cut (`_floor`)

    def advance(self, log_probs: np.ndarray) -> None:
        """log_probs (T, V): the next T frames."""
        advance_searches([self], [log_probs])

    def _candidates(self, log_probs: np.ndarray) -> list[tuple[list[tuple[int, float]], float]]:
        """Per frame: the tokens worth expanding (token, log-prob) and the blank's log-prob."""
        log_probs = np.asarray(log_probs, np.float32)
        k = min(self.beam, log_probs.shape[-1])
        top_id = np.argsort(-log_probs, axis=-1, kind="stable")[:, :k]  # the k best, best first
        top_lp = np.take_along_axis(log_probs, top_id, -1)
        blank = log_probs[:, BLANK_ID].tolist()
        return [([(c, lp) for c, lp in zip(row_id, row_lp) if c != BLANK_ID and lp >= self.prune_logp], lp_blank)
                for row_id, row_lp, lp_blank in zip(top_id.tolist(), top_lp.tolist(), blank)]

    def _frame(self, cands: list[tuple[int, float]], lp_blank: float) -> None:
        self.beams = self._step(self.frame, cands, lp_blank)
        self.frame += 1

    def _lm_pending(self) -> list[_Beam]:
        return [b for b in self.beams.values() if b.lm_next is None]

    def _lm_commit(self, pending: list[_Beam], logp: list[list[float]], state) -> None:
        """The LM step's results for the pending prefixes: keep only the live prefixes' states, in beam order.
        States are (L, rows, d) numpy arrays (ONNX step) or torch tensors (torch step)."""
        rows = self.lm_state.shape[1]
        for j, b in enumerate(pending):
            b.lm_next, b.lm_row, b.lm_token = logp[j], rows + j, -1
        live = list(self.beams.values())
        self.lm_state = _cat([self.lm_state, state], 1)[:, [b.lm_row for b in live]]
        for i, b in enumerate(live):
            b.lm_row = i

    def _floor(self, lp_blank: float) -> float:
        """A score that at least `beam` prefixes of the next frame reach: every live prefix keeps at least its
        score through the blank, so the beam-th best of those. A new prefix whose score cannot reach it would be
        pruned at the frame's end, and `_step` never builds it (the same beams, in the same order: it only saves
        the work, most of a frame's where the blank is sure)."""
        if not self.prune or len(self.beams) < self.beam:
            return NEG_INF
        # less a margin far above the rounding of the sums that bound a new prefix (which add in another order)
        return heapq.nlargest(self.beam, [b.total + lp_blank + b.bonus + b.lm for b in self.beams.values()])[-1] - 1e-6

    def _step(self, t: int, cands: list[tuple[int, float]], lp_blank: float) -> dict[tuple[int, ...], _Beam]:
        nxt: dict[tuple[int, ...], _Beam] = {}
        floor = self._floor(lp_blank) if cands else NEG_INF
        lm = self.lm
        # the most a token can add to a prefix's bonus: a hotword's boost (a lexicon only ever takes away); and
        # to its LM score: the length bonus (the LM's log-probability is never above 0)
        gain = (max(0.0, self.context.boost) if self.context is not None else 0.0) + (
            lm.length_bonus if lm is not None else 0.0)
        kids: dict[tuple[int, ...], set[int]] = {}  # the tokens that lead from a live prefix to another
        for p in self.beams:
            if p:
                kids.setdefault(p[:-1], set()).add(p[-1])
        for prefix, b in self.beams.items():
            total = b.total
            stay = nxt.get(prefix) or nxt.setdefault(prefix, b.carry())
            stay.pb = _lse(stay.pb, total + lp_blank)
            stay.offer_trace(total + lp_blank, b.frames, b.probs)
            last = prefix[-1] if prefix else -1
            known = kids.get(prefix, ())
            # a new prefix of this one scores at most from_score + reach (+ its LM log-probability, <= 0)
            reach = b.bonus + b.lm + gain
            cut = False  # once a token cannot reach the floor, no later one can (the candidates come best first)
            for c, lp in cands:
                if c == last:
                    stay.pnb = _lse(stay.pnb, b.pnb + lp)  # repeat collapses into the same token
                    stay.offer_trace(b.pnb + lp, b.frames, b.probs)
                    from_score = b.pb + lp  # needs a blank in between to start a new token
                else:
                    from_score = total + lp
                if from_score == NEG_INF:
                    continue
                if (cut or from_score + reach < floor) and c not in known:
                    cut = cut or c != last  # (a repeat's score is not its token's rank)
                    continue  # a new prefix that cannot reach the beam (see _floor)
                if lm is not None and floor != NEG_INF and c not in known \
                        and from_score + reach + lm.weight * b.lm_next[c] < floor:
                    continue
                key = prefix + (c,)
                ext = nxt.get(key) or nxt.setdefault(key, self._extend(b, c, key))
                ext.pnb = _lse(ext.pnb, from_score)
                ext.offer_trace(from_score, b.frames + (t,), b.probs + (math.exp(lp),))
        return dict(sorted(nxt.items(), key=lambda kv: kv[1].total + kv[1].bonus + kv[1].lm,
                           reverse=True)[: self.beam])

    def _extend(self, b: _Beam, token: int, key: tuple[int, ...]) -> _Beam:
        known = self.beams.get(key)
        if known is not None:  # the prefix is live already: same hotword state, same LM state
            return known.carry()
        ctx, bonus, lex = b.ctx, b.bonus, b.lex
        if self.context is not None:
            ctx, delta = self.context.step(b.ctx, token)
            bonus += delta
        if self.lexicon is not None:
            lex, delta = self.lexicon.step(b.lex, token)
            bonus += delta
        if self.lm is None:
            return _Beam(ctx, bonus, lex=lex)
        lm = b.lm + self.lm.weight * b.lm_next[token] + self.lm.length_bonus
        return _Beam(ctx, bonus, lm, None, b.lm_row, token, lex)

    def _final_score(self, b: _Beam) -> float:
        """Log-probability plus the bonus of completed hotwords only (a partial match earns nothing),
        plus with an LM the fused LM score and the end of the sentence, plus with a lexicon its
        penalties (the last word's too, if it is not a known word)."""
        score = b.total + b.bonus
        if self.context is not None:
            score -= self.context.score(b.ctx)
        if self.lexicon is not None:
            score += self.lexicon.final(b.lex)
        if self.lm is not None:
            score += b.lm + self.lm.weight * b.lm_next[BLANK_ID]  # the LM's sentence end is the blank id
        return score

    def hypotheses(self, nbest: int = 1) -> list[Hypothesis]:
        """Up to `nbest` hypotheses so far, best first."""
        ranked = sorted(((self._final_score(b), p, b) for p, b in self.beams.items()), key=lambda x: x[0],
                        reverse=True)[:nbest]
        return [Hypothesis(p, b.frames, b.probs, score) for score, p, b in ranked]

    def stable_length(self) -> int:
        """Tokens every live beam agrees on: they cannot change any more."""
        prefixes = list(self.beams)
        n = min(len(p) for p in prefixes)
        for i in range(n):
            if any(p[i] != prefixes[0][i] for p in prefixes):
                return i
        return n


class GreedySearch:
    """Best-path decoding fed a stream of log-prob chunks (identical to greedy_search on their concatenation)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.frames: list[int] = []
        self.probs: list[float] = []
        self.prev = BLANK_ID
        self.score = 0.0
        self.frame = 0

    def advance(self, log_probs: np.ndarray) -> None:
        log_probs = np.asarray(log_probs, np.float32)
        best = log_probs.argmax(-1)  # (T,)
        best_lp = np.take_along_axis(log_probs, best[:, None], -1)[:, 0]
        for tok, lp in zip(best.tolist(), best_lp.tolist()):
            if tok != BLANK_ID and tok != self.prev:
                self.tokens.append(tok)
                self.frames.append(self.frame)
                self.probs.append(math.exp(lp))
            elif tok != BLANK_ID and self.probs:
                self.probs[-1] = max(self.probs[-1], math.exp(lp))
            self.prev = tok
            self.score += lp
            self.frame += 1

    def hypotheses(self, nbest: int = 1) -> list[Hypothesis]:
        return [Hypothesis(tuple(self.tokens), tuple(self.frames), tuple(self.probs), self.score)]

    def stable_length(self) -> int:
        return len(self.tokens)


def advance_searches(searches: list["PrefixBeamSearch | GreedySearch"], chunks: list[np.ndarray]) -> None:
    """Advance each search by its chunk of log-probs (T_i, V). Searches with an LM go frame by frame
    in lockstep, so that each frame's new prefixes of all of them take one batched LM step (per LM);
    the result is the same as advancing each alone."""
    fused: list[tuple[PrefixBeamSearch, list]] = []
    for s, lp in zip(searches, chunks):
        if isinstance(s, PrefixBeamSearch) and s.lm is not None:
            fused.append((s, s._candidates(lp)))
        elif isinstance(s, PrefixBeamSearch):
            for cands, lp_blank in s._candidates(lp):
                s._frame(cands, lp_blank)
        else:
            s.advance(lp)
    for t in range(max((len(frames) for _, frames in fused), default=0)):
        live = []
        for s, frames in fused:
            if t < len(frames):
                s._frame(*frames[t])
                live.append(s)
        groups: dict[int, list[PrefixBeamSearch]] = {}
        for s in live:
            groups.setdefault(id(s.lm), []).append(s)
        for group in groups.values():
            _lm_step(group)


def _lm_step(searches: list[PrefixBeamSearch]) -> None:
    """One batched LM step for the pending prefixes of searches that share an LM."""
    work = [(s, p) for s in searches if (p := s._lm_pending())]
    if not work:
        return
    tokens, src, offset = [], [], 0
    for s, pending in work:
        tokens += [b.lm_token for b in pending]
        src += [offset + b.lm_row for b in pending]
        offset += s.lm_state.shape[1]
    states = work[0][0].lm_state if len(work) == 1 else _cat([s.lm_state for s, _ in work], 1)
    logp, new = work[0][0].lm(tokens, states, src)
    a = 0
    for s, pending in work:
        s._lm_commit(pending, logp[a: a + len(pending)], new[:, a: a + len(pending)])
        a += len(pending)


def _cat(states: list, axis: int):
    """Concatenate LM states: numpy arrays (the ONNX step) or torch tensors (the torch step)."""
    if isinstance(states[0], np.ndarray):
        return np.concatenate(states, axis)
    import torch

    return torch.cat(states, axis)


def prefix_beam_search(log_probs: np.ndarray, beam: int = 8, nbest: int = 1, prune_logp: float = -12.0,
                       context: ContextGraph | None = None, lm: "ShallowFusion | None" = None,
                       lexicon: Lexicon | None = None) -> list[Hypothesis]:
    """log_probs (T, V) -> up to `nbest` hypotheses, best first."""
    search = PrefixBeamSearch(beam, prune_logp, context, lm, lexicon)
    search.advance(log_probs)
    return search.hypotheses(nbest)


def words_from_hypothesis(hyp: Hypothesis, tokenizer: Tokenizer, frame_shift_s: float,
                          start_frame: int = 0) -> list[Word]:
    """Group tokens into words (char: split at the separator; BPE: '▁' starts a word).
    `start_frame`: the stream frame of the hypothesis's frame 0 (for absolute times)."""
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
        start = (start_frame + hyp.frames[g[0]]) * frame_shift_s
        end = (start_frame + hyp.frames[g[-1]] + 1) * frame_shift_s
        conf = sum(hyp.probs[i] for i in g) / len(g)
        words.append(Word(text, start, end, conf))
    return words
