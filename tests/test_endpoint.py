"""Endpointing rules from CTC blanks."""

import pytest
import torch

from asr_engine.endpoint import EndpointConfig, Endpointer


def _frames(pattern: str) -> torch.Tensor:
    """'_' = a blank frame, 'x' = a frame whose best token is 1."""
    lp = torch.full((len(pattern), 4), -5.0)
    for t, c in enumerate(pattern):
        lp[t, 0 if c == "_" else 1] = -0.01
    return lp


def test_trailing_silence_counts_across_chunks():
    ep = Endpointer(EndpointConfig(), frame_shift_s=0.04)
    ep.update(_frames("__xx_"))
    assert (ep.frames, ep.trailing_silence) == (5, 1)
    ep.update(_frames("___"))
    assert (ep.frames, ep.trailing_silence) == (8, 4)
    ep.update(_frames("_x__"))
    assert (ep.frames, ep.trailing_silence) == (12, 2)
    ep.reset()
    assert (ep.frames, ep.trailing_silence) == (0, 0)


def test_rules():
    cfg = EndpointConfig(silence_no_text=0.4, silence_after_text=0.2, max_utterance=1.0)  # 10, 5, 25 frames
    ep = Endpointer(cfg, frame_shift_s=0.04)
    ep.update(_frames("_" * 9))
    assert not ep.detected(has_text=False)
    assert ep.detected(has_text=True)  # 9 >= 5: the shorter rule applies once text was decoded
    ep.update(_frames("_"))
    assert ep.detected(has_text=False)  # rule 1: 10 frames of nothing
    ep.reset()
    ep.update(_frames("x___"))
    assert not ep.detected(has_text=True)
    ep.update(_frames("__"))
    assert ep.detected(has_text=True)  # rule 2
    ep.reset()
    ep.update(_frames("x_" * 12))
    assert not ep.detected(has_text=True)
    ep.update(_frames("x"))
    assert ep.detected(has_text=True)  # rule 3: 25 frames, never silent
    ep.reset()
    assert not ep.detected(has_text=True)


@pytest.mark.parametrize("field", ["silence_no_text", "silence_after_text", "max_utterance"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "2"])
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        EndpointConfig(**{field: value})
