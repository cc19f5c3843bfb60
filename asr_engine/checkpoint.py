"""Checkpoints: a folder with `model.safetensors` and `config.json` (plus `tokenizer.model`
for BPE). The config carries every dimension, so loading rebuilds the model from it;
unknown keys anywhere in it are errors rather than silently ignored."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from asr_engine.backend import default_model_dir
from asr_engine.features import FbankConfig, features_from_dict
from asr_engine.model.config import ModelConfig
from asr_engine.model.encoder import Encoder
from asr_engine.tokenizer import Tokenizer, tokenizer_from_config

FORMAT_VERSION = 1
_TOP_KEYS = {"format_version", "model", "features", "tokenizer", "info"}

__all__ = ["Checkpoint", "default_model_dir", "load_checkpoint", "package_checkpoint", "save_checkpoint"]


@dataclass
class Checkpoint:
    model: Encoder
    tokenizer: Tokenizer
    features: FbankConfig = field(default_factory=FbankConfig)
    info: dict = field(default_factory=dict)  # free-form provenance: data, steps, WER


def save_checkpoint(ckpt: Checkpoint, out_dir: str | Path, half: bool = False) -> Path:
    """Write the folder; half=True stores float weights as fp16 (half the size; loading
    converts back to the model's dtype)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in ckpt.model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(out_dir / "model.safetensors"))
    tok_cfg = ckpt.tokenizer.to_config()
    if tok_cfg["kind"] == "bpe":
        src = Path(ckpt.tokenizer.model_path)
        if src.resolve() != (out_dir / tok_cfg["model_file"]).resolve():
            shutil.copyfile(src, out_dir / tok_cfg["model_file"])
    config = {"format_version": FORMAT_VERSION, "model": ckpt.model.cfg.to_dict(),
              "features": asdict(ckpt.features), "tokenizer": tok_cfg, "info": ckpt.info}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu",
                    context: str = "streaming") -> Checkpoint:
    """Rebuild model, tokenizer and feature config from a checkpoint folder (default: bundled).
    context "full": the same weights in the layout for whole files (ModelConfig.with_context)."""
    path = Path(path) if path is not None else default_model_dir()
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint folder (no config.json)")
    config = json.loads(cfg_file.read_text())
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{cfg_file}: unknown keys {sorted(unknown)}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_file}: format_version {config.get('format_version')} is not {FORMAT_VERSION}")
    model_cfg = ModelConfig.from_dict(config["model"]).with_context(context)
    tokenizer = tokenizer_from_config(config["tokenizer"], path)
    if len(tokenizer.vocab) != model_cfg.vocab_size:
        raise ValueError(f"{path}: tokenizer has {len(tokenizer.vocab)} tokens, model {model_cfg.vocab_size}")
    model = Encoder(model_cfg)
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    model.to(device).eval()
    return Checkpoint(model, tokenizer, features_from_dict(config.get("features", {})), config.get("info", {}))


def _portable_paths(paths: list[str]) -> list[str]:
    """Absolute paths -> relative to their common folder, or one path to its grandparent
    (no machine-local prefixes); relative paths are kept."""
    absolute = sorted({Path(p) for p in paths if Path(p).is_absolute()})
    if not absolute:
        return list(paths)
    root = absolute[0].parent.parent if len(absolute) == 1 else Path(os.path.commonpath(absolute))
    return [str(Path(p).relative_to(root)) if Path(p).is_absolute() else p for p in paths]


def _without_idle_convs(model: Encoder) -> Encoder:
    """The model without the conv modules whose output projection is zero (a layer kept frozen as
    imported: its conv module adds exactly nothing), or the model itself if none is."""
    cfg = model.cfg
    idle = {i for i, layer in enumerate(model.layers, start=1)
            if layer.conv is not None and not layer.conv.pw2.weight.any() and not layer.conv.pw2.bias.any()}
    if not idle:
        return model
    kept = tuple(i for i in range(1, cfg.n_layers + 1) if cfg.has_conv(i) and i not in idle)
    slim = Encoder(replace(cfg, conv_layers=kept))
    missing, unexpected = slim.load_state_dict(model.state_dict(), strict=False)
    if missing or any(not k.startswith(tuple(f"layers.{i - 1}.conv." for i in idle)) for k in unexpected):
        raise ValueError(f"dropping idle conv modules: missing {missing}, unexpected {unexpected}")
    return slim.eval()


def package_checkpoint(src: str | Path, out_dir: str | Path, *, half: bool = True,
                       trained_on: str | None = None, init_from: str | None = None) -> dict:
    """Make a shippable copy of a training checkpoint: fp16 weights (half=True), without conv modules
    that compute nothing (their output projection is zero: layers kept frozen as imported), provenance
    without machine-local paths, `trained_on` / `init_from` descriptions when given. The copy
    is loaded back and compared with the source on a fixed input; -> a report of sizes, step
    and that comparison. The source folder is never written to."""
    src, out_dir = Path(src), Path(out_dir)
    if out_dir.resolve() == src.resolve():
        raise ValueError(f"{out_dir}: the output folder must differ from the checkpoint it packages")
    ck = load_checkpoint(src)
    info = dict(ck.info)
    manifests = info.get("train_manifest")
    if manifests:
        info["train_manifest"] = _portable_paths([manifests] if isinstance(manifests, str) else manifests)
    if init_from is not None:
        info["init_from"] = init_from
    elif info.get("init_from"):
        info["init_from"] = _portable_paths([info["init_from"]])[0]
    if trained_on is not None:
        info["trained_on"] = trained_on
    ck.info = info
    shipped = Checkpoint(_without_idle_convs(ck.model), ck.tokenizer, ck.features, info)
    save_checkpoint(shipped, out_dir, half=half)
    copy = load_checkpoint(out_dir)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 400, ck.model.cfg.feat_dim, generator=g) * 3 + 8
    xl = torch.tensor([400, 300])
    with torch.no_grad():
        ref = ck.model(x, xl)
        a, b = ref.final.log_probs(), copy.model(x, xl).final.log_probs()
    valid = torch.arange(a.shape[1])[None, :] < ref.lengths[:, None]
    agree = float((a.argmax(-1) == b.argmax(-1))[valid].float().mean())
    size = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file())
    return {"out_dir": str(out_dir), "bytes": size, "step": info.get("step"), "fp16": half,
            "conv_layers": copy.model.cfg.conv_layers,
            "max_logprob_diff": float((a - b).abs()[valid].max()), "argmax_agreement": agree}
