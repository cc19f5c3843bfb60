"""A probe, not a feature (docs/rescoring.md): joint CTC / attention decoding, Whisper's decoder generating
and our CTC head keeping it on the audio.

ESPnet's hybrid decoding (Watanabe et al., 2017, "Hybrid CTC/attention architecture for end-to-end
speech recognition") runs an attention decoder's beam search and scores every prefix with the CTC
prefix probability as well, which keeps the decoder from looping, skipping or stopping early. Here
the decoder is Whisper-base's (asr_engine.rescore.WhisperDecoder, reading the streaming encoder's
last layer) and the CTC head is our own. They do not share a vocabulary (Whisper's byte-level BPE of
51,865 tokens against our BPE-256), so each Whisper prefix's text is normalised
(asr_engine.text.normalize: numbers spelt out, punctuation dropped) and encoded with our tokenizer, and
its CTC prefix probability is that of our tokens (states memoised by our token prefix; a partial last
word is tokenised as it stands, which is not always a prefix of the whole word's tokens). Tokens
without a letter or digit are never proposed: their text normalises to nothing, so the CTC score
could not stop them repeating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from asr_engine.rescore import MAX_FRAMES, WhisperRescorer, _layer_norm, _linear, one_blas_thread
from asr_engine.text import normalize

__all__ = ["CTCPrefixScorer", "JointDecoder"]

_NEG = -1e30
_WORD_PIECE = re.compile(r"^\u0120?[A-Za-z0-9']*[A-Za-z0-9][A-Za-z0-9']*$")


class CTCPrefixScorer:
    """CTC prefix probabilities of token sequences over one utterance's log-probs (T, V), blank 0.

    A state is (r, last, score): r (T, 2) the log-probabilities that the first t + 1 frames emit the
    prefix and end in a non-blank / a blank, the prefix's last token, and its prefix probability
    (the probability that the frames' output starts with it)."""

    def __init__(self, log_probs: np.ndarray, blank: int = 0):
        self.x = np.asarray(log_probs, np.float64)
        self.blank = blank
        self.T = self.x.shape[0]

    def initial(self) -> tuple[np.ndarray, int, float]:
        r = np.full((self.T, 2), _NEG)
        r[:, 1] = np.cumsum(self.x[:, self.blank])
        return r, -1, 0.0

    def extend(self, state: tuple[np.ndarray, int, float], c: int) -> tuple[np.ndarray, int, float]:
        """The state of the prefix followed by token c."""
        return self.extend_many([state], [c])[0]

    def extend_many(self, states: list[tuple[np.ndarray, int, float]], tokens: list[int]) -> list[tuple]:
        """Each state's prefix followed by its token, all at once. The frame recursion
        r_n(t) = x_c(t) (r_n(t-1) + phi(t-1)) is linear in probabilities, so it is solved in closed form,
        r_n(t) = C(t) sum_{s<t} phi(s) / C(s) with C(t) = x_c(1) ... x_c(t), by cumulative log-sums over
        the frames (numpy's logaddexp.accumulate) instead of a loop over them (likewise r_b over the
        blank); in float64 the log-domain sums keep about 1e-9 of absolute precision at 1,500 frames."""
        N = len(states)
        r = np.stack([s[0] for s in states])  # (N, T, 2)
        last = np.array([s[1] for s in states])
        c = np.asarray(tokens)
        x_c = self.x[:, c].T  # (N, T)
        x_b = self.x[:, self.blank]
        phi = np.where((c == last)[:, None], r[:, :, 1], np.logaddexp(r[:, :, 0], r[:, :, 1]))
        start = np.where(last == -1, x_c[:, 0], _NEG)  # only the empty prefix lets c take the first frame
        cx = np.cumsum(x_c, 1)
        # r_n(t) = start C(t) / C(0) + sum_{s=0}^{t-1} phi(s) C(t) / C(s)
        terms = np.concatenate([(start - cx[:, 0])[:, None], phi[:, :-1] - cx[:, :-1]], 1)
        rn = cx + np.logaddexp.accumulate(terms, 1)
        cb = np.cumsum(np.broadcast_to(x_b, (N, self.T)), 1)
        # r_b(0) = -inf; r_b(t) = sum_{s=0}^{t-1} r_n(s) B(t) / B(s)
        terms = np.concatenate([np.full((N, 1), _NEG), rn[:, :-1] - cb[:, :-1]], 1)
        rb = np.concatenate([np.full((N, 1), _NEG), cb[:, 1:] + np.logaddexp.accumulate(terms, 1)[:, 1:]], 1)
        emit = np.concatenate([start[:, None], phi[:, :-1] + x_c[:, 1:]], 1)
        score = np.logaddexp.reduce(emit, 1)
        rn = np.maximum(rn, _NEG)
        rb = np.maximum(rb, _NEG)
        return [(np.stack([rn[i], rb[i]], 1), int(c[i]), float(score[i])) for i in range(N)]

    def full(self, state: tuple[np.ndarray, int, float]) -> float:
        """The probability that the frames' whole output is the prefix."""
        r = state[0]
        return float(np.logaddexp(r[-1, 0], r[-1, 1]))


@dataclass
class _Hyp:
    tokens: list[int]  # Whisper tokens after the prompt
    att: float  # the decoder's log-probability of them
    cache: int  # the row of the decoder's cache holding this hypothesis (-1: ended)
    score: float = 0.0


class _DecoderCache:
    """Whisper's decoder run one token at a time, each row's self-attention keys and values kept."""

    def __init__(self, dec, memory, valid: np.ndarray | None):
        self.dec, self.memory, self.valid = dec, memory, valid
        self.cache = None

    def select(self, rows: list[int]) -> None:
        idx = np.asarray(rows, np.int64)
        self.cache = [(k[idx], v[idx]) for k, v in self.cache]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (N, U) appended to every row -> the next token's log-distribution (N, V)."""
        x, self.cache = self.dec.step(tokens, self.memory, self.cache, self.valid)
        logits = _linear(x[:, -1], self.dec.embedding, 0.0)
        m = logits.max(-1, keepdims=True)
        return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


class JointDecoder:
    """Beam search over Whisper's decoder, each prefix scored ctc_weight x CTC + (1 - ctc_weight) x decoder.

    rescorer: a loaded WhisperRescorer (its decoder, tokenizer and final LayerNorm); tokenizer: the
    acoustic model's own (our CTC vocabulary)."""

    def __init__(self, rescorer: WhisperRescorer, tokenizer, ctc_weight: float = 0.3, beam: int = 8,
                 max_tokens_per_second: float = 8.0):
        if not 0.0 < ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in (0, 1], got {ctc_weight}")
        self.r, self.tok = rescorer, tokenizer
        self.ctc_weight, self.beam = ctc_weight, beam
        self.max_tokens_per_second = max_tokens_per_second
        wt = rescorer.tokenizer
        self.end = rescorer._end
        V = rescorer.decoder.embedding.shape[0]
        # The decoder may emit words and the end of text. Tokens without a letter or digit (punctuation,
        # symbols, Whisper's special tokens) are never proposed: normalisation drops them, so the CTC score
        # could not stop the decoder repeating them (it did: '"Please! "! "! ...').
        self.allowed = np.full(V, -np.inf, np.float32)
        self.allowed[self.end] = 0.0
        for i in range(self.end):
            t = wt.id_to_token(i)
            if t is not None and _WORD_PIECE.match(t):
                self.allowed[i] = 0.0

    def _ours(self, text: str) -> list[int]:
        t = normalize(text)
        return self.tok.encode(t) if t else []

    def decode(self, log_probs: np.ndarray, hidden: np.ndarray, valid: np.ndarray) -> str | None:
        """One utterance: our CTC log-probs (T, V), the encoder's last-layer output (T, D) and the frames
        that have one -> the best text, or None where the decoder cannot read it (no valid frame, past
        Whisper's window)."""
        T = hidden.shape[0]
        if not valid.any() or T > MAX_FRAMES:
            return None
        w = self.ctc_weight
        scorer = CTCPrefixScorer(log_probs)
        states: dict[tuple, tuple] = {(): scorer.initial()}  # our token prefix -> its CTC state

        def resolve(keys: list[tuple]) -> None:
            """Puts every key's CTC state in `states`, extending the longest known prefixes together."""
            missing = {k for k in keys if k not in states}
            while missing:
                ext: dict[tuple, tuple] = {}  # the next prefix to add -> (its known parent, its last token)
                for k in missing:
                    n = len(k) - 1
                    while k[:n] not in states:
                        n -= 1
                    ext[k[: n + 1]] = (k[:n], k[n])
                new = list(ext)
                for k, st in zip(new, scorer.extend_many([states[ext[k][0]] for k in new], [ext[k][1] for k in new])):
                    states[k] = st
                missing = {k for k in missing if k not in states}

        dec = self.r.decoder
        wt = self.r.tokenizer
        with one_blas_thread():
            memory = dec.memory(_layer_norm(hidden.astype(np.float32), *self.r.final_norm))
            cache = _DecoderCache(dec, memory, valid.astype(bool))
            lp = cache.step(np.asarray([self.r._prompt], np.int64))
            hyps = [_Hyp([], 0.0, 0)]
            finished: list[_Hyp] = []
            max_len = min(dec.max_tokens - len(self.r._prompt) - 1,
                          int(T * 0.02 * self.max_tokens_per_second) + 10)
            for step in range(max_len):
                if step > 0:
                    cache.select([h.cache for h in hyps])
                    lp = cache.step(np.asarray([[h.tokens[-1]] for h in hyps], np.int64))
                lp = lp + self.allowed
                cands = []  # (hypothesis, token, decoder score, our tokens of its text)
                for i, h in enumerate(hyps):
                    top = np.argpartition(-lp[i], self.beam)[: self.beam]
                    if self.end not in top:
                        top = np.append(top, self.end)
                    for c in top.tolist():
                        text = wt.decode(h.tokens if c == self.end else h.tokens + [c])
                        cands.append((i, c, h.att + float(lp[i, c]), tuple(self._ours(text))))
                resolve([k for *_, k in cands])
                cands = [(w * (scorer.full(states[k]) if c == self.end else states[k][2]) + (1 - w) * att, i, c, att)
                         for i, c, att, k in cands]
                cands.sort(key=lambda c: -c[0])
                new = []
                for score, i, c, att in cands:
                    if len(new) >= self.beam:
                        break
                    if c == self.end:
                        if np.isfinite(score):
                            finished.append(_Hyp(hyps[i].tokens, att, -1, score))
                        continue
                    new.append(_Hyp(hyps[i].tokens + [c], att, i, score))
                hyps = new
                if not hyps:
                    break
                best_done = max((f.score for f in finished), default=-np.inf)
                if best_done >= max(h.score for h in hyps):
                    break
        if not finished:  # ran out of length: close the open prefixes
            for h in hyps:
                k = tuple(self._ours(wt.decode(h.tokens)))
                resolve([k])
                finished.append(_Hyp(h.tokens, h.att, -1, w * scorer.full(states[k]) + (1 - w) * h.att))
        best = max(finished, key=lambda f: f.score)
        return normalize(wt.decode(best.tokens))
