"""The linear recurrence h_t = a_t * h_{t-1} + b_t over a sequence, elementwise per channel: the
core of a gated linear recurrent layer (GILR: a = g, b = (1 - g) * i).

Two plain-torch references, the ground truth and the CPU path:
- `scan_sequential`: the recurrence as written, step by step (autograd through the loop);
- `scan_blocked`: the same values in blocks of `block` steps. Within a block, the prefix
  products of a are taken in log space and the sums as a cumulative sum, so a block is a few
  tensor ops instead of `block` Python steps; the state is carried from block to block. Exact
  up to rounding for 0 < a <= 1 (GILR's gates); a = 0 is clamped to a tiny positive value.

`linear_scan` picks the Triton kernels (`triton_scan`) for CUDA tensors when Triton imports, the
blocked reference otherwise; both have gradients for a, b and h0.
"""

from __future__ import annotations

import torch

__all__ = ["linear_scan", "scan_blocked", "scan_sequential"]


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
    """h_t = a_t * h_{t-1} + b_t (h_{-1} = h0, or zeros): Triton on CUDA, the blocked reference elsewhere."""
    if a.is_cuda:
        try:
            from asr_engine.kernels.triton_scan import triton_linear_scan
        except ImportError:
            return scan_blocked(a, b, h0)
        return triton_linear_scan(a, b, h0)
    return scan_blocked(a, b, h0)
