"""The streaming encoder on ONNX Runtime: the two exported stages behind `Encoder.forward_chunk`'s
interface, so the Engine/Session API runs on either backend.

Between the stages the runtime does what the torch encoder does: the blank gate on the
bottom stage's intermediate head picks the frames to keep, they are compacted, the top
stage runs on them only, and its output is scattered back (`run_chunk`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from asr_engine.checkpoint import Checkpoint, _features_from_dict
from asr_engine.export.onnx import CACHE_FIELDS, FORMAT_VERSION, split_caches, stack_caches
from asr_engine.model.config import ModelConfig
from asr_engine.model.encoder import EncoderOutput, HeadOutput, SkipOptions, run_chunk
from asr_engine.model.layers import KVCache, Subsampling
from asr_engine.model.streaming import StreamState
from asr_engine.tokenizer import tokenizer_from_config

__all__ = ["OnnxEncoder", "is_onnx_model", "load_onnx"]


def is_onnx_model(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / "bottom.onnx").is_file()


def _session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting between the stages
    return so


class OnnxEncoder:
    """What the Engine needs of an encoder (cfg, subsampling arithmetic, forward_chunk), on ORT."""

    def __init__(self, model_dir: str | Path, threads: int = 0, providers: list[str] | None = None):
        import onnxruntime as ort

        d = Path(model_dir)
        so = _session_options(threads)
        providers = providers or ["CPUExecutionProvider"]
        self.bottom = ort.InferenceSession(str(d / "bottom.onnx"), so, providers=providers)
        self.top = ort.InferenceSession(str(d / "top.onnx"), so, providers=providers)
        self.meta = self.bottom.get_modelmeta().custom_metadata_map
        if self.meta.get("asr_engine_format") != str(FORMAT_VERSION):
            raise ValueError(f"{d}: ONNX export format {self.meta.get('asr_engine_format')!r}, "
                             f"this runtime reads {FORMAT_VERSION}; export the checkpoint again")
        self.cfg = ModelConfig.from_dict(json.loads(self.meta["model_config"]))
        self.chunk_frames = int(self.meta["chunk_frames"])
        self.subsampling = Subsampling(self.cfg)  # for its frame arithmetic only (input_frames, output_lengths)

    def forward_chunk(self, feats: torch.Tensor, n_valid: torch.Tensor, state: StreamState,
                      skip: SkipOptions | None = None) -> tuple[EncoderOutput, StreamState]:
        """As Encoder.forward_chunk, with C fixed at export (`chunk_frames`)."""
        cfg, C = self.cfg, self.chunk_frames
        if feats.shape[1] != self.subsampling.input_frames(C):
            raise ValueError(f"this ONNX export takes chunks of {C} frames "
                             f"({self.subsampling.input_frames(C)} feature frames), got {feats.shape[1]}")
        S = cfg.skip_layer

        def bottom(caches):
            feed = {"feats": _np(feats.float()), "n_valid": _np(n_valid), "offset": _np(state.offset),
                    **_cache_feed(caches)}
            x, gate, *new = self.bottom.run(None, feed)
            x = torch.from_numpy(x)
            B = x.shape[0]
            local = torch.arange(C).expand(B, C)
            kv, conv = _cache_lists(new)
            return (x, state.offset[:, None] + local, local < n_valid[:, None], {S: HeadOutput(torch.from_numpy(gate))},
                    kv, conv)

        def top(y, pos, valid, caches):
            raw, *new = self.top.run(None, {"x": _np(y), "pos": _np(pos), "valid": _np(valid),
                                            **_cache_feed(caches)})
            kv, conv = _cache_lists(new)
            return torch.from_numpy(raw), kv, conv

        return run_chunk(cfg, state, n_valid, skip, bottom, top)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


def _cache_feed(caches: list[tuple[KVCache, torch.Tensor]]) -> dict[str, np.ndarray]:
    stacked = stack_caches([c[0] for c in caches], [c[1] for c in caches])
    return {f"cache_{name}": _np(t) for name, t in zip(CACHE_FIELDS, stacked)}


def _cache_lists(new: list[np.ndarray]) -> tuple[list[KVCache], list[torch.Tensor]]:
    caches = split_caches(*(torch.from_numpy(a) for a in new))
    return [c[0] for c in caches], [c[1] for c in caches]


def load_onnx(model_dir: str | Path, threads: int = 0) -> Checkpoint:
    """An exported folder as a Checkpoint whose model is an OnnxEncoder (for the Engine)."""
    enc = OnnxEncoder(model_dir, threads)
    tokenizer = tokenizer_from_config(json.loads(enc.meta["tokenizer"]), Path(model_dir))
    return Checkpoint(enc, tokenizer, _features_from_dict(json.loads(enc.meta["features"])),
                      json.loads(enc.meta.get("info", "{}")))
