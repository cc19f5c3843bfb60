"""Loading a model for a backend: the torch encoder, or its ONNX export on ONNX Runtime.

`auto` (the default) is ONNX Runtime on the CPU when it is installed (2-3x faster than
eager torch there) and torch otherwise, or on a GPU. A checkpoint folder given to the ONNX
backend uses the exports it ships (`onnx-cN/` subfolders made by `asr-engine export --ship`
for these weights: the bundled model has them, so its first run exports nothing), else it
is exported once into the user's cache (that needs torch). This module imports no torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

from asr_engine.export.runtime import FORMAT_VERSION, PRECISIONS, is_onnx_model
from asr_engine.model.config import CONTEXTS

__all__ = ["BACKENDS", "DECODING_FILE", "MODEL_ENV", "bundled_model_dir", "cache_dir", "content_hash",
           "check_device", "default_model_dir", "export_once", "load_model", "onnx_export_dir", "recommended_decoding",
           "resolve_backend", "resolve_context", "resolve_decoding", "resolve_lm_precision", "resolve_precision",
           "ship_exports"]

BACKENDS = ("auto", "torch", "onnx")
FILE_STEP_FRAMES = 64  # encoder frames (2.56 s) per step when streaming files: latency does not matter there


MODEL_ENV = "ASR_ENGINE_MODEL"  # a checkpoint folder to use when no --model is given


def bundled_model_dir() -> Path:
    """The model bundled with the package."""
    return Path(str(resources.files("asr_engine") / "models" / "default"))


def default_model_dir() -> Path:
    """The model used when none is given: the checkpoint folder in $ASR_ENGINE_MODEL, else the bundled one."""
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else bundled_model_dir()


DECODING_FILE = "decoding.json"  # a model folder's recommended decoding, beside config.json


def recommended_decoding(model: str | Path | None) -> dict:
    """The decoding a model folder recommends for files: its decoding.json, e.g. `{"beam": 8, "lm": "default"}`
    (the beam width, and an LM folder, relative to the model's, or 'default' for the bundled LM), or {} when
    it has none (greedy). A file of its own, as transformers' generation_config.json beside config.json: how
    to decode is not part of the network, and the ONNX exports, which hash all of config.json, stay valid.
    The bundled model recommends beam search with the bundled LM, whose fusion weights were tuned for it."""
    folder = default_model_dir() if model is None else Path(model)
    f = folder / DECODING_FILE
    if not f.is_file():
        return {}
    try:
        rec = json.loads(f.read_text())
    except ValueError as e:
        raise ValueError(f"{f}: not JSON ({e})") from None
    beam, lm, context, punct, precision, lm_precision = (
        rec.get("beam", 1), rec.get("lm"), rec.get("context", "streaming"), rec.get("punctuate"),
        rec.get("precision", "fp32"), rec.get("lm_precision", "fp32")) if isinstance(rec, dict) else (None,) * 6
    if not isinstance(rec, dict) or set(rec) - {"beam", "lm", "context", "punctuate", "precision", "lm_precision"} \
            or isinstance(beam, bool) or not isinstance(beam, int) or beam < 1 \
            or not (lm is None or isinstance(lm, str)) or (lm and beam == 1) or context not in CONTEXTS \
            or not (punct is None or isinstance(punct, str)) or precision not in PRECISIONS \
            or lm_precision not in PRECISIONS:
        raise ValueError(f'{f}: must be {{"beam": N >= 1, "lm": "default" or an LM folder (with N > 1), '
                         f'"context": "full" or "streaming" (for files), "punctuate": "default" or a punctuation '
                         f'model folder, "precision": "fp32" or "int8" (on ONNX Runtime), "lm_precision": the '
                         f'same for the LM step}}, got {rec!r}')
    if lm and lm != "default":
        lm = str(folder / lm)  # relative to the model's folder (an absolute path stays as it is)
    if punct and punct not in ("default", "none"):
        punct = str(folder / punct)
    return {"beam": beam, **({"lm": lm} if lm else {}), "context": context, **({"punctuate": punct} if punct else {}),
            **{k: rec[k] for k in ("precision", "lm_precision") if k in rec}}


def resolve_punctuation(model: str | Path | None, punctuate: str | Path | None) -> str | Path | None:
    """The punctuation model to write results with: `punctuate` as given ('default': the bundled one, a folder,
    'none': none), or when left out (None) the one the model recommends (its decoding.json "punctuate")."""
    if punctuate is None:
        punctuate = recommended_decoding(model).get("punctuate")
    return None if punctuate in (None, "none") else punctuate


def resolve_decoding(model: str | Path | None, beam: int | None,
                     lm: str | Path | None) -> tuple[int, str | Path | None]:
    """The beam and LM to decode with: a beam left out (None) takes the model's recommended one
    (recommended_decoding), and its LM too when `lm` is left out (None); a beam given takes no LM unless
    `lm` names one; `lm` 'none' is no LM."""
    if beam is None:
        rec = recommended_decoding(model)
        beam = rec.get("beam", 1)
        if lm is None and beam > 1:
            lm = rec.get("lm")
    return beam, None if lm == "none" else lm


def resolve_context(model: str | Path | None, context: str | None, live: bool = False) -> str:
    """The layout to decode files with: `context` when given, else "streaming" for a file decoded as a live
    stream would be (`live`: --streaming, --endpoint, --chunk-frames), an ONNX export's own layout, and a
    checkpoint's recommendation (its decoding.json "context", default "streaming") otherwise. Full context
    with `live` is an error."""
    if context is not None and context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if live:
        if context == "full":
            raise ValueError("full context decodes whole files: it cannot be combined with streaming options")
        return "streaming"
    if context is not None:
        return context
    if is_onnx_model(model):  # an export folder is in one layout
        return _export_context(Path(model))
    return recommended_decoding(model).get("context", "streaming")


def check_device(device: str, backend: str = "auto") -> str:
    """`device` ("cpu", "cuda" or "cuda:N") as given, or a ValueError that says why `backend` cannot run
    there: a name that is no such device, or CUDA where torch (for the torch backend, and for `auto`, which
    is torch on a GPU) has none or fewer GPUs than N. The ONNX backend's CUDA is onnxruntime-gpu's, which
    `OnnxModel` checks when it opens its sessions."""
    name = str(device)
    kind, colon, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (colon and not index.isdigit()):
        raise ValueError(f"device {name!r}: use cpu, cuda or cuda:N")
    if kind != "cuda" or resolve_backend(backend, name) != "torch":
        return name
    try:
        import torch
    except ImportError:
        raise ValueError(f"device {name}: the torch backend needs torch (the 'train' extra)") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"device {name}: this torch has no CUDA GPU here (use cpu)")
    if index and int(index) >= count:
        raise ValueError(f"device {name}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
                         f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return name


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """'auto' -> 'onnx' on the CPU when onnxruntime is installed, else 'torch'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if str(device).split(":")[0] == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnx"
    return "torch"


def file_chunk_frames(src: Path) -> int:
    """The step (encoder frames) for streaming whole files: about FILE_STEP_FRAMES, a multiple of the chunk."""
    chunk = json.loads((src / "config.json").read_text())["model"]["chunk_size"]
    return chunk * max(1, FILE_STEP_FRAMES // chunk)


def onnx_export_dir(model: str | Path | None, chunk_frames: int | None = None, for_files: bool = False,
                    context: str = "streaming", precision: str | None = None) -> Path:
    """An ONNX export folder as given; else for a checkpoint folder (None: the bundled one) its
    shipped export for these weights and chunk size (onnx-cN) or for full context (onnx-full), in int8
    with precision "int8" (onnx-cN-int8, onnx-full-int8), or that export in the user's cache (made once).
    for_files: without chunk_frames, the file step (file_chunk_frames) rather than one chunk. precision
    None: an export folder's own, fp32 for a checkpoint."""
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if is_onnx_model(model):
        if context == "full" and _export_context(Path(model)) != "full":
            raise ValueError(f"{model} is a streaming export: give the checkpoint folder for full context")
        if precision not in (None, _export_precision(Path(model))):
            raise ValueError(f"{model} is an export in {_export_precision(Path(model))}: give the checkpoint "
                             f"folder for {precision}")
        return Path(model)
    src = Path(model) if model else default_model_dir()
    if not (src / "config.json").is_file():
        raise ValueError(f"{src}: neither an ONNX export nor a checkpoint folder")
    if context == "full":
        if chunk_frames is not None:
            raise ValueError("full context takes whole files: leave out chunk_frames")
        name = "full"
    else:
        if chunk_frames is None:
            chunk_frames = file_chunk_frames(src) if for_files else json.loads(
                (src / "config.json").read_text())["model"]["chunk_size"]
        name = f"c{chunk_frames}"
    precision = precision or "fp32"
    if precision == "int8":
        name += "-int8"
    version = _export_version(src)
    shipped = src / f"onnx-{name}"
    info = _export_info(shipped)
    if is_onnx_model(shipped) and (info.get("weights"), info.get("format")) == (version, FORMAT_VERSION):
        return shipped
    out = cache_dir("onnx") / f"{version}-{name}-v{FORMAT_VERSION}"
    quantize = _QUANTIZE[precision]
    return export_once(out, f"{src} to ONNX", lambda tmp: _export(src, tmp, chunk_frames, quantize, context=context),
                       is_onnx_model)


_QUANTIZE = {"fp32": None, "int8": "int8-rows"}  # each precision's export (export_onnx's quantize)


def _export_precision(folder: Path) -> str:
    """"int8" for an export whose MatMuls quantize_rows made int8, else "fp32" (ORT's own int8 exports
    included: they are not what --precision int8 runs)."""
    return "int8" if _export_info(folder).get("quantization") == "int8-rows" else "fp32"


def _export_context(folder: Path) -> str:
    """"full" for an export made for whole files (ModelConfig.with_context), else "streaming"."""
    return _export_info(folder).get("context", "streaming")


def _export_version(src: Path) -> str:
    """What a checkpoint folder's ONNX exports depend on, as a short hash: all of config.json, not only
    the network (the graphs' metadata carries its features, tokenizer, default skip threshold and
    provenance), and the weights. tests/test_onnx.py checks that the bundled model's exports fit."""
    return content_hash(src, ("config.json", "model.safetensors"))


def _export_info(folder: Path) -> dict:
    try:
        return json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return {}


def _export(src: Path, out: Path, chunk_frames: int | None, quantize: str | None = None,
            calibration: list | None = None, context: str = "streaming") -> None:
    """Export `src` into `out`; context "full" exports the layout for whole files (ModelConfig.with_context),
    one chunk per step (export_onnx says so in export.json)."""
    try:
        from asr_engine.checkpoint import load_checkpoint
        from asr_engine.export.onnx import export_onnx
    except ImportError as e:
        what = "full context" if context == "full" else f"chunks of {chunk_frames} frames"
        raise RuntimeError(f"{src} has no ONNX export for {what}, and making one needs "
                           f"torch ({e}); install the 'train' extra, or give an ONNX export folder") from None
    export_onnx(load_checkpoint(src, context=context), out, chunk_frames, quantize=quantize, calibration=calibration)


def ship_exports(src: str | Path, quantize: str | None = None, calibration: list | None = None) -> list[Path]:
    """Write the ONNX exports a checkpoint folder ships (onnx-cN/ for live streaming, one chunk, and for
    files, file_chunk_frames; onnx-full/ when it recommends full context for files), each with export.json
    naming the weights it was made from; without `quantize`, each also in int8 (onnx-cN-int8/, ...,
    quantize_rows), all of them reading the weights from model.safetensors (share_weights). With `quantize`
    (ORT's int8 or int8-static), those exports only, which hold their own weights."""
    import shutil

    src = Path(src)
    version = _export_version(src)
    chunk = json.loads((src / "config.json").read_text())["model"]["chunk_size"]
    outs = []
    wanted = [(f"c{c}", c, "streaming") for c in sorted({chunk, file_chunk_frames(src)})]
    if recommended_decoding(src).get("context") == "full":
        wanted.append(("full", None, "full"))
    kinds = [("", quantize)] if quantize else [("", None), ("-int8", _QUANTIZE["int8"])]
    for name, c, context in wanted:
        for suffix, q in kinds:
            out = src / f"onnx-{name}{suffix}"
            shutil.rmtree(out, ignore_errors=True)
            _export(src, out, c, q, calibration, context)
            info = {**_export_info(out), "weights": version, "format": FORMAT_VERSION, "quantization": q or "none"}
            if q in _QUANTIZE.values():  # graphs only: the weights ship once, in model.safetensors
                from asr_engine.export.onnx import share_weights

                info["shared"] = share_weights(out, src / "model.safetensors")
            (out / "export.json").write_text(json.dumps(info) + "\n")
            outs.append(out)
    return outs


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


def _onnx_on_cpu(backend: str, device: str) -> bool:
    """Whether a resolved backend on `device` ("cpu", "cpu:N", "cuda:N") is ONNX Runtime on the CPU, where int8 runs."""
    return backend == "onnx" and str(device).split(":")[0] == "cpu"


def resolve_precision(model: str | Path | None, precision: str | None, backend: str = "auto",
                      device: str = "cpu") -> str | None:
    """The precision to run in: `precision` when given ("int8" only on ONNX Runtime on the CPU: a ValueError
    elsewhere), else on ONNX Runtime on the CPU what a checkpoint folder recommends (its decoding.json
    "precision", default fp32), None for an export folder (its own), fp32 on torch and on a GPU."""
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    onnx_cpu = _onnx_on_cpu(resolve_backend(backend, device), device)
    if precision == "int8" and not onnx_cpu:
        raise ValueError("precision int8 runs on the onnx backend on the CPU (ONNX Runtime's int8 MatMuls); "
                         "the torch backend and GPUs compute in fp32")
    if precision is not None:
        return precision
    if is_onnx_model(model):
        return None
    return recommended_decoding(model).get("precision", "fp32") if onnx_cpu else "fp32"


def resolve_lm_precision(model: str | Path | None, lm_precision: str | None, backend: str = "auto",
                         device: str = "cpu") -> str:
    """The precision of the LM step to decode with: `lm_precision` when given (int8 off ONNX Runtime on the
    CPU is a ValueError, as load_fusion says it), else on ONNX Runtime on the CPU what the acoustic model
    recommends (its decoding.json "lm_precision", default fp32; whichever LM is fused: the step's int8 is the
    same rows quantized on their own), fp32 on torch and on a GPU. Checked here too for Ray's workers, which
    open the LM only after the files have been sent out."""
    on = resolve_backend(backend, device)
    onnx_cpu = _onnx_on_cpu(on, device)
    if lm_precision == "int8" and not onnx_cpu:
        raise ValueError(f"an LM step in int8 runs on ONNX Runtime on the CPU only (here: {on} on {device}); "
                         f"use fp32")
    if lm_precision is not None:
        return lm_precision
    return recommended_decoding(model).get("lm_precision", "fp32") if onnx_cpu else "fp32"


def load_model(model: str | Path | None = None, backend: str = "auto", device: str = "cpu", threads: int = 0,
               chunk_frames: int | None = None, for_files: bool = False, context: str = "streaming",
               graphs: bool = False, precision: str | None = None):
    """A checkpoint folder or ONNX export (None: the bundled model) as an engine's model on `backend`:
    an OnnxModel (numpy and ONNX Runtime) or a TorchModel.

    for_files: the model will stream whole files, not live audio, so the ONNX backend takes large
    steps (about FILE_STEP_FRAMES frames; the same transcripts, fewer and larger ORT calls).
    context "full": the same weights in the layout for whole files (ModelConfig.with_context; on ONNX the
    onnx-full export, whose steps are one long chunk, the last one no longer than the file).
    graphs: a torch model on CUDA streams through captured CUDA graphs (`StepGraphs`).
    precision: "int8" runs the encoder's MatMuls in int8 (ONNX only: the onnx-*-int8 exports), "fp32" not;
    None: an export folder's own, else on ONNX on the CPU what the model recommends (its decoding.json
    "precision", default fp32), fp32 on torch and on a GPU."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if graphs and (resolve_backend(backend, device) != "torch" or not str(device).startswith("cuda")):
        raise ValueError("CUDA graphs need the torch backend on a CUDA device (--backend torch --device cuda)")
    check_device(device, backend)
    precision = resolve_precision(model, precision, backend, device)
    if resolve_backend(backend, device) == "onnx":
        from asr_engine.export.runtime import OnnxModel

        return OnnxModel(onnx_export_dir(model, chunk_frames, for_files, context, precision), threads, device)
    if is_onnx_model(model):
        raise ValueError(f"{model} is an ONNX export: use the onnx backend, or give the checkpoint folder")
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.model.runtime import TorchModel

    return TorchModel(load_checkpoint(model, device, context), device, graphs)
