"""Shallow fusion of the recurrent LM into CTC prefix beam search.

A prefix y is ranked by  log P_ctc(y | audio) + weight * log P_lm(y) + length_bonus * |y|,  and a
finished hypothesis also gets weight * log P_lm(</s> | y). The LM part is a function of the prefix
alone, so the search keeps it beside each prefix like a hotword bonus (see decoding.py).

The LM runs one batched step per frame for every prefix that frame created, across all the
searches decoded together (the beams of every session in an engine batch): `LMStep` takes the
parents' states, the index of each new prefix's parent in them (the beam's reorder) and the new
tokens. Two implementations: the torch model (on CUDA the state update is one Triton kernel per
layer), and the same step exported to ONNX and run on ONNX Runtime (`export_lm_onnx`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asr_engine.lm.model import BOUNDARY, GILRLanguageModel, lm_fusion_defaults, load_lm, resolve_lm_dir

__all__ = ["OnnxLMStep", "ShallowFusion", "TorchLMStep", "export_lm_onnx", "load_fusion", "lm_onnx_path"]

ONNX_FORMAT = 1
WEIGHT, LENGTH_BONUS = 0.5, 1.0  # for an LM whose lm.json records no tuned fusion weights
StepResult = tuple[list[list[float]], torch.Tensor]  # next-token log-probs (N lists of V), new state (L, N, d)


class TorchLMStep:
    """The LM's step on its torch module (CPU, or CUDA with the fused Triton state update)."""

    def __init__(self, model: GILRLanguageModel):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.n_layers, self.d_model = model.cfg.n_layers, model.cfg.d_model

    def zeros(self, n: int) -> torch.Tensor:
        return torch.zeros(self.n_layers, n, self.d_model, device=self.device)

    def __call__(self, tokens: list[int], state: torch.Tensor, src: list[int]) -> StepResult:
        """tokens (N), state (L, M, d), src (N) indices into M -> (next-token log-probs, N lists of V;
        new state (L, N, d))."""
        dev = self.device
        with torch.inference_mode():
            logp, new = self.model.step(torch.tensor(tokens, device=dev), state, torch.tensor(src, device=dev))
        return logp.cpu().tolist(), new


class _StepModule(nn.Module):
    def __init__(self, model: GILRLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, tokens, state, src):
        return self.model.step(tokens, state, src)


def export_lm_onnx(model: GILRLanguageModel, path: str | Path, opset: int = 17) -> Path:
    """The decoding step as an ONNX graph: tokens (N,) int64, state (L, M, d) float32, src (N,) int64
    -> log_probs (N, V), new_state (L, N, d). The parent gather is inside the graph."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().cpu()
    cfg = model.cfg
    args = (torch.tensor([1, 2, 3]), torch.randn(cfg.n_layers, 2, cfg.d_model), torch.tensor([0, 1, 1]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks in gilr_step, constant here
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as export/onnx.py uses
        torch.onnx.export(_StepModule(model), args, str(path), input_names=["tokens", "state", "src"],
                          output_names=["log_probs", "new_state"], opset_version=opset, dynamo=False,
                          dynamic_axes={"tokens": {0: "n"}, "src": {0: "n"}, "state": {1: "m"},
                                        "log_probs": {0: "n"}, "new_state": {1: "n"}})
    m = onnx.load(str(path))
    for key, value in {"asr_engine_lm_format": str(ONNX_FORMAT), "n_layers": str(cfg.n_layers),
                       "d_model": str(cfg.d_model), "vocab_size": str(cfg.vocab_size),
                       "vocab_hash": cfg.vocab_hash}.items():
        m.metadata_props.add(key=key, value=value)
    onnx.save(m, str(path))
    return path


def lm_onnx_path(lm_dir: str | Path) -> Path:
    """The LM's ONNX step in the user's cache, exported once per set of weights."""
    from asr_engine.backend import cache_dir, content_hash, export_once

    lm_dir = resolve_lm_dir(lm_dir)
    out = cache_dir("lm-onnx") / f"{content_hash(lm_dir, ('lm.json', 'lm.safetensors'))}-v{ONNX_FORMAT}.onnx"
    return export_once(out, f"the LM step of {lm_dir} to ONNX", lambda tmp: export_lm_onnx(load_lm(lm_dir), tmp),
                       Path.is_file)


class OnnxLMStep:
    """The exported step on ONNX Runtime (CPU)."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        from asr_engine.export.runtime import _POOL, session_options

        so = session_options(threads, global_pool=_POOL.get("mode") == "global")  # the process's thread-pool mode
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        meta = self.sess.get_modelmeta().custom_metadata_map
        if meta.get("asr_engine_lm_format") != str(ONNX_FORMAT):
            raise ValueError(f"{path}: not an asr-engine LM step (format {meta.get('asr_engine_lm_format')})")
        self.n_layers, self.d_model = int(meta["n_layers"]), int(meta["d_model"])
        self.device = torch.device("cpu")

    def zeros(self, n: int) -> torch.Tensor:
        return torch.zeros(self.n_layers, n, self.d_model)

    def __call__(self, tokens: list[int], state: torch.Tensor, src: list[int]) -> StepResult:
        logp, new = self.sess.run(None, {"tokens": np.asarray(tokens, np.int64),
                                         "state": np.ascontiguousarray(state.numpy(), np.float32),
                                         "src": np.asarray(src, np.int64)})
        return logp.tolist(), torch.from_numpy(new)


class ShallowFusion:
    """An LM step with its fusion weights; shared by every search that uses it (it holds no
    per-stream state: each search keeps its prefixes' LM states)."""

    def __init__(self, step: TorchLMStep | OnnxLMStep, weight: float = WEIGHT, length_bonus: float = LENGTH_BONUS):
        if not weight >= 0:
            raise ValueError(f"LM weight must be >= 0, got {weight}")
        if not np.isfinite(length_bonus):
            raise ValueError(f"length bonus must be finite, got {length_bonus}")
        self.step, self.weight, self.length_bonus = step, float(weight), float(length_bonus)
        logp, state = step([BOUNDARY], step.zeros(1), [0])
        self.initial_state = state  # (L, 1, d): after <s>
        self.initial_next = logp[0]  # log P(first token)
        self.calls = 0  # batched steps run (for statistics)
        self.rows = 0  # hypotheses advanced

    def __call__(self, tokens: list[int], state: torch.Tensor, src: list[int]) -> StepResult:
        self.calls += 1
        self.rows += len(tokens)
        return self.step(tokens, state, src)


def load_fusion(path: str | Path, tokenizer, weight: float | None = None, length_bonus: float | None = None,
                backend: str = "auto", device: str = "cpu", threads: int = 1) -> ShallowFusion:
    """An LM folder (from `asr-engine lm train`; 'default': the bundled LM) ready for decoding on
    `backend` ('onnx': its step exported once and run on ONNX Runtime with `threads` threads (a
    step is small: 1 is fastest); 'torch': the module on `device`). `weight` and `length_bonus`
    default to the values tuned for the LM (recorded in its lm.json), else WEIGHT and LENGTH_BONUS.
    Refuses an LM trained on another vocabulary than the acoustic model's."""
    from asr_engine.backend import resolve_backend

    backend = resolve_backend(backend, device)
    model = load_lm(path, device if backend == "torch" else "cpu", tokenizer=tokenizer)
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is not None and model.cfg.vocab_size != len(vocab):
        raise ValueError(f"{path}: the LM has {model.cfg.vocab_size} tokens, the acoustic model {len(vocab)}")
    tuned = lm_fusion_defaults(path)
    weight = tuned.get("weight", WEIGHT) if weight is None else weight
    length_bonus = tuned.get("length_bonus", LENGTH_BONUS) if length_bonus is None else length_bonus
    if backend == "onnx":
        return ShallowFusion(OnnxLMStep(lm_onnx_path(path), threads), weight, length_bonus)
    return ShallowFusion(TorchLMStep(model), weight, length_bonus)
