import pytest
import torch

from asr_engine.decoding import greedy_search
from asr_engine.losses import LossWeights, factorized_distillation, total_loss
from asr_engine.model.encoder import Encoder, HeadOutput, SkipOptions

from conftest import tiny_config


def _targets():
    y = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0], [11, 3, 12, 4, 0]])
    return y, torch.tensor([5, 3, 4])


def _features(y, yl, frames_per_token=12, seed=0):
    """Each token a fixed random spectral pattern held for a few frames, with silence between."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(32, 80, generator=g) * 3
    feats = []
    for row, n in zip(y, yl):
        parts = [torch.zeros(8, 80)]
        for tok in row[:n]:
            parts += [patterns[tok].expand(frames_per_token, 80), torch.zeros(8, 80)]
        feats.append(torch.cat(parts))
    lengths = torch.tensor([f.shape[0] for f in feats])
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


def test_distillation_is_zero_for_identical_heads_and_positive_otherwise():
    torch.manual_seed(0)
    raw = torch.randn(2, 9, 6)
    valid = torch.ones(2, 9, dtype=torch.bool)
    kb, kt = factorized_distillation(HeadOutput(raw), HeadOutput(raw.clone()), valid)
    assert abs(float(kb)) < 1e-5 and abs(float(kt)) < 1e-5
    kb, kt = factorized_distillation(HeadOutput(raw), HeadOutput(torch.randn(2, 9, 6)), valid)
    assert kb > 0 and kt > 0


def test_gradients_reach_every_parameter_but_not_through_the_teacher():
    torch.manual_seed(0)
    m = Encoder(tiny_config())
    y, yl = _targets()
    x, xl = _features(y, yl)
    loss, parts = total_loss(m(x, xl), y, yl)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert set(parts) == {"ctc", "inter_ctc", "kd_blank", "kd_token"}
    assert all(not p.requires_grad and p.dim() == 0 for p in parts.values())  # no host sync, no graph kept
    # distillation alone moves the intermediate heads, never the final head
    m.zero_grad()
    out = m(x, xl)
    _, parts = total_loss(out, y, yl, LossWeights(intermediate_ctc=0.0))
    kb, kt = factorized_distillation(out.final, out.intermediate[2], torch.ones_like(out.top_mask))
    (kb + kt).backward()
    assert m.final_head.out.weight.grad is None or m.final_head.out.weight.grad.abs().sum() == 0
    assert m.heads["2"].out.weight.grad.abs().sum() > 0


def test_tiny_model_overfits_a_few_utterances_with_skip_aware_steps():
    torch.manual_seed(0)
    m = Encoder(tiny_config(d_model=48, n_heads=4))
    y, yl = _targets()
    x, xl = _features(y, yl)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for step in range(200):
        skip = SkipOptions(0.9, 1) if step >= 100 and step % 2 else None
        loss, _ = total_loss(m(x, xl, skip), y, yl)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first
    m.eval()
    with torch.no_grad():
        for skip in (None, SkipOptions(0.9, 1)):
            out = m(x, xl, skip)
            lp = out.final.log_probs()
            for i in range(3):
                hyp = greedy_search(lp[i, : out.lengths[i]])
                assert list(hyp.tokens) == y[i, : yl[i]].tolist()
        assert float(out.top_fraction().mean()) < 1.0  # trained gate skips some silence frames


def test_skip_distillation_teaches_the_top_layers_on_kept_frames_and_the_gate_on_skipped_ones():
    torch.manual_seed(0)
    m = Encoder(tiny_config())
    y, yl = _targets()
    x, xl = _features(y, yl)
    skip = SkipOptions(0.5, 0)  # an untrained gate sits near P(blank) 0.5: some frames kept, some skipped
    out = m(x, xl, skip, teacher=True)
    valid = torch.arange(out.top_mask.shape[1])[None, :] < out.lengths[:, None]
    kept = out.top_mask & valid
    assert 0 < int(kept.sum()) < int(valid.sum())
    # the teacher is the plain forward pass, and carries no gradient
    assert not out.unskipped.raw.requires_grad
    assert torch.allclose(out.unskipped.raw, m(x, xl).final.raw, atol=1e-5)
    assert m(x, xl, skip).unskipped is None  # only on request
    # the teacher replaces the skipping final head as the intermediate heads' teacher, and
    # the skip term appears only with a weight
    _, parts = total_loss(out, y, yl)
    assert "kd_skip" not in parts
    loss, parts = total_loss(out, y, yl, LossWeights(skip_distill=1.0))
    sb, st = factorized_distillation(out.unskipped, out.final, valid)
    assert float(parts["kd_skip"]) == pytest.approx(float((sb + st).detach()), rel=1e-5) and parts["kd_skip"] > 0
    ib, it = factorized_distillation(out.unskipped, out.intermediate[2], valid)
    jb, jt = factorized_distillation(out.unskipped, out.intermediate[1], valid)
    assert float(parts["kd_blank"]) == pytest.approx(float((ib + jb).detach()), rel=1e-5)
    # the skip term alone: kept frames move the top layers, skipped frames move the gate head
    m.zero_grad()
    (sb + st).backward()
    assert sum(float(p.grad.abs().sum()) for p in m.layers[-1].parameters() if p.grad is not None) > 0
    assert m.final_head.out.weight.grad.abs().sum() > 0
    assert m.heads["2"].out.weight.grad.abs().sum() > 0
    assert m.heads["1"].out.weight.grad is None or m.heads["1"].out.weight.grad.abs().sum() == 0
