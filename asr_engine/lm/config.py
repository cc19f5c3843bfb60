"""An LM folder's configuration and where LM folders are: what decoding needs of an LM without torch
(the ONNX step reads the rest from its own file)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["BOUNDARY", "FORMAT_VERSION", "LMConfig", "default_lm_dir", "lm_fusion_defaults", "read_lm_config",
           "resolve_lm_dir", "step_version", "vocab_fingerprint"]

BOUNDARY = 0  # the CTC blank id doubles as <s> and </s>
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    d_model: int = 256
    n_layers: int = 2
    ff_mult: int = 2
    dropout: float = 0.1
    vocab_hash: str = ""  # fingerprint of the tokenizer it was trained with (see vocab_fingerprint)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "LMConfig":
        known = {f.name for f in fields(LMConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LM config keys: {unknown}")
        return LMConfig(**d)


def vocab_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary: an LM only fits the acoustic model it shares it with."""
    vocab = getattr(tokenizer, "vocab", None)
    return hashlib.sha256(json.dumps(list(vocab)).encode()).hexdigest()[:16] if vocab else ""


def step_version(path: str | Path) -> str:
    """What an LM folder's exported decoding step depends on, as a short hash: lm.json's format and
    network and the weights file, not its fusion weights or provenance (editing those needs no
    new export)."""
    path = resolve_lm_dir(path)
    meta = json.loads((path / "lm.json").read_text())
    h = hashlib.sha1(json.dumps({k: meta.get(k) for k in ("format_version", "model")}, sort_keys=True).encode())
    h.update((path / "lm.safetensors").read_bytes())
    return h.hexdigest()[:16]


def default_lm_dir() -> Path:
    """The LM bundled with the package (trained for the bundled acoustic model's vocabulary)."""
    from importlib import resources

    return Path(str(resources.files("asr_engine") / "models" / "default-lm"))


def resolve_lm_dir(path: str | Path) -> Path:
    """'default' -> the bundled LM; anything else is a folder."""
    return default_lm_dir() if str(path) == "default" else Path(path)


def lm_fusion_defaults(path: str | Path) -> dict:
    """The fusion weights recorded in an LM folder's lm.json ({} when none were tuned)."""
    meta = json.loads((resolve_lm_dir(path) / "lm.json").read_text())
    return dict(meta.get("fusion") or {})


def read_lm_config(path: str | Path, tokenizer=None) -> LMConfig:
    """An LM folder's config ('default': the bundled LM); with `tokenizer`, refuse an LM trained on
    another vocabulary than the tokenizer's."""
    path = resolve_lm_dir(path)
    if not (path / "lm.json").is_file():
        raise FileNotFoundError(f"{path}: not an LM folder (lm.json and lm.safetensors)")
    meta = json.loads((path / "lm.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: LM format {meta.get('format_version')} is not {FORMAT_VERSION}")
    cfg = LMConfig.from_dict(meta["model"])
    if tokenizer is not None:
        want = vocab_fingerprint(tokenizer)
        if cfg.vocab_hash and want and cfg.vocab_hash != want:
            raise ValueError(f"{path}: this LM was trained on another vocabulary than the acoustic model's "
                             f"({cfg.vocab_hash} vs {want}); train it with that model's tokenizer")
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is not None and cfg.vocab_size != len(vocab):
        raise ValueError(f"{path}: the LM has {cfg.vocab_size} tokens, the acoustic model {len(vocab)}")
    return cfg
