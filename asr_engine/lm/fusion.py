"""Shallow fusion of the recurrent LM into CTC prefix beam search.

A prefix y is ranked by  log P_ctc(y | audio) + weight * log P_lm(y) + length_bonus * |y|,  and a
finished hypothesis also gets weight * log P_lm(</s> | y). The LM part is a function of the prefix
alone, so the search keeps it beside each prefix like a hotword bonus (see decoding.py).

The LM runs one batched step per frame for every prefix that frame created, across all the
searches decoded together (the beams of every session in an engine batch): `LMStep` takes the
parents' states, the index of each new prefix's parent in them (the beam's reorder) and the new
tokens. Two implementations: the same step exported to ONNX and run on ONNX Runtime (here, numpy only;
the bundled LM ships its lm.onnx), and the torch model (`asr_engine.lm.export.TorchLMStep`; on
CUDA the state update is one Triton kernel per layer).

An LM folder may also hold `lexicon.txt`, the words the LM's text knows (`asr-engine lm lexicon`):
the fusion then carries an `asr_engine.lexicon.Lexicon`, and beam search charges its penalty to
prefixes that spell something that is not a word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_engine.lm.config import BOUNDARY, lm_fusion_defaults, read_lm_config, resolve_lm_dir, step_version

__all__ = ["LEXICON_FILE", "ONNX_FORMAT", "PRECISIONS", "SHARED_SPEC", "OnnxLMStep", "ShallowFusion", "load_fusion",
           "onnx_step", "step_file"]

ONNX_FORMAT = 1
PRECISIONS = ("fp32", "int8")  # the LM step's: as the acoustic model's (asr_engine.export.runtime.PRECISIONS)
WEIGHT, LENGTH_BONUS = 0.5, 1.0  # for an LM whose lm.json records no tuned fusion weights
LEXICON_PENALTY = -4.0  # for an LM folder with a lexicon and no tuned penalty (the bundled LM's tuning)
LEXICON_FILE = "lexicon.txt"
# where an LM folder's exported steps find their weights in its lm.safetensors (`asr-engine lm export`)
SHARED_SPEC = "lm-onnx.json"
# a step's result: next-token log-probs (N lists of V), new state (L, N, d) (numpy on ONNX, torch on torch)
StepResult = tuple


def step_file(precision: str = "fp32") -> str:
    """The name of an LM folder's exported step in this precision: lm.onnx, lm-int8.onnx."""
    if precision not in PRECISIONS:
        raise ValueError(f"LM precision: one of {', '.join(PRECISIONS)}, got {precision!r}")
    return "lm.onnx" if precision == "fp32" else f"lm-{precision}.onnx"


def onnx_step(lm_dir: str | Path, threads: int = 1, precision: str = "fp32") -> "OnnxLMStep":
    """The LM's ONNX step in `precision` (fp32, or int8: its linear layers in int8, each row quantized on its
    own): the folder's own lm.onnx / lm-int8.onnx when it was made from these weights (the bundled LM ships
    both), else an export in the user's cache, made once per set of weights (needs torch). The shipped file is
    opened once, and its metadata says whether it fits."""
    from asr_engine.backend import cache_dir, export_once

    lm_dir = resolve_lm_dir(lm_dir)
    version = step_version(lm_dir)
    name = step_file(precision)
    if (lm_dir / name).is_file() and _shared_spec(lm_dir).get("weights", version) == version:
        step = OnnxLMStep(lm_dir / name, threads, lm_dir)
        if step.meta.get("weights") == version and step.precision == precision:
            return step
    out = cache_dir("lm-onnx") / f"{version}-v{ONNX_FORMAT}{'' if precision == 'fp32' else '-' + precision}.onnx"

    def make(tmp: Path) -> None:
        from asr_engine.lm.export import export_lm_onnx
        from asr_engine.lm.model import load_lm

        export_lm_onnx(load_lm(lm_dir), tmp, weights=version, precision=precision)

    return OnnxLMStep(export_once(out, f"the LM step of {lm_dir} to ONNX", make, Path.is_file), threads)


def _shared_spec(lm_dir: Path) -> dict:
    """lm-onnx.json: the weights its steps were made from (step_version) and where they read them."""
    import json

    try:
        return json.loads((lm_dir / SHARED_SPEC).read_text())
    except (OSError, ValueError):
        return {}


class OnnxLMStep:
    """The exported step on ONNX Runtime (CPU). `lm_dir`: the LM folder whose lm-onnx.json says where in its
    lm.safetensors the step's weights are (a step `asr-engine lm export` wrote there holds only its graph)."""

    def __init__(self, path: str | Path, threads: int = 1, lm_dir: str | Path | None = None):
        import onnxruntime as ort

        from asr_engine.export.runtime import _POOL, _shared_weights, session_options

        so = session_options(threads, global_pool=_POOL.get("mode") == "global")  # the process's thread-pool mode
        if lm_dir is not None:
            name = Path(path).name
            names, values = _shared_weights(Path(lm_dir), SHARED_SPEC, Path(lm_dir), (name,)).get(name, ([], []))
            if names:
                so.add_external_initializers(names, values)
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.meta = meta = self.sess.get_modelmeta().custom_metadata_map
        if meta.get("asr_engine_lm_format") != str(ONNX_FORMAT):
            raise ValueError(f"{path}: not an asr-engine LM step (format {meta.get('asr_engine_lm_format')})")
        self.n_layers, self.d_model = int(meta["n_layers"]), int(meta["d_model"])
        self.precision = meta.get("precision", "fp32")  # an export made before int8 steps: fp32

    def zeros(self, n: int) -> np.ndarray:
        return np.zeros((self.n_layers, n, self.d_model), np.float32)

    def __call__(self, tokens: list[int], state: np.ndarray, src: list[int]) -> StepResult:
        logp, new = self.sess.run(None, {"tokens": np.asarray(tokens, np.int64),
                                         "state": np.ascontiguousarray(state, np.float32),
                                         "src": np.asarray(src, np.int64)})
        return logp.tolist(), new


class ShallowFusion:
    """An LM step with its fusion weights; shared by every search that uses it (it holds no
    per-stream state: each search keeps its prefixes' LM states)."""

    def __init__(self, step, weight: float = WEIGHT, length_bonus: float = LENGTH_BONUS, lexicon=None):
        if not weight >= 0:
            raise ValueError(f"LM weight must be >= 0, got {weight}")
        if not np.isfinite(length_bonus):
            raise ValueError(f"length bonus must be finite, got {length_bonus}")
        self.step, self.weight, self.length_bonus = step, float(weight), float(length_bonus)
        self.lexicon = lexicon  # an asr_engine.lexicon.Lexicon, or None
        logp, state = step([BOUNDARY], step.zeros(1), [0])
        self.initial_state = state  # (L, 1, d): after <s>
        self.initial_next = logp[0]  # log P(first token)
        self.calls = 0  # batched steps run (for statistics)
        self.rows = 0  # hypotheses advanced

    def __call__(self, tokens: list[int], state, src: list[int]) -> StepResult:
        self.calls += 1
        self.rows += len(tokens)
        return self.step(tokens, state, src)


def load_fusion(path: str | Path, tokenizer, weight: float | None = None, length_bonus: float | None = None,
                backend: str = "auto", device: str = "cpu", threads: int = 1,
                lexicon_penalty: float | None = None, precision: str = "fp32") -> ShallowFusion:
    """An LM folder (from `asr-engine lm train`; 'default': the bundled LM) ready for decoding on
    `backend` ('onnx': its step exported once and run on ONNX Runtime with `threads` threads (a
    step is small: 1 is fastest); 'torch': the module on `device`). `weight`, `length_bonus` and
    `lexicon_penalty` default to the values tuned for the LM (recorded in its lm.json), else WEIGHT,
    LENGTH_BONUS and LEXICON_PENALTY; the lexicon is the folder's lexicon.txt, when it has one
    (a penalty of 0 leaves it out). Refuses an LM trained on another vocabulary than the acoustic
    model's. `precision` "int8" runs the ONNX step's linear layers in int8 (ONNX Runtime on the CPU only, as
    the acoustic model's int8)."""
    from asr_engine.backend import check_device, resolve_backend, resolve_lm_precision
    from asr_engine.lexicon import Lexicon

    check_device(device, backend)
    backend = resolve_backend(backend, device)
    step_file(precision)  # a precision that is none is refused before anything loads
    resolve_lm_precision(None, precision, backend, device)  # int8 off ONNX Runtime on the CPU is refused
    read_lm_config(path, tokenizer)
    tuned = lm_fusion_defaults(path)
    weight = tuned.get("weight", WEIGHT) if weight is None else weight
    length_bonus = tuned.get("length_bonus", LENGTH_BONUS) if length_bonus is None else length_bonus
    lexicon_file = resolve_lm_dir(path) / LEXICON_FILE
    if lexicon_penalty is not None and lexicon_penalty != 0 and not lexicon_file.is_file():
        raise ValueError(f"{lexicon_file}: the LM has no lexicon, so a lexicon penalty means nothing "
                         f"(`asr-engine lm lexicon` writes one)")
    penalty = tuned.get("lexicon_penalty", LEXICON_PENALTY) if lexicon_penalty is None else lexicon_penalty
    lexicon = Lexicon.from_file(lexicon_file, tokenizer, penalty) if penalty != 0 and lexicon_file.is_file() else None
    if backend == "onnx":
        return ShallowFusion(onnx_step(path, threads, precision), weight, length_bonus, lexicon)
    from asr_engine.lm.export import TorchLMStep
    from asr_engine.lm.model import load_lm

    return ShallowFusion(TorchLMStep(load_lm(path, device)), weight, length_bonus, lexicon)
