"""The linear-recurrence scan: the Triton kernels (forward and backward, through Triton's
interpreter on the CPU), the loop with its own backward (the CPU's training path) and the blocked
reference against the sequential one."""

import pytest
import torch

from asr_engine.lm.scan import linear_scan, scan_blocked, scan_loop, scan_sequential
from conftest import KERNEL_DEVICE

try:
    from asr_engine.lm.triton_scan import scan_forward, triton_linear_scan
except ImportError:  # no Triton: only the references are tested
    triton_linear_scan = None


def _inputs(B, T, D, dtype=torch.float32, seed=0, h0=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, T, D, generator=g).clamp(0.05, 1.0).to(device, dtype).requires_grad_()
    b = torch.randn(B, T, D, generator=g).to(device, dtype).requires_grad_()
    h = torch.randn(B, D, generator=g).to(device, dtype).requires_grad_() if h0 else None
    return a, b, h


def _grads(fn, a, b, h0, seed=1):
    out = fn(a, b, h0)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device, out.dtype)
    leaves = [t for t in (a, b, h0) if t is not None]
    return out, torch.autograd.grad((out.float() * w.float()).sum(), leaves)


def test_sequential_is_the_recurrence():
    a = torch.tensor([[[0.5], [0.25], [1.0]]])
    b = torch.tensor([[[1.0], [2.0], [-1.0]]])
    h = scan_sequential(a, b, torch.tensor([[4.0]]))
    assert h.flatten().tolist() == [3.0, 2.75, 1.75]  # 0.5*4+1, 0.25*3+2, 1*2.75-1


@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (2, 5, 3), (2, 33, 9), (3, 130, 70)])
@pytest.mark.parametrize("h0", [True, False])
def test_blocked_reference_equals_sequential_with_gradients(B, T, D, h0):
    a, b, h = _inputs(B, T, D, h0=h0)
    ref, gref = _grads(scan_sequential, a, b, h)
    got, ggot = _grads(scan_blocked, a, b, h)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    for x, y in zip(ggot, gref):
        torch.testing.assert_close(x, y, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (2, 5, 3), (3, 130, 70)])
@pytest.mark.parametrize("h0", [True, False])
def test_loop_scan_equals_sequential_forward_and_backward(B, T, D, h0):
    a, b, h = _inputs(B, T, D, h0=h0, seed=T)
    ref, gref = _grads(scan_sequential, a, b, h)
    got, ggot = _grads(scan_loop, a, b, h)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    for x, y in zip(ggot, gref):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_loop_scan_gradients_pass_gradcheck_in_fp64():
    a, b, h = _inputs(2, 9, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(scan_loop, (a, b, h))
    assert torch.autograd.gradcheck(lambda a, b: scan_loop(a, b), (a, b))


def test_loop_scan_fp16_computes_in_fp32_and_grads_only_what_is_asked():
    a, b, h = _inputs(2, 40, 16, dtype=torch.float16)
    got = scan_loop(a, b, h)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), scan_sequential(a.float(), b.float(), h.float()), atol=1e-2, rtol=1e-2)
    got.float().sum().backward()
    assert a.grad.dtype == b.grad.dtype == h.grad.dtype == torch.float16
    a, b, _ = _inputs(2, 5, 3, h0=False)
    (gb,) = torch.autograd.grad(scan_loop(a.detach(), b).sum(), [b])
    (ref,) = torch.autograd.grad(scan_sequential(a.detach(), b).sum(), [b])
    torch.testing.assert_close(gb, ref)
    assert scan_loop(a[:, :0], b[:, :0]).shape == (2, 0, 3)


needs_triton = pytest.mark.skipif(triton_linear_scan is None, reason="Triton is not installed")


@needs_triton
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (2, 5, 3), (2, 64, 9), (2, 65, 9), (3, 130, 70)])
@pytest.mark.parametrize("h0", [True, False])
def test_triton_scan_equals_reference_forward_and_backward(B, T, D, h0):
    a, b, h = _inputs(B, T, D, h0=h0, seed=T, device=KERNEL_DEVICE)
    ref, gref = _grads(scan_sequential, a, b, h)
    got, ggot = _grads(triton_linear_scan, a, b, h)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    for x, y in zip(ggot, gref):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@needs_triton
def test_triton_scan_fp16_computes_in_fp32():
    a, b, h = _inputs(2, 40, 16, dtype=torch.float16, device=KERNEL_DEVICE)
    ref = scan_sequential(a.float(), b.float(), h.float())
    got = triton_linear_scan(a, b, h)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), ref, atol=1e-2, rtol=1e-2)


@needs_triton
def test_triton_reverse_scan_is_the_backward_recurrence():
    a, g, _ = _inputs(2, 20, 4, h0=False, device=KERNEL_DEVICE)
    a, g = a.detach(), g.detach()
    dh = scan_forward(a, g, None, reverse=True, shift=1)
    expect = torch.zeros_like(g)
    acc = torch.zeros_like(g[:, 0])
    for t in reversed(range(20)):
        acc = g[:, t] + (a[:, t + 1] * acc if t + 1 < 20 else 0)
        expect[:, t] = acc
    torch.testing.assert_close(dh, expect)


@needs_triton
def test_triton_scan_refuses_bad_inputs_and_takes_empty_ones():
    a, b, _ = _inputs(2, 4, 3, device=KERNEL_DEVICE)
    a, b = a.detach(), b.detach()
    with pytest.raises(ValueError, match="both be"):
        scan_forward(a, b[:, :3], None)
    with pytest.raises(ValueError, match="float dtype"):
        scan_forward(a, b.double(), None)
    with pytest.raises(ValueError, match="contiguous"):
        scan_forward(a.transpose(1, 2).contiguous().transpose(1, 2), b, None)
    with pytest.raises(ValueError, match="h0"):
        scan_forward(a, b, torch.zeros(2, 4))
    assert scan_forward(a[:, :0].contiguous(), b[:, :0].contiguous(), None).shape == (2, 0, 3)


def test_linear_scan_on_cpu_trains_with_the_loop_and_infers_sequentially(monkeypatch):
    import asr_engine.lm.scan as scan

    a, b, h = _inputs(2, 20, 5)
    used = []
    for name in ("scan_loop", "scan_sequential"):
        fn = getattr(scan, name)
        monkeypatch.setattr(scan, name, lambda *x, fn=fn, name=name: used.append(name) or fn(*x))
    torch.testing.assert_close(linear_scan(a, b, h), scan_sequential(a, b, h))
    with torch.no_grad():
        torch.testing.assert_close(linear_scan(a, b, h), scan_sequential(a, b, h))
    assert used == ["scan_loop", "scan_sequential"]
