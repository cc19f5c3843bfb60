"""Triton kernels for the layer-skipping path, each equal to its reference in
`compaction.py` / `factorized.py`:

- `gate_scan` and `gather` (`gate_compact` is both): the blank gate over a ragged batch
  (P(blank) from the gating head, threshold, chunk-local dilation, the kept-frame indices by
  a running prefix sum), then the gather of the kept rows once the host knows the longest;
- `scatter_back`: the merge of the top layers' outputs (kept frames) with the gating head's
  (skipped frames), written once per output row;
- `factorized_log_probs`: blank sigmoid + token log-softmax of a factorized-CTC head.

Inference only (no backward): training uses the references. The launchers check shapes,
dtypes, devices and contiguity. Tensors must be on CUDA, or on the CPU when the
interpreter runs (TRITON_INTERPRET=1 set before this module is imported).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from asr_engine.kernels.compaction import Compacted, Gated, host_sizes

__all__ = ["gate_compact", "gate_scan", "gather", "scatter_back", "factorized_log_probs", "INTERPRETED"]

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _gate_scan_kernel(raw_ptr, raw_sb, raw_st, len_ptr, index_ptr, slot_ptr, keep_ptr, count_ptr, T, threshold,
                      chunk, DILATION: tl.constexpr, BLOCK_T: tl.constexpr):
    """One program per row: the gate of every frame and the kept frames' slots by a running prefix sum,
    the row's kept count, and the batch's largest count (count_ptr[B], by an atomic max; zeroed before).
    It touches B x T scalars only; the rows of x move in _gather_rows_kernel, over the whole grid."""
    b = tl.program_id(0).to(tl.int64)
    n = tl.minimum(tl.maximum(tl.load(len_ptr + b).to(tl.int64), 0), T)
    base = tl.zeros([], dtype=tl.int64)  # kept frames of this row before the current tile
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
        keep = tl.zeros([BLOCK_T], dtype=tl.int32)
        for i in tl.static_range(2 * DILATION + 1):  # frame t is kept if a frame t + d of its chunk is a seed
            s = t + (i - DILATION)
            near = (s >= 0) & (s < n) & (t < n) & (s // chunk == t // chunk)
            z = tl.load(raw_ptr + b * raw_sb + s * raw_st, mask=near, other=0.0).to(tl.float32)
            keep = keep | (near & (tl.sigmoid(-z) <= threshold)).to(tl.int32)
        slot = base + tl.cumsum(keep, 0).to(tl.int64) - 1  # (BLOCK_T,) row in the compacted output
        kept = keep == 1
        in_t = t < T
        tl.store(keep_ptr + b * T + t, keep.to(tl.int8), mask=in_t)
        tl.store(slot_ptr + b * T + t, tl.where(kept, slot, -1), mask=in_t)
        tl.store(index_ptr + b * T + slot, t.to(tl.int64), mask=kept)
        base += tl.sum(keep, 0).to(tl.int64)
    for t0 in range(0, T, BLOCK_T):  # index is 0 in the padding after the kept frames
        t = t0 + tl.arange(0, BLOCK_T)
        tl.store(index_ptr + b * T + t, tl.zeros([BLOCK_T], dtype=tl.int64), mask=(t >= base) & (t < T))
    tl.store(count_ptr + b, base)
    tl.atomic_max(count_ptr + tl.num_programs(0), base)


@triton.jit
def _gather_rows_kernel(x_ptr, x_sb, x_st, index_ptr, count_ptr, out_ptr, valid_ptr, T, T_out, D,
                        BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Grid (B, T_out tiles, D tiles): compacted row s of batch row b is x[b, index[b, s]] for s < count[b],
    zeros after it; the first D tile also writes valid[b, s] = s < count[b]."""
    b = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    n = tl.load(count_ptr + b)
    in_s = s < T_out
    kept = s < n
    src = tl.load(index_ptr + b * T + s, mask=kept, other=0)
    in_d = d[None, :] < D
    rows = tl.load(x_ptr + b * x_sb + src[:, None] * x_st + d[None, :], mask=kept[:, None] & in_d, other=0.0)
    tl.store(out_ptr + (b * T_out + s[:, None]) * D + d[None, :], rows, mask=in_s[:, None] & in_d)
    if tl.program_id(2) == 0:
        tl.store(valid_ptr + b * T_out + s, kept.to(tl.int8), mask=in_s)


@triton.jit
def _scatter_back_kernel(base_ptr, base_sb, base_st, y_ptr, slot_ptr, out_ptr, T, T_out, V,
                         BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    in_t = t < T
    slot = tl.load(slot_ptr + b * T + t, mask=in_t, other=-1)
    kept = slot >= 0
    for v0 in range(0, V, BLOCK_V):
        v = v0 + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
        in_v = v[None, :] < V
        top = tl.load(y_ptr + (b * T_out + slot[:, None]) * V + v[None, :], mask=kept[:, None] & in_v)
        gate = tl.load(base_ptr + b * base_sb + t[:, None] * base_st + v[None, :],
                       mask=(~kept[:, None]) & in_t[:, None] & in_v)
        tl.store(out_ptr + (b * T + t[:, None]) * V + v[None, :], tl.where(kept[:, None], top, gate),
                 mask=in_t[:, None] & in_v)


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _factorized_kernel(raw_ptr, out_ptr, N, V, ROWS: tl.constexpr, BLOCK_V: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    in_r = r < N
    z = tl.load(raw_ptr + r * V, mask=in_r, other=0.0).to(tl.float32)  # (ROWS,) non-blank logit
    # online log-sum-exp of the token logits v = raw[:, 1:]
    m = tl.full([ROWS], -float("inf"), tl.float32)
    acc = tl.zeros([ROWS], dtype=tl.float32)
    for v0 in range(1, V, BLOCK_V):
        v = v0 + tl.arange(0, BLOCK_V)
        mask = in_r[:, None] & (v[None, :] < V)
        x = tl.load(raw_ptr + r[:, None] * V + v[None, :], mask=mask, other=-float("inf")).to(tl.float32)
        x = tl.where(in_r[:, None], x, 0.0)  # rows past N: finite, so no inf - inf
        m_new = tl.maximum(m, tl.max(x, 1))
        acc = acc * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), 1)
        m = m_new
    token_shift = -_softplus(-z) - (m + tl.log(acc))  # logsigmoid(z) - logsumexp(v)
    tl.store(out_ptr + r * V, (-_softplus(z)).to(out_ptr.dtype.element_ty), mask=in_r)
    for v0 in range(1, V, BLOCK_V):
        v = v0 + tl.arange(0, BLOCK_V)
        mask = in_r[:, None] & (v[None, :] < V)
        x = tl.load(raw_ptr + r[:, None] * V + v[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + r[:, None] * V + v[None, :], (x + token_shift[:, None]).to(out_ptr.dtype.element_ty),
                 mask=mask)


def _check_device(*tensors: torch.Tensor) -> None:
    dev = tensors[0].device
    if any(t.device != dev for t in tensors):
        raise ValueError(f"tensors on different devices: {[str(t.device) for t in tensors]}")
    if dev.type != "cuda" and not INTERPRETED:
        raise ValueError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {dev}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError("the Triton kernels have no backward: use the reference ops for training")


def _check_float(name: str, t: torch.Tensor, ndim: int, rows: bool = False) -> None:
    """A float tensor of ndim dims, contiguous (rows: only along its last dim)."""
    if t.dim() != ndim or t.dtype not in _FLOATS:
        raise ValueError(f"{name}: expected a {ndim}-d float32/float16/bfloat16 tensor, "
                         f"got {tuple(t.shape)} {t.dtype}")
    if not (t.stride(-1) == 1 or t.shape[-1] == 1) if rows else not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous" + (" in its last dim" if rows else ""))


def gate_scan(gate_raw: torch.Tensor, lengths: torch.Tensor, threshold: float, dilation: int,
              chunk: int | None = None) -> Gated:
    """Same contract as compaction.gate_scan: gate_raw (B, T, V), lengths (B,); gate_raw may be a
    view over the time axis (the real frames of a longer sequence that ends in lookahead copies).
    Two launches (the counts zeroed, the scan) and no host read."""
    _check_float("gate_raw", gate_raw, 3, rows=True)
    _check_device(gate_raw, lengths)
    B, T, _ = gate_raw.shape
    if lengths.shape != (B,):
        raise ValueError(f"shapes: gate_raw {tuple(gate_raw.shape)}, lengths {tuple(lengths.shape)} "
                         "(want (B, T, V), (B,))")
    if threshold < 0 or dilation < 0:
        raise ValueError(f"threshold and dilation must be >= 0, got {threshold}, {dilation}")
    dev = gate_raw.device
    index = torch.empty(B, T, dtype=torch.long, device=dev)
    slot = torch.empty(B, T, dtype=torch.long, device=dev)
    keep = torch.empty(B, T, dtype=torch.bool, device=dev)
    counts = torch.zeros(B + 1, dtype=torch.long, device=dev)  # B counts, then the largest
    if B and T:  # else index, slot and keep are empty and the counts stay 0
        _gate_scan_kernel[(B,)](
            gate_raw, gate_raw.stride(0), gate_raw.stride(1), lengths.contiguous(), index, slot,
            keep.view(torch.int8), counts, T, float(min(threshold, 1.0)), chunk or T,
            DILATION=min(dilation, max(T - 1, 0)), BLOCK_T=min(triton.next_power_of_2(T), 128))
    return Gated(keep, index, slot, counts[:B], counts[B:])


def gather(x: torch.Tensor, g: Gated, t_out: int) -> Compacted:
    """Same contract as compaction.gather: x (B, T, D) (a view over time is fine: only each frame's
    row must be contiguous), t_out the longest kept row (read by the host) -> the kept rows. One launch."""
    _check_float("x", x, 3, rows=True)
    _check_device(x, g.index)
    B, T, D = x.shape
    if g.index.shape != (B, T):
        raise ValueError(f"shapes: x {tuple(x.shape)}, the gate's index {tuple(g.index.shape)} (want (B, T))")
    dev = x.device
    out = torch.empty(B, t_out, D, dtype=x.dtype, device=dev)
    valid = torch.empty(B, t_out, dtype=torch.bool, device=dev)
    if out.numel():
        block_t, block_d = 16, min(triton.next_power_of_2(D), 128)
        _gather_rows_kernel[(B, triton.cdiv(t_out, block_t), triton.cdiv(D, block_d))](
            x, x.stride(0), x.stride(1), g.index, g.lengths, out, valid.view(torch.int8), T, t_out, D,
            BLOCK_T=block_t, BLOCK_D=block_d)
    elif valid.numel():  # D == 0
        valid.copy_(torch.arange(t_out, device=dev)[None, :] < g.lengths[:, None])
    return Compacted(out, g.index[:, :t_out], valid, g.lengths, g.keep, g.slot)


def gate_compact(gate_raw: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor, threshold: float,
                 dilation: int, chunk: int | None = None) -> Compacted:
    """Same contract as compaction.gate_compact: gate_raw (B, T, V), x (B, T, D), lengths (B,), both
    views over time or not. Three launches (a memset of the counts, the scan, the gather) and one
    host read, of the longest compacted row, which sizes the output. gate_scan and gather check their inputs."""
    g = gate_scan(gate_raw, lengths, threshold, dilation, chunk)
    return gather(x, g, *host_sizes(g))


def scatter_back(base: torch.Tensor, y: torch.Tensor, c: Compacted) -> torch.Tensor:
    """Same contract as compaction.scatter_back: base (B, T, V), y (B, T', V) -> (B, T, V).
    base may be a view over the time axis (only its rows must be contiguous)."""
    _check_float("base", base, 3, rows=True)
    _check_float("y", y, 3)
    _check_device(base, y, c.slot)
    B, T, V = base.shape
    if y.shape[0] != B or y.shape[2] != V or c.slot.shape != (B, T) or y.dtype != base.dtype:
        raise ValueError(f"shapes: base {tuple(base.shape)} {base.dtype}, y {tuple(y.shape)} {y.dtype}, "
                         f"slot {tuple(c.slot.shape)}")
    out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
    if out.numel():
        block_t = min(triton.next_power_of_2(T), 32)
        _scatter_back_kernel[(B, triton.cdiv(T, block_t))](
            base, base.stride(0), base.stride(1), y, c.slot.contiguous(), out, T, y.shape[1], V, BLOCK_T=block_t,
            BLOCK_V=min(triton.next_power_of_2(V), 128))
    return out


def factorized_log_probs(raw: torch.Tensor) -> torch.Tensor:
    """Same contract as factorized.factorized_log_probs: raw (..., V) -> log-probs (..., V)."""
    if raw.dtype not in _FLOATS or raw.dim() < 1 or raw.shape[-1] < 2:
        raise ValueError(f"raw: expected a float tensor (..., V) with V >= 2, got {tuple(raw.shape)} {raw.dtype}")
    _check_device(raw)
    # the kernel reads dense rows; a view (a chunk whose every frame skipped the top layers hands
    # over the gate head's output on its real frames, a slice of the sequence with its lookahead
    # copies) is copied once, as the reference takes any layout
    raw = raw.contiguous()
    V = raw.shape[-1]
    N = raw.numel() // V
    out = torch.empty_like(raw)
    if N:
        rows = 4
        _factorized_kernel[(triton.cdiv(N, rows),)](raw, out, N, V, ROWS=rows,
                                                    BLOCK_V=min(triton.next_power_of_2(V - 1), 1024))
    return out
