"""The linear recurrence h_t = a_t * h_{t-1} + b_t over a sequence, elementwise per channel: the
core of a gated linear recurrent layer (GILR: a = g, b = (1 - g) * i).

Plain torch, the ground truth and the CPU path:
- `scan_sequential`: the recurrence as written, step by step (autograd through the loop);
- `scan_blocked`: the same values in blocks of `block` steps. Within a block, the prefix
  products of a are taken in log space and the sums as a cumulative sum, so a block is a few
  tensor ops instead of `block` Python steps; the state is carried from block to block. Exact
  up to rounding for 0 < a <= 1 (GILR's gates); a = 0 is clamped to a tiny positive value.
- `scan_loop`: the loop with a backward of its own, as the Triton kernels do it: the forward loop
  records nothing for autograd, and the backward is the same recurrence run from the end
  (dh_t = g_t + a_{t+1} * dh_{t+1}; grad b = dh, grad a_t = dh_t * h_{t-1}, grad h0 = a_0 * dh_0),
  in fp32 (or fp64). Two passes of T small steps, where the blocked form makes (B, block, block, D) tensors:
  an LM training step on the CPU takes less than half the time with it (bench/README.md, "lm").

`linear_scan` picks the Triton kernels (`triton_scan`) for CUDA tensors when Triton imports, and on
the CPU `scan_loop` for training, the sequential loop without gradients; all have gradients for a,
b and h0.

`gilr_step` is one step of the recurrence for decoding: N hypotheses each advance by one token
from a parent's state, picked by index (the beam's reorder), with the GILR gates applied to the
layer's pre-activations, h = g * h_src[idx] + (1 - g) * tanh(v), g = sigmoid(u). On CUDA it is
one Triton kernel (gather, gates and update fused); `gilr_step_reference` is the torch form.
"""

from __future__ import annotations

import torch

__all__ = ["gilr_step", "gilr_step_reference", "linear_scan", "scan_blocked", "scan_loop", "scan_sequential"]


def _check(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> None:
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"a and b must both be (B, T, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if h0 is not None and h0.shape != (a.shape[0], a.shape[2]):
        raise ValueError(f"h0 must be (B, D) = {(a.shape[0], a.shape[2])}, got {tuple(h0.shape)}")


def scan_sequential(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """a, b (B, T, D), h0 (B, D) or None (zeros) -> h (B, T, D)."""
    _check(a, b, h0)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(b.dtype)
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1) if out else torch.zeros_like(b)


def scan_blocked(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, block: int = 16) -> torch.Tensor:
    """Same values as scan_sequential for 0 < a <= 1, in blocks of `block` steps."""
    _check(a, b, h0)
    B, T, D = a.shape
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(b.dtype)
    out = []
    for s in range(0, T, block):
        la = torch.log(a[:, s: s + block].float().clamp_min(1e-30))
        cum = torch.cumsum(la, 1)  # log prod_{r<=t} a_r, within the block
        # h_t = P_t * h + sum_{s<=t} (P_t / P_s) * b_s, with P_t / P_s = exp(cum_t - cum_s) for s <= t
        decay = torch.exp((cum[:, :, None, :] - cum[:, None, :, :]).clamp_max(0.0))  # (B, t, s, D)
        n = la.shape[1]
        tri = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()[None, :, :, None]
        y = (torch.where(tri, decay, 0.0) * b[:, s: s + block, None, :].float().transpose(1, 2)).sum(2)
        y = y + torch.exp(cum) * h[:, None, :].float()
        y = y.to(b.dtype)
        out.append(y)
        h = y[:, -1]
    return torch.cat(out, 1) if out else torch.zeros_like(b)


class _LoopScan(torch.autograd.Function):
    """The loop forward and backward with the time axis first, so that each step reads and writes
    contiguous (B, D) rows; in fp32 at least (fp16 and bf16 inputs as the Triton kernels, fp64 in fp64)."""

    @staticmethod
    def forward(ctx, a, b, h0):
        ct = torch.promote_types(b.dtype, torch.float32)
        af, bf = a.to(ct).transpose(0, 1).contiguous(), b.to(ct).transpose(0, 1).contiguous()  # (T, B, D)
        h = torch.empty_like(bf)
        prev = bf.new_zeros(bf.shape[1:]) if h0 is None else h0.to(ct)
        for t in range(af.shape[0]):
            torch.addcmul(bf[t], af[t], prev, out=h[t])
            prev = h[t]
        ctx.save_for_backward(af, h, None if h0 is None else h0.to(ct))
        ctx.dtypes = (a.dtype, b.dtype, None if h0 is None else h0.dtype)
        return h.transpose(0, 1).to(b.dtype)

    @staticmethod
    def backward(ctx, grad_h):
        af, h, h0 = ctx.saved_tensors
        g = grad_h.to(h.dtype).transpose(0, 1).contiguous()
        dh = torch.empty_like(g)
        T = g.shape[0]
        if T:
            dh[T - 1] = g[T - 1]
        for t in range(T - 2, -1, -1):
            torch.addcmul(g[t], af[t + 1], dh[t + 1], out=dh[t])
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            first = torch.zeros_like(h[:1]) if h0 is None else h0[None]
            grad_a = (dh * torch.cat([first, h[:-1]], 0)).transpose(0, 1).to(ctx.dtypes[0])
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = (af[0] * dh[0]).to(ctx.dtypes[2]) if T else torch.zeros_like(h0).to(ctx.dtypes[2])
        grad_b = dh.transpose(0, 1).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, grad_h0


def scan_loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Same values as scan_sequential (computed in fp32 or wider, returned in b's dtype), with a backward of its own."""
    _check(a, b, h0)
    return _LoopScan.apply(a, b, h0)


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t (h_{-1} = h0, or zeros): Triton on CUDA; on the CPU `scan_loop` when
    gradients are needed (forward + backward 11x faster than the blocked form and 20x than autograd
    through the loop at 8x512x256: bench lm) and the sequential loop when not."""
    if a.is_cuda:
        try:
            from asr_engine.lm.triton_scan import triton_linear_scan
        except ImportError:
            return scan_loop(a, b, h0)
        return triton_linear_scan(a, b, h0)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, b, h0))
    return scan_loop(a, b, h0) if needs_grad else scan_sequential(a, b, h0)


def _check_step(uv: torch.Tensor, h_src: torch.Tensor, idx: torch.Tensor) -> None:
    if uv.dim() != 2 or h_src.dim() != 2 or uv.shape[1] != 2 * h_src.shape[1]:
        raise ValueError(f"uv must be (N, 2D) and h_src (M, D), got {tuple(uv.shape)} and {tuple(h_src.shape)}")
    if idx.shape != (uv.shape[0],) or idx.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"idx must be integer (N,) = ({uv.shape[0]},), got {tuple(idx.shape)} {idx.dtype}")


def gilr_step_reference(uv: torch.Tensor, h_src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """uv (N, 2D) gate pre-activations [u | v], h_src (M, D) parent states, idx (N,) the parent of each
    row -> the new states (N, D)."""
    _check_step(uv, h_src, idx)
    u, v = uv.chunk(2, dim=-1)
    g = torch.sigmoid(u)
    return g * h_src.index_select(0, idx) + (1 - g) * torch.tanh(v)


def gilr_step(uv: torch.Tensor, h_src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One decoding step of a GILR layer for N hypotheses: the Triton kernel on CUDA, the reference elsewhere."""
    if uv.is_cuda:
        try:
            from asr_engine.lm.triton_scan import triton_gilr_step
        except ImportError:
            return gilr_step_reference(uv, h_src, idx)
        return triton_gilr_step(uv, h_src, idx)
    return gilr_step_reference(uv, h_src, idx)
