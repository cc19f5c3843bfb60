"""The streaming encoder on ONNX Runtime, with numpy only: this module and everything the
engine needs around it import no torch, so `pip install asr-engine[cpu]` transcribes and
serves without it.

Between the exported stages the runtime does what the torch encoder does
(`asr_engine.model.encoder.start_chunk` and `finish_chunk`): the blank gate on the bottom stage's intermediate
head picks the frames to keep, they are compacted, the top stage runs on them only, and its
output is scattered back. The gate, the compaction and the factorized-CTC output are
written here again in numpy (a few lines each) because the torch references cannot be
imported without torch; tests hold them equal to the references. The features come from
the exported front end (fbank.onnx).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from asr_engine.features import features_from_dict
from asr_engine.model.config import PAD_POS, ModelConfig, SkipOptions
from asr_engine.model.streaming import CACHE_FIELDS, StreamState
from asr_engine.tokenizer import tokenizer_from_config

__all__ = ["FORMAT_VERSION", "PRECISIONS", "OnnxModel", "gate_compact", "is_onnx_model", "log_probs",
           "quantize_columns", "session_options"]

FORMAT_VERSION = 2  # 2: fbank.onnx added
_POOL: dict[str, object] = {}  # how this process's ORT sessions get threads (decided by the first one)


PRECISIONS = ("fp32", "int8")  # int8: the MatMuls of export.onnx.quantize_rows
WEIGHT_LEVELS = 63  # int8 weights in -63..63: see quantize_columns


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A MatMul's constant weight (K, N) -> its int8 values, one symmetric scale per column (N,) float32, and
    the columns' sums of the int8 values (N,) float32, which undo the inputs' zero points (export.onnx
    quantize_rows). The export and the runtime (which derives them from a checkpoint's weights file when it
    opens a shipped int8 export) both compute them here, so they agree to the bit.

    The values take 7 bits (-63..63, WEIGHT_LEVELS), not 8: x86 CPUs without VNNI (AVX2 only: AMD Zen 1-3,
    Intel before Ice Lake and Cascade Lake) multiply uint8 by int8 with VPMADDUBSW, which adds each two
    neighbouring products into a saturating int16; 255 x 127 x 2 overflows it, and ONNX Runtime's
    MatMulInteger returned sums off by up to 1e5 there (measured on an AMD EPYC with AVX2: dev_real 21.32%
    against 20.71% in fp32). With 7 bits the largest pair, 255 x 63 x 2 = 32,130, fits, so every CPU
    computes the same integers (the workaround of OpenVINO's and ORT's `reduce_range`)."""
    w = np.asarray(w, np.float32)
    scale = np.maximum(np.abs(w).max(0), np.float32(1e-12)) / np.float32(WEIGHT_LEVELS)
    q = np.clip(np.rint(w / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    return q, scale.astype(np.float32), q.sum(0, dtype=np.int32).astype(np.float32)


def is_onnx_model(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / "bottom.onnx").is_file()


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


def providers(device: str) -> list:
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise ValueError(f"--backend onnx on {device} needs onnxruntime-gpu (the 'gpu' extra) and a CUDA GPU; "
                     f"this onnxruntime offers {ort.get_available_providers()}")


def log_probs(raw: np.ndarray) -> np.ndarray:
    """Factorized-CTC raw output (..., V) -> log-probs (..., V), blank at 0 (asr_engine.kernels.factorized)."""
    z, v = raw[..., :1], raw[..., 1:]
    v = v - v.max(-1, keepdims=True)
    log_softmax = v - np.log(np.exp(v).sum(-1, keepdims=True))
    # logsigmoid(x) = -log1p(exp(-x)), computed stably on both sides
    return np.concatenate([_logsigmoid(-z), _logsigmoid(z) + log_softmax], -1).astype(np.float32)


def _logsigmoid(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def gate_compact(gate_raw: np.ndarray, n_valid: np.ndarray, threshold: float, dilation: int,
                 chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blank gate (asr_engine.kernels.compaction.gate_compact, in numpy): gate_raw (B, C, V),
    n_valid (B,) -> keep (B, C) bool, index (B, T') each kept frame's column (0 in padding),
    valid (B, T'). Frames with P(blank) > threshold are dropped unless within `dilation`
    frames of a kept one in the same chunk of `chunk` frames."""
    return keep_compact(gate_raw, np.arange(gate_raw.shape[1])[None, :] < n_valid[:, None], threshold, dilation,
                        chunk)


def keep_compact(gate_raw: np.ndarray, valid: np.ndarray, threshold: float, dilation: int,
                 chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gate_compact with the valid frames given (B, C)."""
    B, C = gate_raw.shape[:2]
    p_blank = 1.0 / (1.0 + np.exp(gate_raw[..., 0].astype(np.float32)))  # sigmoid(-z), in fp32 as the references
    seed = (p_blank <= threshold) & valid
    keep = seed.copy()
    block = np.arange(C) // chunk
    for d in range(1, min(dilation, C - 1) + 1):
        same = block[d:] == block[:-d]
        keep[:, d:] |= seed[:, :-d] & same
        keep[:, :-d] |= seed[:, d:] & same
    keep &= valid
    lengths = keep.sum(1)
    t_out = int(lengths.max()) if B else 0
    order = np.argsort(~keep, axis=1, kind="stable")[:, :t_out]  # kept frames first, in order
    valid_c = np.arange(t_out)[None, :] < lengths[:, None]
    return keep, np.where(valid_c, order, 0), valid_c


class OnnxModel:
    """An ONNX export (fbank.onnx, bottom.onnx, top.onnx) as the engine's model: numpy in, numpy out.

    The stages take chunks of exactly `chunk_frames` encoder frames (fixed at export)."""

    name = "onnx"
    encode = None  # no whole-utterance mode: files stream through the engine in chunks of chunk_frames

    def __init__(self, model_dir: str | Path, threads: int = 0, device: str = "cpu", global_pool: bool = False):
        import onnxruntime as ort

        d = Path(model_dir)
        self.device = device
        prov = providers(device)
        self._shared = _shared_weights(d)
        self.bottom = self._session(d / "bottom.onnx", threads, global_pool, prov)
        self.meta = self.bottom.get_modelmeta().custom_metadata_map
        if self.meta.get("asr_engine_format") != str(FORMAT_VERSION):
            raise ValueError(f"{d}: ONNX export format {self.meta.get('asr_engine_format')!r}, "
                             f"this runtime reads {FORMAT_VERSION}; export the checkpoint again")
        self.top = self._session(d / "top.onnx", threads, global_pool, prov)
        # exports before the second pass have no "hidden" output: everything but rescoring works with them
        self.has_hidden = "hidden" in [o.name for o in self.top.get_outputs()]
        self._fbank = ort.InferenceSession(str(d / "fbank.onnx"), session_options(threads, global_pool),
                                           providers=["CPUExecutionProvider"])
        self.cfg = ModelConfig.from_dict(json.loads(self.meta["model_config"]))
        self.features = features_from_dict(json.loads(self.meta["features"]))
        self.tokenizer = tokenizer_from_config(json.loads(self.meta["tokenizer"]), d)
        self.info = json.loads(self.meta.get("info", "{}"))
        self.chunk_frames = int(self.meta["chunk_frames"])
        # the bottom stage also takes steps of fewer frames (an export without lookahead): a stream's last
        # step runs on its real frames only (Engine trims the windows)
        self.short_steps = self.meta.get("short_steps") == "1"
        self.n_params = int(self.meta["parameters"]) if "parameters" in self.meta else None
        # "int8": quantize_rows' MatMuls (--precision int8); ORT's own quantized exports keep their names
        quantization = self.meta.get("quantization", "none")
        self.precision = {"none": "fp32", "int8-rows": "int8"}.get(quantization, quantization)
        self.path = d

    def _session(self, path: Path, threads: int, global_pool: bool, prov: list):
        import onnxruntime as ort

        so = session_options(threads, global_pool)
        names, values = self._shared.get(path.name, ([], []))
        if names:  # weights kept in the checkpoint's model.safetensors (export.onnx.share_weights)
            so.add_external_initializers(names, values)
        return ort.InferenceSession(str(path), so, providers=prov)

    def fbank(self, waveform: np.ndarray) -> np.ndarray:
        """waveform (B, N) float32 in [-1, 1] -> log-mel (B, T, M)."""
        return self._fbank.run(None, {"waveform": np.ascontiguousarray(waveform, np.float32)})[0]

    def zeros_state(self, batch: int = 1) -> StreamState:
        return StreamState.zeros_numpy(self.cfg, batch)

    def step_frames(self, n_feats: int) -> int:
        """The encoder frames C of a step whose window has n_feats feature frames: chunk_frames, or with
        short_steps any 1..chunk_frames; a ValueError for any other window."""
        cfg, C, R = self.cfg, self.chunk_frames, self.cfg.right_context
        if n_feats == cfg.input_frames(C + R):
            return C
        c = (n_feats - cfg.input_frames(0)) // cfg.stride
        if self.short_steps and 1 <= c < C and n_feats == cfg.input_frames(c):
            return c
        up_to = f"up to {C}" if self.short_steps else f"{C}"
        raise ValueError(f"this ONNX export takes chunks of {up_to} frames and {R} of right context "
                         f"({cfg.input_frames(C + R)} feature frames for a full one), got {n_feats} feature frames")

    def forward_chunk(self, feats: np.ndarray, n_valid: np.ndarray, state: StreamState,
                      skip: SkipOptions | None, hidden: bool = False):
        """feats (B, input_frames(C + right_context), F), n_valid (B,) valid frames of those C +
        right_context -> log-probs (B, C, V), frames that ran the top stage (B, C), the new state
        (as Encoder.forward_chunk, with C = chunk_frames), and with `hidden` the last layer's output
        (B, C, D), zero on the frames that skipped the top stage."""
        if hidden and not self.has_hidden:
            raise ValueError(f"{self.path}: this ONNX export has no last-layer output for a second pass; "
                             f"export the checkpoint again")
        cfg, C, S = self.cfg, self.step_frames(feats.shape[1]), self.cfg.skip_layer
        n_valid = n_valid.astype(np.int64)
        x, gate, *new_bottom = self.bottom.run(None, {"feats": feats.astype(np.float32, copy=False),
                                                      "n_valid": n_valid, "offset": state.offset,
                                                      **_caches(state.stage(0, S))})
        threshold, dilation = (1.0, 0) if skip is None else (skip.threshold, skip.dilation)
        n_out = np.minimum(n_valid, C)  # the rest of the window is right context
        keep, index, valid = gate_compact(gate[:, :C], n_out, threshold, dilation, cfg.chunk_size)
        new_top, final = state.stage(S, cfg.n_layers), gate[:, :C]
        top_out = np.zeros((*final.shape[:2], x.shape[2]), np.float32) if hidden else None  # (B, C, D)
        if index.shape[1]:
            rows = np.arange(len(index))[:, None]
            feed = {"x": np.ascontiguousarray(x[rows, index]), "valid": valid,
                    "pos": np.where(valid, state.offset[:, None] + index, PAD_POS)}
            if cfg.right_context:
                feed.update(self._kept_copies(x[:, C:], gate[:, C:], n_valid, state.offset, threshold, dilation))
            y, *new_top = self.top.run(None, {**feed, **_caches(new_top)})
            final = final.copy()
            at = rows.repeat(index.shape[1], 1)[valid], index[valid]
            final[at] = y[valid]
            y_out = new_top.pop(0) if self.has_hidden else None  # the caches follow the last layer's output
            if hidden:
                top_out[at] = y_out[valid]
        out = (log_probs(final), keep, StreamState.from_stages(tuple(new_bottom), tuple(new_top), state.offset + n_out))
        return (*out, top_out) if hidden else out

    def _kept_copies(self, x: np.ndarray, gate: np.ndarray, n_valid: np.ndarray, offset: np.ndarray,
                     threshold: float, dilation: int) -> dict[str, np.ndarray]:
        """The top stage's lookahead inputs: the kept copies (at least one column, maybe padding)."""
        cfg, R = self.cfg, self.cfg.right_context
        at = (np.arange(self.chunk_frames // cfg.chunk_size)[:, None] + 1) * cfg.chunk_size + np.arange(R)
        at = at.reshape(-1)  # each copy's column in the step's window
        _, index, valid = keep_compact(gate, at[None, :] < n_valid[:, None], threshold, dilation, R)
        if index.shape[1] == 0:
            index, valid = np.zeros((len(x), 1), np.int64), np.zeros((len(x), 1), bool)
        rows = np.arange(len(index))[:, None]
        return {"x_ahead": np.ascontiguousarray(x[rows, index]), "valid_ahead": valid,
                "pos_ahead": np.where(valid, offset[:, None] + at[index], PAD_POS)}


_DTYPES = {"F16": np.float16, "F32": np.float32}


def _shared_weights(d: Path, spec: str = "export.json", base: Path | None = None,
                    stages: tuple[str, ...] | None = None) -> dict[str, tuple[list[str], list]]:
    """The initializers an export leaves in its checkpoint's weights file (`spec`'s "shared": export.json's
    in an encoder export, lm-onnx.json's in an LM folder), per stage (`stages` only, when given): their names
    and OrtValues over a read-only memory map of the file (the session folds them into float32 constants when
    it starts; ORT keeps the OrtValues, which keep the map). The file is found in `base` (default: the folder
    above `d`).
    A reference with "derive" is one of quantize_columns' three arrays, computed here from the tensor it
    names (transposed first if it says so): an int8 export ships its graphs only."""
    try:
        shared = json.loads((d / spec).read_text()).get("shared")
    except (OSError, ValueError):
        return {}
    if not shared:
        return {}
    import onnxruntime as ort

    weights = (d.parent if base is None else base) / shared["file"]
    if not weights.is_file():
        raise ValueError(f"{d}: the export keeps its weights in {weights}, which is missing")
    raw = np.memmap(weights, dtype=np.uint8, mode="r")
    derived: dict[tuple[str, bool], tuple[np.ndarray, ...]] = {}
    out = {}
    for stage, refs in shared["initializers"].items():
        if stages is not None and stage not in stages:
            continue  # another precision's graph: nothing of it is read, nor its int8 weights derived
        names, values = [], []
        for r in refs:
            if r["dtype"] not in _DTYPES or r["offset"] + r["length"] > raw.size:
                raise ValueError(f"{d}: {spec} refers to {r['tensor']} ({r['dtype']}) that {weights} "
                                 f"does not hold; export it again")
            a = raw[r["offset"]: r["offset"] + r["length"]].view(_DTYPES[r["dtype"]]).reshape(r["shape"])
            if "derive" in r:
                key = (r["tensor"], bool(r.get("transposed")))
                if key not in derived:
                    w = a.astype(np.float32)
                    derived[key] = quantize_columns(w.T if key[1] else w)
                a = derived[key][_DERIVED.index(r["derive"])]
            names.append(r["name"])
            values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)))
        out[stage] = (names, values)
    return out


_DERIVED = ("int8", "scale", "colsum")  # quantize_columns' arrays, as export.json's "derive" names them


def _caches(stage: tuple) -> dict[str, np.ndarray]:
    return {f"cache_{name}": np.ascontiguousarray(t) for name, t in zip(CACHE_FIELDS, stage)}
