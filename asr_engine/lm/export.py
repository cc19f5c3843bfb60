"""The LM's decoding step in torch, and its export to ONNX (what `asr_engine.lm.fusion` runs
without torch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from asr_engine.lm.fusion import ONNX_FORMAT, PRECISIONS, StepResult
from asr_engine.lm.model import GILRLanguageModel

__all__ = ["TorchLMStep", "export_lm_onnx"]


class TorchLMStep:
    """The LM's step on its torch module (CPU, or CUDA with the fused Triton state update)."""

    def __init__(self, model: GILRLanguageModel):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.n_layers, self.d_model = model.cfg.n_layers, model.cfg.d_model
        self.precision = "fp32"  # as OnnxLMStep.precision: what the step's linear layers compute in

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


def export_lm_onnx(model: GILRLanguageModel, path: str | Path, opset: int = 17, weights: str = "",
                   precision: str = "fp32") -> Path:
    """The decoding step as an ONNX graph: tokens (N,) int64, state (L, M, d) float32, src (N,) int64
    -> log_probs (N, V), new_state (L, N, d). The parent gather is inside the graph. precision "int8": its
    linear layers as the encoder's int8 exports have theirs (asr_engine.export.onnx.quantize_rows: each row
    quantized with its own scale, so a hypothesis scores the same whatever else the step holds), but the
    output projection (the tied embedding), whose log-probabilities the search adds up, stays fp32."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision: {' or '.join(PRECISIONS)}, got {precision!r}")

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
    if precision == "int8":
        from asr_engine.export.onnx import quantize_rows

        m = onnx.load(str(path))
        shapes = {i.name: list(i.dims) for i in m.graph.initializer}
        output = [n.name for n in m.graph.node if n.op_type == "MatMul"
                  and shapes.get(n.input[1], [None])[-1] == cfg.vocab_size]
        quantize_rows(path, exclude=output)
    m = onnx.load(str(path))
    for key, value in {"asr_engine_lm_format": str(ONNX_FORMAT), "n_layers": str(cfg.n_layers),
                       "d_model": str(cfg.d_model), "vocab_size": str(cfg.vocab_size),
                       "vocab_hash": cfg.vocab_hash, "weights": weights, "precision": precision}.items():
        m.metadata_props.add(key=key, value=value)
    onnx.save(m, str(path))
    return path
