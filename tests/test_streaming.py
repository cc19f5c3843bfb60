"""Streaming parity: forward_chunk over a stream equals the full-utterance forward."""

import math

import pytest
import torch

from asr_engine.model.encoder import Encoder, SkipOptions
from asr_engine.model.streaming import StreamState

from conftest import LAYOUTS, tiny_config, tiny_model


def _model(layout: str = "conformer", **kw) -> Encoder:
    m = tiny_model(layout, **kw)
    m.feat_istd.fill_(0.5)
    return m


def _feats(lengths: list[int], seed: int = 1):
    torch.manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 80) * 2 + 8
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, torch.tensor(lengths)


def stream(model: Encoder, x: torch.Tensor, xl: torch.Tensor, C: int, skip: SkipOptions | None,
           state: StreamState | None = None, top_outs: list | None = None):
    """Feed (B, T_in, F) features chunk by chunk (each step's window also holds the model's right
    context): -> final raw (B, T, V), top mask, states seen; each step's last-layer output is appended
    to `top_outs` when given."""
    sub, R = model.subsampling, model.cfg.right_context
    n = sub.output_lengths(xl)  # (B,)
    T = int(n.max())
    chunks = math.ceil(T / C)
    need = sub.stride * C * chunks + sub.input_frames(R)
    xp = torch.cat([x, x.new_zeros(x.shape[0], max(0, need - x.shape[1]), x.shape[2])], 1)
    state = state or StreamState.zeros(model.cfg, x.shape[0])
    raws, tops, states = [], [], [state]
    for k in range(chunks):
        a = k * C * sub.stride
        win = xp[:, a: a + sub.input_frames(C + R)]
        out, state = model.forward_chunk(win, (n - k * C).clamp(0, C + R), state, skip, hidden=top_outs is not None)
        raws.append(out.final.raw)
        tops.append(out.top_mask)
        if top_outs is not None:
            top_outs.append(out.top_out)
        states.append(state)
    return torch.cat(raws, 1)[:, :T], torch.cat(tops, 1)[:, :T], states


@pytest.mark.parametrize("right", [0, 2, 4])
@pytest.mark.parametrize("chunks_per_step", [1, 2, 3])
@pytest.mark.parametrize("lengths", [[203], [203, 150, 61]])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_streaming_equals_full_forward(right, chunks_per_step, lengths, layout):
    m = _model(layout, right_context=right)
    x, xl = _feats(lengths)
    with torch.no_grad():
        full = m(x, xl)
        raw, _, states = stream(m, x, xl, chunks_per_step * m.cfg.chunk_size, None)
    for b, n in enumerate(full.lengths.tolist()):
        torch.testing.assert_close(raw[b, :n], full.final.raw[b, :n], atol=1e-4, rtol=1e-4)
    assert states[-1].offset.tolist() == full.lengths.tolist()


@pytest.mark.parametrize("right", [0, 3])
@pytest.mark.parametrize("quantile,dilation", [(0.5, 0), (0.5, 1), (0.2, 2)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_streaming_with_skipping_equals_full_forward_with_skipping(quantile, dilation, layout, right):
    m = _model(layout, right_context=right)
    x, xl = _feats([203, 150, 61])
    with torch.no_grad():  # a threshold that skips a good share of this random model's frames
        plain = m(x, xl)
        valid = torch.arange(plain.final.raw.shape[1])[None] < plain.lengths[:, None]
        threshold = float(torch.quantile(plain.intermediate[2].blank_prob()[valid], quantile))
    skip = SkipOptions(threshold, dilation)
    outs = []
    with torch.no_grad():
        full = m(x, xl, skip, hidden=True)
        raw, top, _ = stream(m, x, xl, 2 * m.cfg.chunk_size, skip, top_outs=outs)
    valid = torch.arange(raw.shape[1])[None] < full.lengths[:, None]
    y = torch.cat(outs, 1)[:, : raw.shape[1]]  # the last layer's output, zero on skipped frames
    assert not y[~top].any() and not full.top_out[~full.top_mask].any()
    frac = float(full.top_mask[valid].float().mean())
    assert 0.1 < frac < 0.9  # the test exercises real skipping, not all-or-nothing
    assert torch.equal(top & valid, full.top_mask & valid)
    for b, n in enumerate(full.lengths.tolist()):
        torch.testing.assert_close(raw[b, :n], full.final.raw[b, :n], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(y[b, :n], full.top_out[b, :n], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_threshold_one_streaming_equals_no_skipping(layout):
    m = _model(layout)
    x, xl = _feats([150, 97])
    with torch.no_grad():
        a, _, _ = stream(m, x, xl, m.cfg.chunk_size, None)
        b, top, _ = stream(m, x, xl, m.cfg.chunk_size, SkipOptions(1.0, 1))
    # without skipping the top layers run on the step's frames in place, with it on the compacted
    # kept frames: other matrix shapes, so float rounding may differ, and nothing more
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert bool(top[0].all())


@pytest.mark.parametrize("right", [0, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched_streams_equal_single_streams_and_select_stack_roundtrip(layout, right):
    m = _model(layout, right_context=right)
    x, xl = _feats([203, 150, 61])
    skip = SkipOptions(0.5, 1)
    with torch.no_grad():
        batched, _, states = stream(m, x, xl, 8, skip)
        for b in range(3):
            single, _, _ = stream(m, x[b:b + 1, : int(xl[b])], xl[b:b + 1], 8, skip)
            n = single.shape[1]
            torch.testing.assert_close(batched[b, :n], single[0], atol=1e-4, rtol=1e-4)
    mid = states[5]
    again = StreamState.stack([mid.select([2]), mid.select([0, 1])])
    assert torch.equal(again.select([1, 2, 0]).k, mid.k)
    assert again.offset.tolist() == [mid.offset[2], mid.offset[0], mid.offset[1]]


def test_cache_size_is_constant_over_a_long_stream():
    m = _model()
    x, xl = _feats([4000])  # 40 s of features, 1000 encoder frames
    with torch.no_grad():
        _, _, states = stream(m, x, xl, 8, SkipOptions(0.5, 1))
    sizes = {s.nbytes() for s in states}
    assert len(sizes) == 1
    assert int(states[-1].offset[0]) == int(m.subsampling.output_lengths(xl)[0])


def test_bad_chunks_are_rejected():
    m = _model()
    st = StreamState.zeros(m.cfg, 1)
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        m.forward_chunk(torch.zeros(1, 4 * 3 + 3, 80), torch.tensor([3]), st)
    with pytest.raises(ValueError, match="bounded left context"):
        StreamState.zeros(tiny_config(left_chunks=None))


@pytest.mark.parametrize("right", [0, 1, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_frame_sees_its_chunk_and_the_right_context_after_it_and_nothing_later(layout, right):
    m = _model(layout, right_context=right)
    cs = m.cfg.chunk_size
    x, xl = _feats([120])
    x.requires_grad_(True)
    T = int(m.subsampling.output_lengths(xl)[0])
    for t in (0, cs - 1, cs + 1, T - 1):
        (g,) = torch.autograd.grad(m(x, xl).final.raw[0, t].sum(), x)
        seen = int(torch.nonzero(g[0].abs().sum(-1)).max())  # the latest feature frame it depends on
        end = min((t // cs + 1) * cs + right, T)  # encoder frames it may see
        assert seen == m.cfg.input_frames(end) - 1, t


class HostReads:
    """Counts what makes a GPU's host wait for the device: tensor values read to the host (`tolist`,
    and `item`/`int`/`bool` through aten._local_scalar_dense) and ops whose output size depends on
    the values (nonzero, boolean indexing, masked_select). Counted on the CPU through torch's
    dispatcher; the same code on CUDA syncs at each one."""

    SIZED = {"aten.nonzero.default", "aten.masked_select.default", "aten._local_scalar_dense.default"}

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        self.count = 0
        tolist = torch.Tensor.tolist

        def counted(t, *a, **k):
            self.count += 1
            return tolist(t, *a, **k)

        monkeypatch.setattr(torch.Tensor, "tolist", counted)
        reads = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                bool_index = str(func).startswith("aten.index") and any(
                    isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in args[1] if t is not None)
                reads.count += str(func) in HostReads.SIZED or bool_index
                return func(*args, **(kwargs or {}))

        self.mode = Mode()

    def __call__(self, fn, *args, **kw):
        before = self.count
        with self.mode:
            fn(*args, **kw)
        return self.count - before


def test_host_reads_counter_sees_each_kind(monkeypatch):
    reads, t = HostReads(monkeypatch), torch.arange(5)
    assert [reads(f) for f in (lambda: t.tolist(), lambda: int(t.max()), lambda: t[t > 2], lambda: t.nonzero(),
                               lambda: t.sum(0, keepdim=True) * 2)] == [1, 1, 1, 1, 0]


@pytest.mark.parametrize("right", [0, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_streaming_step_reads_the_host_once_with_skipping_and_never_without(monkeypatch, layout, right):
    """The step's gates (real frames, lookahead copies) send their compactions' sizes back together;
    without skipping nothing is gated, so nothing is read before the step's outputs."""
    m = _model(layout, right_context=right)
    x, xl = _feats([203, 150, 61])
    C, sub = 2 * m.cfg.chunk_size, m.subsampling
    state = StreamState.zeros(m.cfg, 3)
    win, n_valid = x[:, : sub.input_frames(C + right)], torch.tensor([C + right, C + right, 3])
    reads = HostReads(monkeypatch)
    with torch.no_grad():
        assert reads(m.forward_chunk, win, n_valid, state, None, hidden=True) == 0
        assert reads(m.forward_chunk, win, n_valid, state, SkipOptions(0.5, 1), hidden=True) == 1
        # a whole-utterance pass reads its attention plan; skipping adds one read: the compactions' sizes
        # together with the kept frames' plan
        assert reads(m, x, xl) == 1
        assert reads(m, x, xl, SkipOptions(0.5, 1)) == 2
        host = xl.tolist()  # the lengths as the host knows them: the plan is made there
        assert reads(m, x, xl, host_lengths=host) == 0
        assert reads(m, x, xl, SkipOptions(0.5, 1), host_lengths=host) == 1
