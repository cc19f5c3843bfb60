"""Streaming state: the caches of B streams as a few fixed-shape arrays, batch first.

The encoder's `forward_chunk` consumes one chunk of C encoder frames per stream and
returns a new state; nothing grows with the stream length. Per layer it keeps the
keys/values of the last W = left_chunks * chunk_size frames that layer saw (for the
top layers, only frames that were not skipped) and the last K-1 inputs of the causal
depthwise convolution. Positions are absolute frame indices, but attention only uses
differences between them, so rotary angles stay small however long the stream runs.

One layout serves both backends: torch tensors for the torch encoder, numpy arrays for
the ONNX runtime, whose stage caches (`cache_k`, ... of bottom.onnx and top.onnx) are
`stage(0, skip_layer)` and `stage(skip_layer, n_layers)` of it. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from asr_engine.model.config import ModelConfig

__all__ = ["CACHE_FIELDS", "StatePool", "StateRows", "StreamState"]

CACHE_FIELDS = ("k", "v", "kv_pos", "kv_valid", "conv")  # per stage: (B, L_stage, ...)


@dataclass(frozen=True)
class StreamState:
    """k, v: (B, L, H, W, E) un-rotated keys/values; kv_pos, kv_valid: (B, L, W);
    conv: (B, L, K-1, D) depthwise-conv inputs; offset: (B,) encoder frames consumed.
    All torch tensors or all numpy arrays."""

    k: Any
    v: Any
    kv_pos: Any
    kv_valid: Any
    conv: Any
    offset: Any

    @staticmethod
    def shapes(cfg: ModelConfig, batch: int = 1) -> dict[str, tuple[tuple[int, ...], str]]:
        """Each field's shape and kind ('float', 'int' or 'bool')."""
        if cfg.left_chunks is None:
            raise ValueError("streaming needs a bounded left context: the model has left_chunks=None")
        L, H, E, D = cfg.n_layers, cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.d_model
        W = cfg.left_chunks * cfg.chunk_size
        return {"k": ((batch, L, H, W, E), "float"), "v": ((batch, L, H, W, E), "float"),
                "kv_pos": ((batch, L, W), "int"), "kv_valid": ((batch, L, W), "bool"),
                "conv": ((batch, L, cfg.conv_kernel - 1, D), "float"), "offset": ((batch,), "int")}

    @staticmethod
    def zeros(cfg: ModelConfig, batch: int = 1, device="cpu", dtype=None) -> "StreamState":
        """Torch tensors on `device` (floats in `dtype`, default float32)."""
        import torch

        kinds = {"float": dtype or torch.float32, "int": torch.long, "bool": torch.bool}
        return StreamState(**{name: torch.zeros(shape, device=device, dtype=kinds[kind])
                              for name, (shape, kind) in StreamState.shapes(cfg, batch).items()})

    @staticmethod
    def zeros_numpy(cfg: ModelConfig, batch: int = 1) -> "StreamState":
        kinds = {"float": np.float32, "int": np.int64, "bool": np.bool_}
        return StreamState(**{name: np.zeros(shape, kinds[kind])
                              for name, (shape, kind) in StreamState.shapes(cfg, batch).items()})

    @staticmethod
    def stack(states: list["StreamState"]) -> "StreamState":
        """Concatenate the streams of several states (each with any batch size) into one batch."""
        if not states:
            raise ValueError("stack needs at least one state")
        return StreamState(*(_cat(ts, 0) for ts in zip(*(s.fields() for s in states))))

    def select(self, rows: list[int]) -> "StreamState":
        """The streams at `rows`, as a new state."""
        idx = self._rows(rows)
        return StreamState(*(t[idx] for t in self.fields()))

    def _rows(self, rows):
        """`rows` (a list, or an index this made) as an index of the batch axis: the list for numpy, one
        tensor on the device for torch (indexing with a list would copy it to the device once per field)."""
        if isinstance(self.offset, np.ndarray) or not isinstance(rows, list):
            return rows
        import torch

        return torch.as_tensor(rows, dtype=torch.long, device=self.offset.device)

    def stage(self, lo: int, hi: int) -> tuple:
        """The caches of layers lo..hi-1 (0-based), in CACHE_FIELDS order: an export stage's cache inputs."""
        return tuple(t[:, lo:hi] for t in self.fields()[:-1])

    def without_window(self) -> "StreamState":
        """The state with attention caches of no frames (W = 0): for streams that start and end in one step,
        which have no earlier frames to attend to (a graph whose cache window is dynamic takes it, and then
        attends to the step's own frames only)."""
        return StreamState(self.k[:, :, :, :0], self.v[:, :, :, :0], self.kv_pos[:, :, :0], self.kv_valid[:, :, :0],
                           self.conv, self.offset)

    @staticmethod
    def from_stages(bottom: tuple, top: tuple, offset) -> "StreamState":
        """A state from the two stages' new caches (CACHE_FIELDS order) and the new offset."""
        return StreamState(*(_cat([b, t], 1) for b, t in zip(bottom, top)), offset)

    def fields(self) -> tuple:
        return (self.k, self.v, self.kv_pos, self.kv_valid, self.conv, self.offset)

    def nbytes(self) -> int:
        return sum(t.nbytes if isinstance(t, np.ndarray) else t.numel() * t.element_size() for t in self.fields())


class StatePool:
    """Many streams' states as one StreamState, a row (a slot) each: a step gathers its streams' rows
    and writes their new states back with one op a field each way. A state per stream cost one op a
    field and stream each way: on a GPU a launch each, about 200 a step for 32 streams, more than the
    rest of a step run as captured graphs. Torch tensors or numpy arrays, as `zeros(n)` makes them;
    it grows by doubling, and goes back to its first size when a stream comes to it empty (a server
    at peak holds 3 MB a stream of the bundled model). One thread takes, gathers and puts (the
    engine's); a slot may be released from another (a server closes sessions on its event loop)."""

    def __init__(self, zeros: Callable[[int], StreamState], capacity: int = 4):
        self._zeros, self._first = zeros, capacity
        self.rows = zeros(capacity)
        self._free = list(range(capacity - 1, -1, -1))  # popped from the end: the lowest slot first

    @property
    def capacity(self) -> int:
        return len(self.rows.offset)

    def take(self) -> int:
        """A free slot, its state zero (a stream's start)."""
        if len(self._free) == self.capacity > self._first:  # nobody holds a row: no release can come now
            self.rows = self._zeros(self._first)
            self._free = list(range(self._first - 1, -1, -1))
        if not self._free:
            n = self.capacity
            self.rows = StreamState.stack([self.rows, self._zeros(n)])
            self._free.extend(range(2 * n - 1, n - 1, -1))  # extended, not replaced: a release may come meanwhile
        slot = self._free.pop()
        self.clear(slot)
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def clear(self, slot: int) -> None:
        """The slot's state back to zero."""
        with _writable(self.rows):
            for t in self.rows.fields():
                t[slot] = 0

    def gather(self, slots: list[int]) -> StreamState:
        """The states of `slots` (a list, or the index a `StateRows` made of one), as one batch (a copy)."""
        return self.rows.select(slots)

    def put(self, slots: list[int], state: StreamState) -> None:
        """Row j of `state` becomes the state of slots[j]."""
        idx = self.rows._rows(slots)
        with _writable(self.rows):
            for mine, new in zip(self.rows.fields(), state.fields()):
                mine[idx] = new

    def gather_into(self, slots: list[int], dest: tuple) -> None:
        """The states of `slots` written into the first rows of `dest`'s tensors (a state's fields, in
        order; torch only): a captured step's fixed inputs, without a batch of their own between."""
        import torch

        idx = self.rows._rows(slots)
        with _writable(self.rows):
            for mine, into in zip(self.rows.fields(), dest):
                torch.index_select(mine, 0, idx, out=into[: len(idx)])


class StateRows:
    """A step's streams as rows of a `StatePool`, in the step's batch order: where a step that takes
    them (`TorchModel.step_rows`) reads the states it starts from and writes back those it ends with."""

    def __init__(self, pool: StatePool, slots: list[int]):
        self.pool = pool
        self.index = pool.rows._rows(slots)  # made once for the gather and the write-back (a copy to the device)

    def gather(self) -> StreamState:
        return self.pool.gather(self.index)

    def gather_into(self, dest: tuple) -> None:
        self.pool.gather_into(self.index, dest)

    def put(self, state: StreamState) -> None:
        self.pool.put(self.index, state)


def _writable(state: StreamState):
    """inference mode for torch states (in-place writes to them whatever mode made them: the rows may be
    inference tensors, the engine's caller's choice), nothing for numpy."""
    if isinstance(state.offset, np.ndarray):
        import contextlib

        return contextlib.nullcontext()
    import torch

    return torch.inference_mode()


def _cat(arrays: list, axis: int):
    """Concatenate numpy arrays or torch tensors (whichever they are)."""
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays, axis)
    import torch

    return torch.cat(arrays, axis)
