"""Loading a model for a backend: the torch encoder, or its ONNX export on ONNX Runtime.

`auto` (the default) is ONNX Runtime on the CPU when it is installed (2-3x faster than
eager torch there) and torch otherwise, or on a GPU. A checkpoint folder given to the
ONNX backend is exported once into the user's cache and reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from asr_engine.checkpoint import Checkpoint, default_model_dir, load_checkpoint
from asr_engine.export.runtime import is_onnx_model

__all__ = ["BACKENDS", "cache_dir", "content_hash", "export_once", "load_model", "onnx_export_dir",
           "resolve_backend"]

BACKENDS = ("auto", "torch", "onnx")


def resolve_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """'auto' -> 'onnx' on the CPU when onnxruntime is installed, else 'torch'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if torch.device(device).type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnx"
    return "torch"


def onnx_export_dir(model: str | Path | None, chunk_frames: int | None = None) -> Path:
    """An ONNX export folder as given, or the checkpoint's export in the user's cache (made once)."""
    from asr_engine.export.onnx import FORMAT_VERSION, export_onnx

    if is_onnx_model(model):
        return Path(model)
    src = Path(model) if model else default_model_dir()
    if not (src / "config.json").is_file():
        raise ValueError(f"{src}: neither an ONNX export nor a checkpoint folder")
    version = content_hash(src, ("config.json", "model.safetensors"))
    out = cache_dir("onnx") / f"{version}-c{chunk_frames or 0}-v{FORMAT_VERSION}"
    return export_once(out, f"{src} to ONNX", lambda tmp: export_onnx(load_checkpoint(src), tmp, chunk_frames),
                       is_onnx_model)


def cache_dir(kind: str) -> Path:
    """Where exports made from the user's models are kept: ~/.cache/asr-engine/KIND (or XDG_CACHE_HOME)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asr-engine" / kind


def content_hash(folder: Path, names: tuple[str, ...]) -> str:
    """A short hash of some files of a folder: tells exports of different weights apart."""
    h = hashlib.sha1()
    for name in names:
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def export_once(out: Path, what: str, make: Callable[[Path], object], done: Callable[[Path], bool]) -> Path:
    """`out`, made by `make` into a temporary path and renamed into place unless `done(out)` already."""
    if not done(out):
        print(f"exporting {what} in {out} (once)", file=sys.stderr)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        make(tmp)
        tmp.rename(out)
    return out


FILE_STEP_FRAMES = 64  # encoder frames (2.56 s) per step when streaming files: latency does not matter there


def load_model(model: str | Path | None = None, backend: str = "auto", device: str = "cpu", threads: int = 0,
               chunk_frames: int | None = None, for_files: bool = False) -> Checkpoint:
    """A checkpoint folder or ONNX export (None: the bundled model) ready for an Engine on `backend`.

    for_files: the model will stream whole files, not live audio, so a checkpoint is exported
    with large steps (about FILE_STEP_FRAMES frames; the same transcripts, fewer and larger
    ORT calls: as fast as the torch encoder on whole utterances on a 2-core CPU)."""
    if resolve_backend(backend, device) == "onnx":
        from asr_engine.export.runtime import load_onnx

        if for_files and chunk_frames is None and not is_onnx_model(model):
            import json

            src = Path(model) if model else default_model_dir()
            chunk = json.loads((src / "config.json").read_text())["model"]["chunk_size"] if (
                src / "config.json").is_file() else None
            chunk_frames = chunk * max(1, FILE_STEP_FRAMES // chunk) if chunk else None
        return load_onnx(onnx_export_dir(model, chunk_frames), threads, device)
    if is_onnx_model(model):
        raise ValueError(f"{model} is an ONNX export: use the onnx backend, or give the checkpoint folder")
    return load_checkpoint(model, device)
