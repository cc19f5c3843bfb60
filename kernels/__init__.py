"""Ops on the layer-skipping path. Each op has a plain-torch reference (the ground truth
and the CPU path); accelerated versions live beside it and are tested against it."""

from asr_engine.kernels.compaction import Compacted, compact, keep_mask, scatter_back

__all__ = ["Compacted", "compact", "keep_mask", "scatter_back"]
