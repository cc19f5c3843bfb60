"""Blank-gated stream compaction (reference implementation in plain torch).

Frames whose intermediate-head P(blank) exceeds a threshold are removed before the
top encoder layers; `compact` gathers the kept frames of a ragged batch into a dense
(B, T', D) tensor, and `scatter_back` writes the top layers' results back into the
full-length tensor that holds the intermediate outputs of the skipped frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compacted:
    """A compacted batch. x: (B, T', D); index: (B, T') original frame of each row
    (0 in padding); valid: (B, T') bool; lengths: (B,) kept frames per row;
    keep: (B, T) bool the kept frames; slot: (B, T) each kept frame's row in x, -1 if skipped."""

    x: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    lengths: torch.Tensor
    keep: torch.Tensor
    slot: torch.Tensor


def keep_mask(blank_prob: torch.Tensor, valid: torch.Tensor, threshold: float, dilation: int,
              chunk: int | None = None) -> torch.Tensor:
    """(B, T) P(blank), (B, T) valid -> (B, T) bool frames to run through the top layers.

    A frame is dropped when P(blank) > threshold, unless it lies within `dilation`
    frames of a kept one (so the context around every token stays). With `chunk`,
    dilation does not cross chunk boundaries (frame t is in chunk t // chunk), so a
    streaming decoder can decide a chunk without seeing the next one. threshold >= 1.0
    keeps every valid frame.
    """
    if not 0.0 <= threshold:
        raise ValueError(f"skip threshold must be >= 0, got {threshold}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0, got {dilation}")
    seed = (blank_prob <= threshold) & valid  # (B, T)
    keep = seed.clone()
    T = seed.shape[1]
    block = torch.arange(T, device=seed.device) // (chunk or max(T, 1))  # (T,)
    for d in range(1, min(dilation, T - 1) + 1):
        same = block[d:] == block[:-d]  # (T - d,) frames t and t - d share a chunk
        keep[:, d:] |= seed[:, :-d] & same
        keep[:, :-d] |= seed[:, d:] & same
    return keep & valid


@dataclass(frozen=True)
class Gated:
    """The gate's decision on the device, before any row of x moves. keep (B, T) bool the kept
    frames; index (B, T) each row's kept frames in order, then 0; slot (B, T) each kept frame's
    row in the compacted output, -1 if skipped; lengths (B,) kept frames per row; longest (1,) the
    largest of them: the one number the host must read to size the output (`host_sizes`)."""

    keep: torch.Tensor
    index: torch.Tensor
    slot: torch.Tensor
    lengths: torch.Tensor
    longest: torch.Tensor


def host_sizes(*gated: Gated, extra: torch.Tensor | None = None) -> list[int]:
    """The longest kept row of each gate, then the values of `extra` (integers the device computed
    from the gates, flattened), read to the host in one transfer: on a GPU each read waits for the
    device and leaves its launch queue empty, so a pass reads once."""
    parts = [g.longest for g in gated] + ([] if extra is None else [extra.flatten().to(torch.long)])
    return torch.cat(parts).tolist()


def gate_keep(keep: torch.Tensor) -> Gated:
    """keep (B, T) bool -> the compaction's plan: the kept frames first, in their original order."""
    B, T = keep.shape
    lengths = keep.sum(1)  # (B,)
    # stable sort puts kept frames first, in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # (B, T)
    index = torch.where(torch.arange(T, device=keep.device)[None, :] < lengths[:, None], order,
                        torch.zeros_like(order))
    slot = torch.where(keep, keep.long().cumsum(1) - 1, torch.full_like(keep, -1, dtype=torch.long))
    longest = lengths.amax(0, keepdim=True) if B else lengths.new_zeros(1)
    return Gated(keep, index, slot, lengths, longest)


def gather(x: torch.Tensor, g: Gated, t_out: int) -> Compacted:
    """x (B, T, D), g its gate, t_out >= g's longest row -> the kept rows, left-aligned in (B, t_out, D)."""
    B = x.shape[0]
    index = g.index[:, :t_out]
    valid = torch.arange(t_out, device=x.device)[None, :] < g.lengths[:, None]  # (B, T')
    xc = torch.gather(x, 1, index[:, :, None].expand(B, t_out, x.shape[2]))
    xc = xc.masked_fill(~valid[:, :, None], 0.0)
    return Compacted(xc, index, valid, g.lengths, g.keep, g.slot)


def compact(x: torch.Tensor, keep: torch.Tensor) -> Compacted:
    """x (B, T, D), keep (B, T) bool -> the kept rows in original order, left-aligned."""
    g = gate_keep(keep)
    return gather(x, g, *host_sizes(g))


def gate_scan(gate_raw: torch.Tensor, lengths: torch.Tensor, threshold: float, dilation: int,
              chunk: int | None = None) -> Gated:
    """The gate alone: gate_raw (B, T, V) the gating head's raw output (gate_raw[..., 0] the
    non-blank logit z, P(blank) = sigmoid(-z)), lengths (B,) valid frames per row -> which frames
    are kept (see keep_mask) and where they go. threshold >= 1.0 keeps every valid frame."""
    valid = torch.arange(gate_raw.shape[1], device=gate_raw.device)[None, :] < lengths[:, None]  # (B, T)
    return gate_keep(keep_mask(torch.sigmoid(-gate_raw[..., 0]), valid, threshold, dilation, chunk))


def gate_compact(gate_raw: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor, threshold: float,
                 dilation: int, chunk: int | None = None) -> Compacted:
    """The whole gate in one call: gate_scan, then the gather of x (B, T, D) -> the kept frames compacted."""
    g = gate_scan(gate_raw, lengths, threshold, dilation, chunk)
    return gather(x, g, *host_sizes(g))


def scatter_back(base: torch.Tensor, y: torch.Tensor, c: Compacted) -> torch.Tensor:
    """base (B, T, V) the gating head's outputs, y (B, T', V) the top layers' outputs on the
    kept frames -> (B, T, V): y at the kept frames, base at the skipped ones."""
    B, t_out, V = y.shape
    # padding rows go to a scratch column T that is cut off afterwards
    index = torch.where(c.valid, c.index, torch.full_like(c.index, base.shape[1]))
    out = torch.cat([base, base.new_zeros(B, 1, V)], dim=1)
    out = out.scatter(1, index[:, :, None].expand(B, t_out, V), y)
    return out[:, :-1]
