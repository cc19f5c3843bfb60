"""The linear recurrence h_t = a_t * h_{t-1} + b_t over a sequence, elementwise per channel: the
core of a gated linear recurrent layer (GILR: a = g, b = (1 - g) * i).

Two plain-torch references, the ground truth and the CPU path:
- `scan_sequential`: the recurrence as written, step by step (autograd through the loop);
- `scan_blocked`: the same values in blocks of `block` steps. Within a block, the prefix
  products of a are taken in log space and the sums as a cumulative sum, so a block is a few
  tensor ops instead of `block` Python steps; the state is carried from block to block. Exact
  up to rounding for 0 < a <= 1 (GILR's gates); a = 0 is clamped to a tiny positive value.

`linear_scan` picks the Triton kernels (`triton_scan`) for CUDA tensors when Triton imports, and on
the CPU the blocked reference for training, the sequential one without gradients; all have
gradients for a, b and h0.

`gilr_step` is one step of the recurrence for decoding: N hypotheses each advance by one token
from a parent's state, picked by index (the beam's reorder), with the GILR gates applied to the
layer's pre-activations, h = g * h_src[idx] + (1 - g) * tanh(v), g = sigmoid(u). On CUDA it is
one Triton kernel (gather, gates and update fused); `gilr_step_reference` is the torch form.
"""

from __future__ import annotations

import torch

__all__ = ["gilr_step", "gilr_step_reference", "linear_scan", "scan_blocked", "scan_sequential"]


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


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t (h_{-1} = h0, or zeros): Triton on CUDA; on the CPU the blocked reference
    when gradients are needed (about 2x faster than the loop forward + backward) and the sequential one
    when not (about 15x faster forward only; see bench lm)."""
    if a.is_cuda:
        try:
            from asr_engine.lm.triton_scan import triton_linear_scan
        except ImportError:
            return scan_blocked(a, b, h0)
        return triton_linear_scan(a, b, h0)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, b, h0))
    return scan_blocked(a, b, h0) if needs_grad else scan_sequential(a, b, h0)


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
