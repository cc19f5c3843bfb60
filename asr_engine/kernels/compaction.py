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


def compact(x: torch.Tensor, keep: torch.Tensor) -> Compacted:
    """x (B, T, D), keep (B, T) bool -> the kept rows in original order, left-aligned."""
    B, T = keep.shape
    lengths = keep.sum(1)  # (B,)
    t_out = int(lengths.max()) if B else 0
    # stable sort puts kept frames first, in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :t_out]  # (B, T')
    valid = torch.arange(t_out, device=x.device)[None, :] < lengths[:, None]  # (B, T')
    index = torch.where(valid, order, torch.zeros_like(order))
    xc = torch.gather(x, 1, index[:, :, None].expand(B, t_out, x.shape[2]))
    xc = xc.masked_fill(~valid[:, :, None], 0.0)
    slot = torch.where(keep, keep.long().cumsum(1) - 1, torch.full_like(keep, -1, dtype=torch.long))
    return Compacted(xc, index, valid, lengths, keep, slot)


def gate_compact(gate_raw: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor, threshold: float,
                 dilation: int, chunk: int | None = None) -> Compacted:
    """The whole gate in one call: gate_raw (B, T, V) the gating head's raw output
    (gate_raw[..., 0] the non-blank logit z, P(blank) = sigmoid(-z)), x (B, T, D) the frames,
    lengths (B,) valid frames per row -> the kept frames compacted (see keep_mask, compact).
    threshold >= 1.0 keeps every valid frame."""
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
    return compact(x, keep_mask(torch.sigmoid(-gate_raw[..., 0]), valid, threshold, dilation, chunk))


def scatter_back(base: torch.Tensor, y: torch.Tensor, c: Compacted) -> torch.Tensor:
    """base (B, T, V) the gating head's outputs, y (B, T', V) the top layers' outputs on the
    kept frames -> (B, T, V): y at the kept frames, base at the skipped ones."""
    B, t_out, V = y.shape
    # padding rows go to a scratch column T that is cut off afterwards
    index = torch.where(c.valid, c.index, torch.full_like(c.index, base.shape[1]))
    out = torch.cat([base, base.new_zeros(B, 1, V)], dim=1)
    out = out.scatter(1, index[:, :, None].expand(B, t_out, V), y)
    return out[:, :-1]
