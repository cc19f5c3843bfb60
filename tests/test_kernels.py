"""The Triton kernels of the skipping path against their torch references: on a GPU when
there is one, otherwise on the CPU through Triton's interpreter (small shapes)."""

import warnings

import pytest
import torch

import asr_engine.kernels as K
from asr_engine.kernels import compaction, factorized
from asr_engine.model.encoder import Encoder, SkipOptions
from asr_engine.model.streaming import StreamState
from conftest import KERNEL_DEVICE, tiny_config

triton = pytest.importorskip("triton")
from asr_engine.kernels import triton_ops as tk  # noqa: E402

DEVICE = KERNEL_DEVICE
if DEVICE == "cpu" and not tk.INTERPRETED:
    pytest.skip("no GPU, and the kernels were imported without TRITON_INTERPRET=1", allow_module_level=True)

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def _gate(B, T, V, seed=0, threshold=0.6):
    """Gate logits whose P(blank) stays clear of the threshold (no rounding-sensitive frames)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(B, T, V, generator=g) * 3
    p = torch.sigmoid(-raw[..., 0])
    raw[..., 0] = torch.where((p - threshold).abs() < 1e-2, raw[..., 0] + 0.5, raw[..., 0])
    return raw


@pytest.mark.parametrize("B,T,D", [(1, 1, 5), (3, 7, 32), (2, 37, 70), (2, 200, 16)])
@pytest.mark.parametrize("dilation,chunk", [(0, None), (1, None), (2, 4), (1, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gate_compact_equals_reference(B, T, D, dilation, chunk, dtype):
    raw = _gate(B, T, 6).to(DEVICE, dtype)
    x = torch.randn(B, T, D).to(DEVICE, dtype)
    lengths = torch.tensor([T, max(T - 3, 0), 0][:B], device=DEVICE)
    ref = compaction.gate_compact(raw.float(), x, lengths, 0.6, dilation, chunk)
    got = tk.gate_compact(raw, x, lengths, 0.6, dilation, chunk)
    for name in ("keep", "slot", "index", "valid", "lengths", "x"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert ref.keep.any() or T == 1


@pytest.mark.parametrize("B,T", [(1, 1), (3, 7), (2, 45)])
def test_gate_scan_and_gather_equal_reference(B, T):
    """The two halves the encoder calls, with the host's read between them: the scan sizes
    nothing, and the gather takes x as a view over time (the lookahead copies after the real frames)."""
    raw = _gate(B, T, 5, seed=2).to(DEVICE)
    lengths = torch.tensor([T, T // 2, 0][:B], device=DEVICE)
    ref, got = compaction.gate_scan(raw, lengths, 0.6, 1, 4), tk.gate_scan(raw, lengths, 0.6, 1, 4)
    for name in ("keep", "index", "slot", "lengths", "longest"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    x = torch.randn(B, T + 3, 6, device=DEVICE)[:, 3:]
    t_out, = compaction.host_sizes(got)
    a, b = compaction.gather(x, ref, t_out), tk.gather(x, got, t_out)
    for name in ("x", "index", "valid", "lengths", "keep", "slot"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert t_out == int(ref.lengths.max()) and a.x.shape == (B, t_out, 6)


def test_gate_compact_threshold_one_keeps_every_valid_frame():
    raw = torch.full((2, 9, 3), -30.0, device=DEVICE)  # P(blank) ~ 1 everywhere
    x = torch.randn(2, 9, 4, device=DEVICE)
    got = tk.gate_compact(raw, x, torch.tensor([9, 4], device=DEVICE), 1.0, 0)
    assert got.lengths.tolist() == [9, 4] and torch.equal(got.x[0], x[0]) and torch.equal(got.x[1, :4], x[1, :4])
    assert tk.gate_compact(raw, x, torch.tensor([9, 4], device=DEVICE), 0.5, 3).x.shape == (2, 0, 4)


@pytest.mark.parametrize("B,T,V", [(1, 1, 2), (3, 7, 33), (2, 45, 130)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_scatter_back_equals_reference(B, T, V, dtype):
    raw = _gate(B, T, 3, seed=1).to(DEVICE)
    x = torch.randn(B, T, 8, device=DEVICE)
    c = compaction.gate_compact(raw, x, torch.tensor([T, T // 2, 1][:B], device=DEVICE), 0.6, 1)
    base = torch.randn(B, T, V).to(DEVICE, dtype)
    y = torch.randn(B, c.x.shape[1], V).to(DEVICE, dtype)
    assert torch.equal(tk.scatter_back(base, y, c), compaction.scatter_back(base, y, c))


@pytest.mark.parametrize("shape", [(1, 2), (3, 5, 3), (2, 7, 257), (5, 1100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_factorized_log_probs_equals_reference(shape, dtype):
    raw = (torch.randn(shape) * 4).to(DEVICE, dtype)
    ref = factorized.factorized_log_probs(raw.float())
    got = tk.factorized_log_probs(raw)
    assert got.dtype == dtype and got.shape == raw.shape
    torch.testing.assert_close(got.float(), ref, atol=TOL[dtype] * 10, rtol=TOL[dtype])


def test_factorized_log_probs_takes_views_over_time():
    """A streaming chunk whose frames all skip the top layers hands over a slice of the gate
    head's output (its real frames, without the lookahead copies): not contiguous."""
    raw = (torch.randn(3, 10, 7) * 4).to(DEVICE)[:, :6]
    assert not raw.is_contiguous()
    torch.testing.assert_close(tk.factorized_log_probs(raw), factorized.factorized_log_probs(raw),
                               atol=1e-4, rtol=1e-5)


def test_launchers_check_their_inputs():
    x = torch.randn(2, 6, 4, device=DEVICE)
    raw = torch.randn(2, 6, 3, device=DEVICE)
    n = torch.tensor([6, 6], device=DEVICE)
    with pytest.raises(ValueError, match="contiguous"):
        tk.gate_compact(raw, x.transpose(1, 2).contiguous().transpose(1, 2), n, 0.5, 1)
    ref = compaction.gate_compact(raw[:, :4], x[:, :4], n.clamp(max=4), 0.5, 1)  # views over time are fine
    got = tk.gate_compact(raw[:, :4], x[:, :4], n.clamp(max=4), 0.5, 1)
    assert torch.equal(got.x, ref.x) and torch.equal(got.slot, ref.slot)
    with pytest.raises(ValueError, match="float"):
        tk.gate_compact(raw, x.long(), n, 0.5, 1)
    with pytest.raises(ValueError, match="shapes"):
        tk.gate_compact(raw[:, :5].contiguous(), x, n, 0.5, 1)
    with pytest.raises(ValueError, match="backward"):
        tk.factorized_log_probs(raw.clone().requires_grad_())
    with pytest.raises(ValueError, match="V >= 2"):
        tk.factorized_log_probs(raw[..., :1].contiguous())
    c = compaction.gate_compact(raw, x, n, 0.5, 1)
    with pytest.raises(ValueError, match="shapes"):
        tk.scatter_back(raw, torch.randn(2, c.x.shape[1], 4, device=DEVICE), c)


@pytest.mark.parametrize("right_context", [0, 2])
def test_encoder_on_the_triton_ops_equals_the_reference(right_context):
    """With lookahead copies the kernels get the real frames as views of the longer sequence."""
    torch.manual_seed(0)
    ref = Encoder(tiny_config(vocab_size=12, right_context=right_context)).eval().to(DEVICE)
    feats, lengths = torch.randn(3, 90, 80, device=DEVICE), torch.tensor([90, 61, 30], device=DEVICE)
    skip = SkipOptions(0.5, 1)
    with torch.inference_mode():
        a = ref(feats, lengths, skip, hidden=True)
        state = StreamState.zeros(ref.cfg, 3, DEVICE)
        win, step = ref.subsampling.input_frames(4 + right_context), torch.full((3,), 4 + right_context, device=DEVICE)
        ca, _ = ref.forward_chunk(feats[:, :win], step, state, skip, hidden=True)
        ref.ops = K.load_triton_ops()
        b = ref(feats, lengths, skip, hidden=True)
        cb, _ = ref.forward_chunk(feats[:, :win], step, state, skip, hidden=True)
    assert 0 < int(a.top_mask.sum()) < int(lengths.sum() // 4)  # some frames skipped, some kept
    assert torch.equal(a.top_mask, b.top_mask) and torch.equal(ca.top_mask, cb.top_mask)
    torch.testing.assert_close(b.final.raw, a.final.raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cb.final.raw, ca.final.raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.top_out, a.top_out, atol=1e-5, rtol=1e-5)  # the second pass's input
    torch.testing.assert_close(cb.top_out, ca.top_out, atol=1e-5, rtol=1e-5)
    # a chunk in which every frame skips (threshold 0): its log-probs are the gate head's, as the
    # server reads them (`ops.log_probs`); this raised on CUDA with lookahead copies (2026-11-29)
    with torch.inference_mode():
        cz, _ = ref.forward_chunk(feats[:, :win], step, state, SkipOptions(0.0, 1))
        got = ref.ops.log_probs(cz.final.raw)
    assert int(cz.top_mask.sum()) == 0
    torch.testing.assert_close(got, K.REFERENCE.log_probs(cz.final.raw), atol=1e-4, rtol=1e-5)


def test_select_ops_uses_the_reference_on_cpu_and_warns_once_without_triton(monkeypatch):
    assert K.select_ops("cpu") is K.REFERENCE

    def missing():
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(K, "load_triton_ops", missing)
    monkeypatch.setattr(K, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert K.select_ops("cuda") is K.REFERENCE and K.select_ops("cuda:0") is K.REFERENCE
    assert len([w for w in caught if "Triton is not available" in str(w.message)]) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_full_size_kernels_on_gpu():
    B, T, D, V = 16, 1500, 256, 512
    raw = _gate(B, T, V, seed=3).cuda()
    x = torch.randn(B, T, D, device="cuda")
    n = torch.randint(T // 2, T + 1, (B,), device="cuda")
    ref = compaction.gate_compact(raw, x, n, 0.6, 1, 16)
    got = tk.gate_compact(raw, x, n, 0.6, 1, 16)
    assert torch.equal(got.x, ref.x) and torch.equal(got.slot, ref.slot)
    y = torch.randn(B, ref.x.shape[1], V, device="cuda")
    assert torch.equal(tk.scatter_back(raw, y, got), compaction.scatter_back(raw, y, ref))
    torch.testing.assert_close(tk.factorized_log_probs(raw), factorized.factorized_log_probs(raw),
                               atol=1e-4, rtol=1e-5)
