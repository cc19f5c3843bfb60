"""Triton kernels for the linear recurrence h_t = a_t * h_{t-1} + b_t (see scan.py), forward and
backward, as a torch autograd Function.

One program per (sequence, block of channels) walks the sequence in tiles of BLOCK_T steps. Within
a tile the steps combine by a parallel associative scan over the pairs (a, b), composed as affine
maps: (a1, b1) then (a2, b2) = (a1 * a2, a2 * b1 + b2); the state enters the tile from the
previous one. Arithmetic is fp32 whatever the storage dtype.

The backward pass is the same scan run from the end: with g the gradient of h,
dh_t = g_t + a_{t+1} * dh_{t+1}, so grad b = dh, grad a_t = dh_t * h_{t-1}, grad h0 = a_0 * dh_0.

`triton_gilr_step` is the decoding step (see scan.gilr_step): one program per (hypothesis, block of
channels) loads its parent's state by index, applies the gates and writes the new state, so the
beam's reorder, the gates and the update are one pass over memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["scan_forward", "triton_gilr_step", "triton_linear_scan"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _compose(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan_kernel(a_ptr, b_ptr, h0_ptr, out_ptr, T, D, HAS_H0: tl.constexpr, REVERSE: tl.constexpr,
                 SHIFT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """out_t = c_t * out_{t-1} + b_t in scan order (t ascending, or descending with REVERSE), where the
    coefficient c_t is a[t + SHIFT] (0 past the end): SHIFT=1 with REVERSE is the backward recurrence."""
    seq = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = seq.to(tl.int64) * T * D
    if HAS_H0:
        carry = tl.load(h0_ptr + seq * D + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK_D], dtype=tl.float32)
    steps = tl.arange(0, BLOCK_T)
    for start in range(0, T, BLOCK_T):
        k = start + steps  # position in scan order
        if REVERSE:
            t = T - 1 - k
        else:
            t = k
        m = (k < T)[:, None] & cmask[None, :]
        ta = t + SHIFT
        a = tl.load(a_ptr + base + ta[:, None] * D + cols[None, :], mask=m & (ta < T)[:, None], other=0.0)
        b = tl.load(b_ptr + base + t[:, None] * D + cols[None, :], mask=m, other=0.0)
        ca, cb = tl.associative_scan((a.to(tl.float32), b.to(tl.float32)), 0, _compose)
        h = ca * carry[None, :] + cb
        tl.store(out_ptr + base + t[:, None] * D + cols[None, :], h.to(out_ptr.dtype.element_ty), mask=m)
        last = tl.minimum(T - start, BLOCK_T) - 1
        carry = tl.sum(tl.where((steps == last)[:, None], h, 0.0), axis=0)


def scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool = False,
                 shift: int = 0) -> torch.Tensor:
    """Launch the scan: a, b (B, T, D) contiguous, same dtype and device; h0 (B, D) or None."""
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"a and b must both be (B, T, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype not in _FLOATS or b.dtype != a.dtype:
        raise ValueError(f"a and b must share a float dtype, got {a.dtype} and {b.dtype}")
    if not (a.is_contiguous() and b.is_contiguous()):
        raise ValueError("a and b must be contiguous")
    if h0 is not None and (h0.shape != (a.shape[0], a.shape[2]) or not h0.is_contiguous()):
        raise ValueError(f"h0 must be contiguous (B, D) = {(a.shape[0], a.shape[2])}, got {tuple(h0.shape)}")
    if any(t.device != a.device for t in (b, *(() if h0 is None else (h0,)))):
        raise ValueError("a, b and h0 must be on one device")
    B, T, D = a.shape
    out = torch.empty_like(b)
    if out.numel():
        block_d = min(triton.next_power_of_2(D), 64)
        _scan_kernel[(B, triton.cdiv(D, block_d))](
            a, b, h0 if h0 is not None else a, out, T, D, HAS_H0=h0 is not None, REVERSE=reverse, SHIFT=shift,
            BLOCK_T=min(triton.next_power_of_2(T), 64), BLOCK_D=block_d)
    return out


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0):
        a, b = a.contiguous(), b.contiguous()
        h0c = None if h0 is None else h0.to(b.dtype).contiguous()
        h = scan_forward(a, b, h0c)
        ctx.save_for_backward(a, h, h0c)
        ctx.has_h0 = h0 is not None
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        dh = scan_forward(a, grad_h.contiguous().to(h.dtype), None, reverse=True, shift=1)
        first = h0[:, None] if h0 is not None else torch.zeros_like(h[:, :1])
        h_prev = torch.cat([first, h[:, :-1]], 1)
        grad_a = dh * h_prev
        grad_h0 = a[:, 0] * dh[:, 0] if ctx.has_h0 else None
        return grad_a, dh, grad_h0


def triton_linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t with gradients for a, b and h0, on Triton kernels."""
    return _LinearScan.apply(a, b, h0)


@triton.jit
def _gilr_step_kernel(uv_ptr, h_ptr, idx_ptr, out_ptr, D, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    m = cols < D
    src = tl.load(idx_ptr + row).to(tl.int64)
    base = row.to(tl.int64) * 2 * D
    u = tl.load(uv_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
    v = tl.load(uv_ptr + base + D + cols, mask=m, other=0.0).to(tl.float32)
    h = tl.load(h_ptr + src * D + cols, mask=m, other=0.0).to(tl.float32)
    g = tl.sigmoid(u)
    i = 2.0 * tl.sigmoid(2.0 * v) - 1.0  # tanh
    tl.store(out_ptr + row.to(tl.int64) * D + cols, (g * h + (1.0 - g) * i).to(out_ptr.dtype.element_ty), mask=m)


def triton_gilr_step(uv: torch.Tensor, h_src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """uv (N, 2D), h_src (M, D), idx (N,) -> new states (N, D) in uv's dtype (fp32 arithmetic)."""
    from asr_engine.lm.scan import _check_step

    _check_step(uv, h_src, idx)
    if uv.dtype not in _FLOATS or h_src.dtype not in _FLOATS:
        raise ValueError(f"uv and h_src must be float, got {uv.dtype} and {h_src.dtype}")
    if h_src.device != uv.device or idx.device != uv.device:
        raise ValueError("uv, h_src and idx must be on one device")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= h_src.shape[0]):
        raise IndexError(f"idx must lie in [0, {h_src.shape[0]})")
    uv, h_src, idx = uv.contiguous(), h_src.contiguous(), idx.contiguous()
    N, D = uv.shape[0], h_src.shape[1]
    out = torch.empty(N, D, dtype=uv.dtype, device=uv.device)
    if out.numel():
        block_d = min(triton.next_power_of_2(D), 256)
        _gilr_step_kernel[(N, triton.cdiv(D, block_d))](uv, h_src, idx, out, D, BLOCK_D=block_d)
    return out
