import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from asr_engine.kernels import compact, keep_mask, scatter_back
from asr_engine.losses import total_loss
from asr_engine.model.config import PAD_POS, ModelConfig
from asr_engine.model.encoder import Encoder, HeadOutput, SkipOptions, factorized_log_probs
from asr_engine.model.layers import ATTENTION_BLOCK, ChunkedAttention, Frames, make_plan, windows_from_rows

from conftest import tiny_config, tiny_model


def _model(**kw) -> Encoder:
    torch.manual_seed(0)
    return Encoder(tiny_config(**kw)).eval()


def _batch():
    torch.manual_seed(1)
    return torch.randn(3, 203, 80), torch.tensor([203, 150, 61])


def _valid(out):
    T = out.final.raw.shape[1]
    return torch.arange(T)[None, :] < out.lengths[:, None]


def test_factorized_log_probs_normalise():
    lp = factorized_log_probs(torch.randn(2, 7, 11))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 7))


def test_factorized_ctc_equals_normal_ctc_when_tied():
    """With z = logsumexp(a_tokens) - a_blank and v = a_tokens, the factorized head is softmax(a)."""
    torch.manual_seed(0)
    a = torch.randn(2, 30, 9)  # (B, T, V) ordinary logits, blank at 0
    raw = torch.cat([torch.logsumexp(a[..., 1:], -1, keepdim=True) - a[..., :1], a[..., 1:]], -1)
    torch.testing.assert_close(factorized_log_probs(raw), F.log_softmax(a, -1), atol=1e-5, rtol=0)
    y, yl, xl = torch.randint(1, 9, (2, 6)), torch.tensor([6, 4]), torch.tensor([30, 25])
    ref = F.ctc_loss(F.log_softmax(a, -1).transpose(0, 1), y, xl, yl, reduction="sum")
    fac = F.ctc_loss(factorized_log_probs(raw).transpose(0, 1), y, xl, yl, reduction="sum")
    torch.testing.assert_close(fac, ref, atol=1e-3, rtol=1e-5)


def test_skipping_threshold_one_equals_no_skipping_exactly():
    m, (x, xl) = _model(), _batch()
    with torch.no_grad():
        a, b = m(x, xl), m(x, xl, SkipOptions(1.0, 2))
    v = _valid(a)
    assert torch.equal(a.final.raw[v], b.final.raw[v])
    assert torch.equal(b.top_mask, v)


def test_lower_threshold_runs_top_layers_on_fewer_frames(monkeypatch):
    m, (x, xl) = _model(), _batch()
    with torch.no_grad():  # push the gating head towards blank so that many frames skip
        m.heads["2"].out.bias[0] = -2.0
    seen = []
    top = m.layers[m.cfg.skip_layer]
    orig = top.forward
    monkeypatch.setattr(top, "forward", lambda x_, plan: (seen.append(int(plan.frames.valid.sum())), orig(x_, plan))[1])
    with torch.no_grad():
        full = m(x, xl)
        out = m(x, xl, SkipOptions(0.8, 0))
    assert seen[0] == int(full.lengths.sum())
    assert seen[1] == int(out.top_mask.sum()) < seen[0]
    assert (out.top_fraction() < 1).all()
    # skipped frames carry the gating head's output, kept frames the top layers' output
    skipped = _valid(out) & ~out.top_mask
    assert torch.equal(out.final.raw[skipped], out.intermediate[2].raw[skipped])
    assert not torch.allclose(out.final.raw[out.top_mask], full.intermediate[2].raw[out.top_mask])


def test_everything_skipped_is_handled():
    m, (x, xl) = _model(), _batch()
    with torch.no_grad():
        out = m(x, xl, SkipOptions(0.0, 0))
    assert int(out.top_mask.sum()) == 0
    assert torch.equal(out.final.raw, out.intermediate[2].raw)


def test_compacted_top_layers_equal_per_utterance_forward():
    """Skipping in a ragged batch gives each utterance what it gets alone."""
    m, (x, xl) = _model(), _batch()
    with torch.no_grad():
        m.heads["2"].out.bias[0] = -1.0
        batch = m(x, xl, SkipOptions(0.7, 1))
        for i in range(3):
            one = m(x[i:i + 1, : xl[i]], xl[i:i + 1], SkipOptions(0.7, 1))
            n = int(one.lengths[0])
            assert torch.equal(one.top_mask[0], batch.top_mask[i, :n])
            torch.testing.assert_close(one.final.raw[0], batch.final.raw[i, :n], atol=1e-5, rtol=1e-5)


def test_keep_mask_dilation():
    p = torch.tensor([[0.99, 0.99, 0.1, 0.99, 0.99, 0.99, 0.99]])
    valid = torch.ones_like(p, dtype=torch.bool)
    assert keep_mask(p, valid, 0.9, 0).int().tolist() == [[0, 0, 1, 0, 0, 0, 0]]
    assert keep_mask(p, valid, 0.9, 1).int().tolist() == [[0, 1, 1, 1, 0, 0, 0]]
    assert keep_mask(p, valid[:, :5].clone().resize_(1, 7).fill_(False), 0.9, 1).sum() == 0
    assert keep_mask(p, valid, 0.9, 2).int().tolist() == [[1, 1, 1, 1, 1, 0, 0]]
    # chunk-local: frames 0-2 and 3-5 are separate chunks, so frame 3 is not kept for frame 2
    assert keep_mask(p, valid, 0.9, 1, chunk=3).int().tolist() == [[0, 1, 1, 0, 0, 0, 0]]


def test_compact_scatter_roundtrip():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3)
    keep = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    c = compact(x, keep)
    assert c.lengths.tolist() == [3, 1]
    assert c.index[0].tolist() == [0, 2, 3] and c.index[1, 0] == 3
    torch.testing.assert_close(c.x[0], x[0, [0, 2, 3]])
    assert torch.equal(c.x[1, 1:], torch.zeros(2, 3))
    base = torch.zeros(2, 6, 3)
    out = scatter_back(base, c.x, c)
    torch.testing.assert_close(out[keep], x[keep])
    assert torch.equal(out[~keep], torch.zeros(int((~keep).sum()), 3))


def attention_windows(owner: torch.Tensor, frames: Frames, left: int | None, block: int = ATTENTION_BLOCK) -> list:
    """The reference for the windows the model makes (`host_windows`, `kept_windows`): (a, b, s, e, s2,
    e2) for each block of queries [a, b) that holds a valid one, computed from any frames' owners
    and validity on the device (the model's own implementation until the host and the gates made
    them without a read)."""
    B, N = owner.shape
    if N == 0:
        return []
    n = -(-N // block)
    pad = n * block - N
    vq = F.pad(frames.valid, (0, pad)).view(B, n, block)
    cq = F.pad(owner, (0, pad)).view(B, n, block)
    c_max = torch.where(vq, cq, torch.full_like(cq, -1)).amax(2)  # (B, n)
    c_min = torch.where(vq, cq, torch.full_like(cq, PAD_POS)).amin(2)
    real, ahead = owner[:, : frames.n_real].contiguous(), owner[:, frames.n_real:].contiguous()
    end = torch.searchsorted(real, c_max, right=True).amax(0)  # (n,)
    start = torch.zeros_like(end) if left is None else torch.searchsorted(real, c_min - left).amin(0)
    if ahead.shape[1]:  # a chunk's queries see its own lookahead copies only
        start2 = torch.searchsorted(ahead, c_min).amin(0) + frames.n_real
        end2 = torch.searchsorted(ahead, c_max, right=True).amax(0) + frames.n_real
    else:
        start2 = end2 = torch.full_like(end, N)
    rows = torch.stack([vq.any(2).any(0).long(), start, end, start2, end2])
    return windows_from_rows(rows.flatten().tolist(), N, block)


def _attention(left):
    torch.manual_seed(0)
    cfg = tiny_config(chunk_size=4, left_chunks=left)
    return ChunkedAttention(cfg).eval()


def _attend(att, x, pos, valid, block=256):
    cfg = tiny_config(chunk_size=att.chunk, left_chunks=att.left)
    frames = Frames(pos, valid, pos.shape[1])
    plan = make_plan(cfg, frames)
    plan = type(plan)(frames, plan.owner, attention_windows(plan.owner, frames, att.left, block), None)
    return att(x, plan)


@pytest.mark.parametrize("left", [0, 1, None])
def test_chunked_attention_mask(left):
    """Frame t depends on frames of its own chunk and `left` chunks before, nothing else."""
    att = _attention(left)
    T = 24
    x = torch.randn(1, T, 32, requires_grad=True)
    pos = torch.arange(T)[None]
    valid = torch.ones(1, T, dtype=torch.bool)
    for t in range(T):
        (g,) = torch.autograd.grad(_attend(att, x, pos, valid)[0, t].sum(), x)
        depends = g[0].abs().sum(-1) > 0
        c = t // 4
        lo = 0 if left is None else max(0, c - left) * 4
        expected = torch.zeros(T, dtype=torch.bool)
        expected[lo:(c + 1) * 4] = True
        assert torch.equal(depends, expected), t


def test_attention_block_size_does_not_change_results():
    att = _attention(2)
    x = torch.randn(2, 50, 32)
    pos = torch.arange(50).expand(2, 50)
    valid = pos < torch.tensor([[50], [33]])
    with torch.no_grad():
        ref = _attend(att, x, pos, valid)
        small = _attend(att, x, pos, valid, block=7)
    torch.testing.assert_close(small[valid], ref[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("right", [0, 3])
@pytest.mark.parametrize("left", [0, 2, None])
@pytest.mark.parametrize("block", [5, 16, 256])
def test_windows_made_on_the_host_from_the_lengths_equal_the_devices(right, left, block):
    """A whole-utterance pass's attention windows made on the host from the rows' lengths (no device
    read) are those computed on the device, block for block."""
    from asr_engine.model.layers import host_windows

    for chunk in (4, 8):
        m = _model(right_context=right, left_chunks=left, chunk_size=chunk)
        for lengths in ([203], [203, 150, 61, 9], [9, 9], [61, 203, 0], [400, 7]):
            x, frames, _ = m.embed(torch.randn(len(lengths), max(lengths), 80), torch.tensor(lengths))
            want = attention_windows(make_plan(m.cfg, frames).owner, frames, left, block)
            got = host_windows([m.cfg.output_length(n) for n in lengths], frames.n_real, chunk, right, left, block)
            assert got == want, (chunk, lengths)


@pytest.mark.parametrize("right", [0, 3])
@pytest.mark.parametrize("left", [0, 2, None])
@pytest.mark.parametrize("block", [5, 16, 256])
def test_kept_windows_from_the_gates_equal_the_compacted_frames_windows(right, left, block):
    """A skipping pass computes its kept frames' attention windows on the device from the gates, before
    it knows the compaction's sizes: they are the windows of the compacted frames, block for block."""
    from asr_engine.kernels import gate_keep, gather, host_sizes
    from asr_engine.model.encoder import kept_frames
    from asr_engine.model.layers import kept_windows

    m = _model(right_context=right, left_chunks=left)
    gen = torch.Generator().manual_seed(block + right)
    for trial in range(6):
        lengths = torch.tensor([203, 150, 61, 9])[: 1 + trial % 4]
        x, frames, _ = m.embed(torch.randn(len(lengths), int(lengths.max()), 80), lengths)
        plan, T = make_plan(m.cfg, frames), frames.n_real
        p_keep = [0.0, 0.1, 0.5, 0.9, 1.0, 0.3][trial]  # none kept, a few, ..., all
        keep = (torch.rand(frames.valid.shape, generator=gen) < p_keep) & frames.valid
        keep[:, 40:56] = False  # whole chunks skipped
        g = gate_keep(keep[:, :T])
        g2 = gate_keep(keep[:, T:]) if right else None
        gated = (g,) if g2 is None else (g, g2)
        read = host_sizes(*gated, extra=kept_windows(plan.owner, T, g.slot, None if g2 is None else g2.slot,
                                                     g.longest, left, block))
        c = gather(x[:, :T], g, read[0])
        c2 = gather(x[:, T:], g2, read[1]) if right else None
        y, kept = kept_frames(c, c2, frames)
        want = attention_windows(kept.owner(m.cfg.chunk_size), kept, left, block)
        assert windows_from_rows(read[len(gated):], y.shape[1], block) == want, (trial, p_keep)


class HostReads(TorchFunctionMode):
    """Counts the reads of a tensor's value into Python (on a GPU each one waits for the device)."""

    READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__"}

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layout", ["conformer", "whisper"])
def test_a_training_step_reads_the_device_once_per_stack(layout):
    """Attention windows are computed once for every layer of a stack and read back at once; a
    skipping pass reads its compactions' sizes together with the kept frames' windows; the loss and
    backward read nothing."""
    m = tiny_model(layout).train()
    for layer in m.layers:
        layer.att.block = 8  # many query blocks per layer
    x, xl = torch.randn(3, 400, 80), torch.tensor([400, 300, 123])
    targets, target_lengths = torch.randint(1, 20, (3, 10)), torch.tensor([10, 8, 5])
    for skip, host, expected in ((None, None, 1), (SkipOptions(0.5, 1), None, 2),
                                 (None, xl.tolist(), 0), (SkipOptions(0.5, 1), xl.tolist(), 1)):
        with HostReads() as forward:  # with the host's lengths the plan is made there
            out = m(x, xl, skip, teacher=skip is not None, host_lengths=host)
        with HostReads() as backward:
            loss, _ = total_loss(out, targets, target_lengths)
            loss.backward()
        assert len(forward.reads) == expected, (skip, forward.reads)
        assert backward.reads == []


def test_long_input_subsampling_is_piecewise_exact():
    m = _model()
    x, xl = torch.randn(1, 9000, 80), torch.tensor([9000])
    with torch.no_grad():
        whole, n = m.subsampling(x, xl)
        m.subsampling.piece = 100
        pieces, _ = m.subsampling(x, xl)
    assert int(n[0]) == whole.shape[1] == 2249
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"vocab_size": 10, "bogus": 1})
    with pytest.raises(ValueError, match="skip_layer"):
        ModelConfig(vocab_size=10, intermediate_layers=(2,), skip_layer=4)
    with pytest.raises(ValueError, match="subsamples by 4 or 8, got 3"):
        ModelConfig(vocab_size=10, subsampling=3)
    with pytest.raises(ValueError, match="subsamples by 2, got 4"):
        ModelConfig(vocab_size=10, stem="whisper")
    with pytest.raises(ValueError, match="positions must be one of"):
        ModelConfig(vocab_size=10, positions="alibi")


def test_head_output_blank_prob():
    h = HeadOutput(torch.tensor([[[0.0, 1.0], [10.0, 1.0]]]))
    torch.testing.assert_close(h.blank_prob(), torch.tensor([[0.5, torch.sigmoid(torch.tensor(-10.0))]]))


def test_feature_floor_makes_digital_silence_look_like_quiet_noise():
    m = _model(feat_floor=5.0)
    x, xl = _batch()
    x = x * 8 + 10  # log-mel-like values, some below the floor
    silent = x.clone()
    silent[:, 40:90] = -15.9  # digital zeros: log(eps)
    quiet = x.clone()
    quiet[:, 40:90] = 4.0  # low noise, also under the floor
    with torch.no_grad():
        a, b = m(silent, xl).final.raw, m(quiet, xl).final.raw
        unfloored = _model()(silent, xl).final.raw
    torch.testing.assert_close(a, b)
    assert not torch.allclose(unfloored, _model()(quiet, xl).final.raw)
    torch.testing.assert_close(m.normalize(silent).min(), (5.0 - m.feat_mean).mul(m.feat_istd).min())


def test_absolute_positions_repeat_after_the_period():
    from asr_engine.model.layers import sinusoids

    from conftest import tiny_model

    m = tiny_model("whisper")  # position_period 50
    x = torch.zeros(1, 3, m.cfg.d_model)
    pos = torch.tensor([[0, 7, 49]])
    torch.testing.assert_close(m.embed_positions(x, pos + 50), m.embed_positions(x, pos))
    torch.testing.assert_close(m.embed_positions(x, pos)[0, 1], sinusoids(pos, m.cfg.d_model)[0, 1])
    # Whisper's table: sines of the first half of the timescales, then cosines; position 0 is [0.., 1..]
    s = sinusoids(torch.tensor([[0]]), 8)[0, 0]
    assert s.tolist() == [0.0] * 4 + [1.0] * 4
