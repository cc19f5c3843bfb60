"""Hotwords: the Aho-Corasick context graph and its use in CTC prefix beam search."""

import pytest
import torch

from asr_engine.context import ROOT, ContextGraph, hotword_graph
from asr_engine.decoding import prefix_beam_search
from asr_engine.tokenizer import CharTokenizer


def _walk(g: ContextGraph, tokens: list[int]) -> tuple[int, float]:
    state, bonus = ROOT, 0.0
    for t in tokens:
        state, d = g.step(state, t)
        bonus += d
    return state, bonus


def test_graph_bonus_per_token_and_completed_phrases_keep_it():
    g = ContextGraph([[1, 2, 3], [2, 4]], boost=1.0)
    assert _walk(g, [1, 2]) == (g.next[g.next[ROOT][1]][2], 2.0)  # partial match: 2 tokens boosted
    assert _walk(g, [1, 2, 3]) == (ROOT, 3.0)  # complete: kept, back at the root
    assert _walk(g, [1, 2, 3, 5, 5]) == (ROOT, 3.0)  # later tokens do not take it back
    assert _walk(g, [1, 2, 4]) == (ROOT, 2.0)  # fell off "1 2 3" into "2 4" through the failure link
    state, bonus = _walk(g, [1, 2, 5])
    assert (state, bonus) == (ROOT, 0.0)  # a broken partial match gives its bonus back
    assert g.score(_walk(g, [1])[0]) == 1.0


def test_graph_from_phrases_and_bad_input():
    tok = CharTokenizer()
    g = ContextGraph.from_phrases(["ab", "b c"], tok, boost=0.5)
    assert len(g) == 2 + 3
    assert _walk(g, tok.encode("xab"))[1] == 1.0
    with pytest.raises(ValueError, match="no token"):
        ContextGraph.from_phrases(["!!"], tok)
    with pytest.raises(ValueError, match=">= 0"):
        ContextGraph([[1]], boost=-1)
    with pytest.raises(ValueError, match="beam search"):
        hotword_graph(("ab",), 1.5, tok, beam=1)
    assert hotword_graph((), 1.5, tok, beam=1) is None


def _log_probs(rows: list[dict[int, float]], vocab: int = 6) -> torch.Tensor:
    """Frames given as {token: probability}; the rest of each frame's mass is spread thinly."""
    out = torch.full((len(rows), vocab), 1e-4)
    for t, row in enumerate(rows):
        for k, p in row.items():
            out[t, k] = p
    return (out / out.sum(-1, keepdim=True)).log()


def test_hotword_changes_the_beam_search_result():
    # "1 2" is more likely than "1 3", but not by much
    lp = _log_probs([{1: 0.9, 0: 0.1}, {0: 1.0}, {2: 0.55, 3: 0.45}, {0: 1.0}])
    assert prefix_beam_search(lp, beam=4)[0].tokens == (1, 2)
    boosted = prefix_beam_search(lp, beam=4, context=ContextGraph([[1, 3]], boost=1.0))
    assert boosted[0].tokens == (1, 3)
    plain = prefix_beam_search(lp, beam=4, nbest=4)
    score = {h.tokens: h.score for h in plain}
    # two matched tokens, one boost each (beams pruned differently shift the sum over alignments a little)
    assert boosted[0].score == pytest.approx(score[(1, 3)] + 2.0, abs=1e-3)


def test_partial_match_earns_nothing_in_the_final_ranking():
    lp = _log_probs([{1: 0.9, 0: 0.1}, {0: 1.0}, {2: 0.55, 3: 0.45}, {0: 1.0}])
    g = ContextGraph([[1, 3, 4]], boost=1.0)  # "1 3" is only a prefix of the hotword
    hyps = prefix_beam_search(lp, beam=4, nbest=2, context=g)
    assert hyps[0].tokens == (1, 2)
    assert [h.tokens for h in hyps] == [(1, 2), (1, 3)]
