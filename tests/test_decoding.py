import math

import pytest
import torch

from asr_engine.decoding import greedy_search, prefix_beam_search, words_from_hypothesis
from asr_engine.tokenizer import CharTokenizer

TOK = CharTokenizer()


def peaky(seq: list[int | None], V: int = len(TOK.vocab), p: float = 0.9) -> torch.Tensor:
    """(T, V) log-probs where frame t has probability p on seq[t] (None: blank)."""
    lp = torch.full((len(seq), V), math.log((1 - p) / (V - 1)))
    for t, s in enumerate(seq):
        lp[t, 0 if s is None else s] = math.log(p)
    return lp


def ids(text):
    return TOK.encode(text)


def test_greedy_collapses_repeats_and_blanks():
    a, b = ids("ab")
    hyp = greedy_search(peaky([None, a, a, None, a, b, b, None]))
    assert hyp.tokens == (a, a, b)
    assert hyp.frames == (1, 4, 5)
    assert all(0.85 < p <= 0.9 + 1e-6 for p in hyp.probs)


def test_beam_equals_greedy_on_peaky_input():
    seq = [None, *ids("hi there"), None]
    lp = peaky([s for x in seq for s in (x, None)])
    assert prefix_beam_search(lp, beam=4)[0].tokens == greedy_search(lp).tokens


def test_beam_sums_alignments_where_greedy_does_not():
    """Classic case: best path is blank-blank, but 'a' has more total probability."""
    lp = torch.log(torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]]) + 1e-12)
    assert greedy_search(lp).tokens == ()
    best = prefix_beam_search(lp, beam=3)[0]
    assert best.tokens == (1,)
    assert math.isclose(math.exp(best.score), 0.4 * 0.6 * 2 + 0.4 * 0.4, rel_tol=1e-4)


def test_nbest_is_sorted_and_distinct():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(20, 6), -1)
    hyps = prefix_beam_search(lp, beam=5, nbest=5)
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({h.tokens for h in hyps}) == len(hyps)
    with pytest.raises(ValueError):
        prefix_beam_search(lp, beam=0)


def test_word_timestamps_and_confidence():
    space = TOK.encode("a b")[1]
    seq = [None] * 10 + ids("hi") + [None, space, None] + ids("yo") + [None]
    hyp = greedy_search(peaky(seq))
    words = words_from_hypothesis(hyp, TOK, 0.04)
    assert [w.word for w in words] == ["hi", "yo"]
    assert words[0].start == pytest.approx(0.40)  # leading silence: the first word starts at frame 10
    assert words[0].end == pytest.approx(0.48)
    assert words[1].start == pytest.approx(15 * 0.04)
    assert all(0.85 < w.confidence <= 0.9 + 1e-6 for w in words)
    beam_words = words_from_hypothesis(prefix_beam_search(peaky(seq), beam=4)[0], TOK, 0.04)
    assert [(w.word, round(w.start, 2)) for w in beam_words] == [(w.word, round(w.start, 2)) for w in words]
