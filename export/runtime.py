"""The streaming encoder on ONNX Runtime: the two exported stages behind `Encoder.forward_chunk`'s
interface, so the Engine/Session API runs on either backend.

Between the stages the runtime does what the torch encoder does: the blank gate on the
bottom stage's intermediate head picks the frames to keep, they are compacted, the top
stage runs on them only, and its output is scattered back (`run_chunk`). The features
come from the exported front end (fbank.onnx).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from asr_engine.checkpoint import Checkpoint, _features_from_dict
from asr_engine.features import FbankConfig
from asr_engine.kernels import REFERENCE, select_ops
from asr_engine.export.onnx import CACHE_FIELDS, FORMAT_VERSION, split_caches, stack_caches
from asr_engine.model.config import ModelConfig
from asr_engine.model.encoder import EncoderOutput, HeadOutput, SkipOptions, run_chunk
from asr_engine.model.layers import KVCache, Subsampling
from asr_engine.model.streaming import StreamState
from asr_engine.tokenizer import tokenizer_from_config

__all__ = ["OnnxEncoder", "OnnxFbank", "is_onnx_model", "load_onnx", "session_options"]


def is_onnx_model(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / "bottom.onnx").is_file()


_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.bool: np.bool_}
_POOL: dict[str, object] = {}  # how this process's ORT sessions get threads (decided by the first one)


def session_options(threads: int = 0, global_pool: bool = False):
    """ORT session options for the stages.

    Default: each session has its own intra-op pool of `threads`, without spin-waiting (on a
    2-core CPU spinning workers starve the Python thread that decodes between the stages; one
    engine's two sessions already serve every stream through batching). global_pool=True: all
    sessions share one process-wide pool (ORT's global thread pool; Python cannot turn its
    spinning off). The first session in the process decides; mixing the two raises."""
    import onnxruntime as ort

    mode = "global" if global_pool else "per-session"
    if _POOL.setdefault("mode", mode) != mode:
        raise ValueError(f"this process already runs ONNX sessions with {_POOL['mode']} thread pools; "
                         f"ORT cannot mix them with {mode} ones")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if global_pool:
        if "threads" not in _POOL:
            ort.set_global_thread_pool_sizes(threads, 1)
            _POOL["threads"] = threads
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    raise ValueError(f"--backend onnx on {device} needs onnxruntime-gpu (the 'gpu' extra) and a CUDA GPU; "
                     f"this onnxruntime offers {ort.get_available_providers()}")


class OnnxFbank:
    """The exported feature front end (fbank.onnx), called like features.Fbank."""

    def __init__(self, session, cfg: FbankConfig):
        self.session, self.cfg = session, cfg

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform (B, N) float in [-1, 1] -> log-mel (B, T, M)."""
        (feats,) = self.session.run(None, {"waveform": _np(waveform.float().cpu())})
        return torch.from_numpy(feats)


class OnnxEncoder:
    """What the Engine needs of an encoder (cfg, subsampling arithmetic, forward_chunk, fbank), on ORT.

    Tensors stay torch tensors on `device` and are bound to the sessions in place (I/O binding):
    no copies on the CPU, and on CUDA the caches never leave the GPU."""

    def __init__(self, model_dir: str | Path, threads: int = 0, device: str | torch.device = "cpu",
                 global_pool: bool = False):
        import onnxruntime as ort

        d = Path(model_dir)
        self.device = torch.device(device)
        so, providers = session_options(threads, global_pool), _providers(self.device)
        self.bottom = ort.InferenceSession(str(d / "bottom.onnx"), so, providers=providers)
        self.meta = self.bottom.get_modelmeta().custom_metadata_map
        if self.meta.get("asr_engine_format") != str(FORMAT_VERSION):
            raise ValueError(f"{d}: ONNX export format {self.meta.get('asr_engine_format')!r}, "
                             f"this runtime reads {FORMAT_VERSION}; export the checkpoint again")
        self.top = ort.InferenceSession(str(d / "top.onnx"), so, providers=providers)
        self.fbank = OnnxFbank(ort.InferenceSession(str(d / "fbank.onnx"), so, providers=["CPUExecutionProvider"]),
                               _features_from_dict(json.loads(self.meta["features"])))
        self.cfg = ModelConfig.from_dict(json.loads(self.meta["model_config"]))
        self.chunk_frames = int(self.meta["chunk_frames"])
        self.subsampling = Subsampling(self.cfg)  # for its frame arithmetic only (input_frames, output_lengths)
        self.ops = REFERENCE if self.device.type == "cpu" else select_ops(self.device)

    def forward_chunk(self, feats: torch.Tensor, n_valid: torch.Tensor, state: StreamState,
                      skip: SkipOptions | None = None) -> tuple[EncoderOutput, StreamState]:
        """As Encoder.forward_chunk, with C fixed at export (`chunk_frames`)."""
        cfg, C = self.cfg, self.chunk_frames
        if feats.shape[1] != self.subsampling.input_frames(C):
            raise ValueError(f"this ONNX export takes chunks of {C} frames "
                             f"({self.subsampling.input_frames(C)} feature frames), got {feats.shape[1]}")
        S, B = cfg.skip_layer, feats.shape[0]

        def bottom(caches):
            feed = {"feats": feats.float(), "n_valid": n_valid, "offset": state.offset, **_cache_feed(caches)}
            x, gate, *new = self._run(self.bottom, feed, {"x": ((B, C, cfg.d_model), torch.float32),
                                                          "gate_raw": ((B, C, cfg.vocab_size), torch.float32),
                                                          **_cache_outputs(feed)})
            local = torch.arange(C, device=x.device).expand(B, C)
            kv, conv = _cache_lists(new)
            return (x, state.offset[:, None] + local, local < n_valid[:, None], {S: HeadOutput(gate)}, kv, conv)

        def top(y, pos, valid, caches):
            feed = {"x": y, "pos": pos, "valid": valid, **_cache_feed(caches)}
            raw, *new = self._run(self.top, feed, {"final_raw": ((B, y.shape[1], cfg.vocab_size), torch.float32),
                                                   **_cache_outputs(feed)})
            kv, conv = _cache_lists(new)
            return raw, kv, conv

        return run_chunk(cfg, state, n_valid, skip, bottom, top, self.ops)

    def _run(self, session, feed: dict[str, torch.Tensor], outputs: dict[str, tuple[tuple[int, ...], torch.dtype]]
             ) -> list[torch.Tensor]:
        """Run a session on torch tensors bound in place; outputs are allocated here with known shapes."""
        binding = session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        feed = {name: t.to(self.device).contiguous() for name, t in feed.items()}  # alive until the run ends
        for name, t in feed.items():
            binding.bind_input(name, kind, index, _NP[t.dtype], tuple(t.shape), t.data_ptr())
        result = []
        for name, (shape, dtype) in outputs.items():
            out = torch.empty(shape, dtype=dtype, device=self.device)
            binding.bind_output(name, kind, index, _NP[dtype], tuple(shape), out.data_ptr())
            result.append(out)
        session.run_with_iobinding(binding)
        return result


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


def _cache_feed(caches: list[tuple[KVCache, torch.Tensor]]) -> dict[str, torch.Tensor]:
    stacked = stack_caches([c[0] for c in caches], [c[1] for c in caches])
    return {f"cache_{name}": t for name, t in zip(CACHE_FIELDS, stacked)}


def _cache_outputs(feed: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """A stage's new caches have the shapes and dtypes of its input caches."""
    return {f"new_cache_{f}": (tuple(feed[f"cache_{f}"].shape), feed[f"cache_{f}"].dtype) for f in CACHE_FIELDS}


def _cache_lists(new: list[torch.Tensor]) -> tuple[list[KVCache], list[torch.Tensor]]:
    caches = split_caches(*new)
    return [c[0] for c in caches], [c[1] for c in caches]


def load_onnx(model_dir: str | Path, threads: int = 0, device: str = "cpu", global_pool: bool = False) -> Checkpoint:
    """An exported folder as a Checkpoint whose model is an OnnxEncoder (for the Engine)."""
    enc = OnnxEncoder(model_dir, threads, device, global_pool)
    tokenizer = tokenizer_from_config(json.loads(enc.meta["tokenizer"]), Path(model_dir))
    return Checkpoint(enc, tokenizer, _features_from_dict(json.loads(enc.meta["features"])),
                      json.loads(enc.meta.get("info", "{}")))
