"""Ops on the layer-skipping path. Each op has a plain-torch reference (the ground truth
and the CPU path) and a Triton kernel beside it (`triton_ops`), tested against it.

`select_ops(device)` picks the implementation once, when an engine is built: the Triton
kernels for a CUDA device when Triton imports, the references otherwise (with one
warning when a CUDA device has to do without Triton).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from asr_engine.kernels.compaction import (Compacted, Gated, compact, gate_compact, gate_keep, gate_scan, gather,
                                           host_sizes, keep_mask, scatter_back)
from asr_engine.kernels.factorized import factorized_log_probs

__all__ = ["Compacted", "Gated", "SkipOps", "REFERENCE", "compact", "factorized_log_probs", "gate_compact",
           "gate_keep", "gate_scan", "gather", "host_sizes", "keep_mask", "load_triton_ops", "scatter_back",
           "select_ops"]


@dataclass(frozen=True)
class SkipOps:
    """One implementation of the skipping path's ops (see compaction.py and factorized.py
    for their contracts). gate_compact is gate_scan, one host read, then gather; the encoder calls
    the two halves, to read the sizes of all its compactions at once."""

    name: str
    gate_compact: Callable[..., Compacted]
    gate_scan: Callable[..., Gated]
    gather: Callable[[torch.Tensor, Gated, int], Compacted]
    scatter_back: Callable[[torch.Tensor, torch.Tensor, Compacted], torch.Tensor]
    log_probs: Callable[[torch.Tensor], torch.Tensor]


REFERENCE = SkipOps("reference", gate_compact, gate_scan, gather, scatter_back, factorized_log_probs)
_warned: set[str] = set()


def load_triton_ops() -> SkipOps:
    """The Triton implementation (raises ImportError without Triton)."""
    from asr_engine.kernels import triton_ops as t

    return SkipOps("triton", t.gate_compact, t.gate_scan, t.gather, t.scatter_back, t.factorized_log_probs)


def select_ops(device: str | torch.device) -> SkipOps:
    """Triton kernels on CUDA when Triton is installed; the torch references otherwise."""
    if torch.device(device).type != "cuda":
        return REFERENCE
    try:
        return load_triton_ops()
    except ImportError as e:  # the GPU still works, on the slower reference path
        if "triton" not in _warned:
            _warned.add("triton")
            warnings.warn(f"Triton is not available ({e}); the layer-skipping path uses the torch "
                          "reference ops. Install the 'gpu' extra for the fused kernels.", RuntimeWarning,
                          stacklevel=2)
        return REFERENCE
