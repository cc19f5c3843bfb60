"""Streaming state: the caches of B streams as a few fixed-shape tensors, batch first.

The encoder's `forward_chunk` consumes one chunk of C encoder frames per stream and
returns a new state; nothing grows with the stream length. Per layer it keeps the
keys/values of the last W = left_chunks * chunk_size frames that layer saw (for the
top layers, only frames that were not skipped) and the last K-1 inputs of the causal
depthwise convolution. Positions are absolute frame indices, but attention only uses
differences between them, so rotary angles stay small however long the stream runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asr_engine.model.config import ModelConfig
from asr_engine.model.layers import KVCache

__all__ = ["StreamState"]


@dataclass(frozen=True)
class StreamState:
    """k, v: (B, L, H, W, E) un-rotated keys/values; kv_pos, kv_valid: (B, L, W);
    conv: (B, L, K-1, D) depthwise-conv inputs; offset: (B,) encoder frames consumed."""

    k: torch.Tensor
    v: torch.Tensor
    kv_pos: torch.Tensor
    kv_valid: torch.Tensor
    conv: torch.Tensor
    offset: torch.Tensor

    @staticmethod
    def zeros(cfg: ModelConfig, batch: int = 1, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> "StreamState":
        if cfg.left_chunks is None:
            raise ValueError("streaming needs a bounded left context: the model has left_chunks=None")
        L, H, E, D = cfg.n_layers, cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.d_model
        W = cfg.left_chunks * cfg.chunk_size
        return StreamState(
            k=torch.zeros(batch, L, H, W, E, device=device, dtype=dtype),
            v=torch.zeros(batch, L, H, W, E, device=device, dtype=dtype),
            kv_pos=torch.zeros(batch, L, W, device=device, dtype=torch.long),
            kv_valid=torch.zeros(batch, L, W, device=device, dtype=torch.bool),
            conv=torch.zeros(batch, L, cfg.conv_kernel - 1, D, device=device, dtype=dtype),
            offset=torch.zeros(batch, device=device, dtype=torch.long))

    @staticmethod
    def stack(states: list["StreamState"]) -> "StreamState":
        """Concatenate the streams of several states (each with any batch size) into one batch."""
        if not states:
            raise ValueError("stack needs at least one state")
        return StreamState(*(torch.cat(ts, 0) for ts in zip(*(_fields(s) for s in states))))

    def select(self, rows: list[int] | torch.Tensor) -> "StreamState":
        """The streams at `rows`, as a new state."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.offset.device)
        return StreamState(*(t.index_select(0, idx) for t in _fields(self)))

    def layer(self, i: int) -> tuple[KVCache, torch.Tensor]:
        """Layer i's (0-based) attention cache and conv cache (B, K-1, D)."""
        return (KVCache(self.k[:, i], self.v[:, i], self.kv_pos[:, i], self.kv_valid[:, i]),
                self.conv[:, i])

    @staticmethod
    def from_layers(kv: list[KVCache], conv: list[torch.Tensor], offset: torch.Tensor) -> "StreamState":
        return StreamState(torch.stack([c.k for c in kv], 1), torch.stack([c.v for c in kv], 1),
                           torch.stack([c.pos for c in kv], 1), torch.stack([c.valid for c in kv], 1),
                           torch.stack(conv, 1), offset)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in _fields(self))


def _fields(s: StreamState) -> tuple[torch.Tensor, ...]:
    return (s.k, s.v, s.kv_pos, s.kv_valid, s.conv, s.offset)
