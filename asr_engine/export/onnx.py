"""Export a checkpoint's streaming encoder to ONNX as two stages with named caches.

    fbank.onnx   waveform (B, N) -> feats (B, T, 80)   the feature front end
    bottom.onnx  feats, n_valid, offset, bottom caches -> x, gate_raw, new bottom caches
    top.onnx     x_kept, pos_kept, valid_kept, [x_ahead, pos_ahead, valid_ahead,] top caches
                 -> final_raw, hidden (the last layer's output on the kept real frames), new top caches

The runtime (`asr_engine.export.runtime`) decides per frame which frames go through
the top stage (the blank gate on `gate_raw`), compacts them, and scatters the top
stage's output back, exactly as `Encoder.forward_chunk` does (a model with right context: the
bottom stage's x and gate_raw hold the chunk's frames then their lookahead copies, and the top
stage takes the kept copies as inputs of their own). Every cache is its own
named input (`cache_*`) and output (`new_cache_*`) with the batch in dimension 0.
The model's dimensions, chunking, vocabulary and skipping defaults are stored as
metadata in every file, so the runtime needs nothing else. With `quantize="int8-rows"` the
encoder's MatMuls multiply in int8 with each frame's own scale (`quantize_rows`: what `--precision int8`
runs); `"int8"` is ORT's dynamic quantization (one scale per call, over the batch) and `"int8-static"` its
static one (scales from calibration audio).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from asr_engine.checkpoint import Checkpoint
from asr_engine.export.runtime import FORMAT_VERSION, quantize_columns
from asr_engine.model.fbank import Fbank
from asr_engine.model.encoder import Encoder
from asr_engine.model.layers import Frames
from asr_engine.model.streaming import CACHE_FIELDS, StreamState

__all__ = ["FORMAT_VERSION", "export_onnx", "quantize_rows", "share_weights"]

QUANTIZE = ("int8-rows", "int8", "int8-static")


class BottomStage(nn.Module):
    def __init__(self, enc: Encoder):
        super().__init__()
        self.enc = enc

    def forward(self, feats, n_valid, offset, k, v, kv_pos, kv_valid, conv):
        x, _, _, gate_raw, new = self.enc.chunk_bottom(feats, n_valid, offset, (k, v, kv_pos, kv_valid, conv))
        return (x, gate_raw, *new)


class TopStage(nn.Module):
    def __init__(self, enc: Encoder):
        super().__init__()
        self.enc = enc

    def forward(self, x, pos, valid, k, v, kv_pos, kv_valid, conv):
        raw, y, new = self.enc.chunk_top(x, Frames(pos, valid, x.shape[1]), (k, v, kv_pos, kv_valid, conv))
        return (raw, y, *new)


class TopStageAhead(nn.Module):
    """The top stage of a model with right context: kept real frames and kept lookahead copies."""

    def __init__(self, enc: Encoder):
        super().__init__()
        self.enc = enc

    def forward(self, x, pos, valid, x_ahead, pos_ahead, valid_ahead, k, v, kv_pos, kv_valid, conv):
        frames = Frames(torch.cat([pos, pos_ahead], 1), torch.cat([valid, valid_ahead], 1), x.shape[1])
        raw, y, new = self.enc.chunk_top(torch.cat([x, x_ahead], 1), frames, (k, v, kv_pos, kv_valid, conv))
        return (raw, y, *new)


def _model_version(model: Encoder) -> str:
    """A short hash of the weights: tells exports of different checkpoints apart."""
    import hashlib

    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _metadata(ckpt: Checkpoint, chunk_frames: int, quantize: str | None) -> dict[str, str]:
    cfg = ckpt.model.cfg
    return {"asr_engine_format": str(FORMAT_VERSION), "chunk_frames": str(chunk_frames),
            "quantization": quantize or "none", "left_chunks": str(cfg.left_chunks),
            "subsampling": str(cfg.subsampling), "model_version": _model_version(ckpt.model),
            "model_config": json.dumps(cfg.to_dict()), "features": json.dumps(asdict(ckpt.features)),
            "tokenizer": json.dumps(ckpt.tokenizer.to_config()), "blank_id": "0",
            "vocab_size": str(cfg.vocab_size), "skip_layer": str(cfg.skip_layer),
            "skip_threshold": str(cfg.skip_threshold), "info": json.dumps(ckpt.info),
            "parameters": str(sum(p.numel() for p in ckpt.model.parameters()))}


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    for key, value in meta.items():
        m.metadata_props.add(key=key, value=value)
    onnx.save(m, str(path))


def _quantize(path: Path) -> None:
    """int8 weights for the MatMuls of one stage, in place (ORT dynamic quantization). reduce_range: 7-bit
    weights, as quantize_columns' (without them AVX2 CPUs without VNNI saturate the u8 x s8 products' sums)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    quantize_dynamic(str(path), str(tmp), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                     reduce_range=True)
    tmp.replace(path)


def _heads(meta: dict[str, str]) -> list[str]:
    """The CTC heads' output projections, which stay fp32 when the encoder is quantized (the gate's blank
    probability and the final log-probs are read from them directly)."""
    return ["/heads.{}/out/MatMul".format(meta["skip_layer"]), "/final_head/out/MatMul"]


def quantize_rows(path: Path, exclude: list[str]) -> int:
    """int8 MatMuls whose result for a frame depends only on that frame, in place; returns how many.

    Each MatMul with a constant 2-D fp32 weight, and each Gemm that is a linear layer (x W^T + b, as torch
    exports nn.Linear on 2-D input: the LM's step), but those named in `exclude`, becomes: the input quantized
    row by row (each frame's own min and max, both widened to take 0, give its scale and uint8 zero point),
    the weight column by column (int8, symmetric: quantize_columns), an integer MatMul (`MatMulInteger`, the
    CPU's int8 dot products), and the float result (acc - zero_point x column_sum) x row_scale x column_scale.
    Written as plain ONNX ops because ORT's quantizers give one activation scale per call (dynamic: over
    the whole batch, so a stream's transcript would depend on its batchmates) or fixed ones (static:
    calibrated on synthetic speech); measured in docs/onnx.md."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    consts = {"zero": 0.0, "inv255": 1.0 / 255.0, "eps": 1e-8, "half": 0.5, "top": 255.49}
    m.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), f"rowq::{k}")
                               for k, v in consts.items())
    nodes, done, n = [], set(), 0
    for node in m.graph.node:
        w = inits.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and node.name not in exclude else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT or not _linear_gemm(node):
            nodes.append(node)
            continue
        transposed = node.op_type == "Gemm"  # Gemm's weight is (out, in): its columns are W^T's
        wq = f"{w.name}::{'T::' if transposed else ''}int8"
        if wq not in done:
            a = numpy_helper.to_array(w)
            q, scale, colsum = quantize_columns(a.T if transposed else a)
            m.graph.initializer.extend([numpy_helper.from_array(q, wq),
                                        numpy_helper.from_array(scale, wq[: -len("int8")] + "scale"),
                                        numpy_helper.from_array(colsum, wq[: -len("int8")] + "colsum")])
            done.add(wq)
        base = wq[: -len("int8")]
        bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
        x, y, p = node.input[0], node.output[0], f"{node.name}::rowq/"

        def op(kind, inputs, name=None, **attrs):
            out = p + (name or kind)
            nodes.append(helper.make_node(kind, inputs, [y if name == "y" else out], name=out, **attrs))
            return out

        lo = op("Min", [op("ReduceMin", [x], axes=[-1], keepdims=1), "rowq::zero"], "lo")
        hi = op("Max", [op("ReduceMax", [x], axes=[-1], keepdims=1), "rowq::zero"], "hi")
        scale = op("Max", [op("Mul", [op("Sub", [hi, lo], "range"), "rowq::inv255"], "scale0"), "rowq::eps"],
                   "scale")
        zp = op("Round", [op("Div", [op("Neg", [lo], "neg_lo"), scale], "zp0")], "zp")
        # x / scale + zp, rounded: the Cast to uint8 truncates, so + 0.5 first (the values are >= 0)
        xz = op("Add", [op("Mul", [x, op("Reciprocal", [scale], "inv")], "xs"),
                        op("Add", [zp, "rowq::half"], "zp_half")], "xz")
        xq = op("Cast", [op("Clip", [xz, "rowq::zero", "rowq::top"], "xc")], "xq", to=TensorProto.UINT8)
        acc = op("Cast", [op("MatMulInteger", [xq, wq], "acc_int")], "acc", to=TensorProto.FLOAT)
        d = op("Sub", [acc, op("Mul", [zp, base + "colsum"], "zp_sum")], "d")
        scaled = op("Mul", [d, op("Mul", [scale, base + "scale"], "scales")], None if bias else "y")
        if bias:
            op("Add", [scaled, bias], "y")
        n += 1
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for node in m.graph.node for i in node.input}
    kept = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    onnx.save(m, str(path))
    return n


def _linear_gemm(node) -> bool:
    """A MatMul, or a Gemm that computes x W^T (+ b): alpha = beta = 1, x as it is, W transposed."""
    if node.op_type == "MatMul":
        return True
    from onnx import helper

    a = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    return a.get("transA", 0) == 0 and a.get("transB", 0) == 1 and a.get("alpha", 1.0) == 1.0 \
        and a.get("beta", 1.0) == 1.0


def _quantize_static(out: Path, calibration: list, meta: dict[str, str]) -> None:
    """int8 MatMuls with activation scales fixed by calibration (ORT static quantization, QDQ): the
    fp32 export in `out` streams the calibration audio, each stage's inputs are recorded, and its
    MatMuls (but the CTC heads' output projections) get per-channel int8 weights and MinMax
    activation ranges. Unlike dynamic quantization, whose activation scale is computed per call
    over the whole batch, a stream decodes the same alone or batched."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from asr_engine.engine import DecodeOptions, Engine
    from asr_engine.export.runtime import OnnxModel

    model = OnnxModel(out, threads=1)
    feeds: dict[str, list] = {"bottom": [], "top": []}

    class Recorder:
        def __init__(self, session, stage):
            self.session, self.stage = session, stage

        def run(self, names, feed):
            feeds[self.stage].append({k: v.copy() for k, v in feed.items()})
            return self.session.run(names, feed)

    model.bottom, model.top = Recorder(model.bottom, "bottom"), Recorder(model.top, "top")
    Engine(model, DecodeOptions(skip_threshold=1.0, max_batch=8)).transcribe_arrays(
        calibration, [str(i) for i in range(len(calibration))], streaming=True)

    class Reader(CalibrationDataReader):
        def __init__(self, rows):
            self.rows = iter(rows)

        def get_next(self):
            return next(self.rows, None)

    heads = _heads(meta)
    for stage in ("bottom", "top"):
        path = out / f"{stage}.onnx"
        tmp = path.with_suffix(".int8.onnx")
        quantize_static(str(path), str(tmp), Reader(feeds[stage]), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
                        nodes_to_exclude=heads, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        tmp.replace(path)


def export_onnx(ckpt: Checkpoint, out_dir: str | Path, chunk_frames: int | None = None,
                opset: int = 17, quantize: str | None = None, calibration: list | None = None) -> Path:
    """Write fbank.onnx, bottom.onnx, top.onnx and the tokenizer into out_dir; returns out_dir.

    The bottom stage takes chunks of exactly `chunk_frames` encoder frames (a multiple of
    the model's chunk; default one chunk); the top stage takes any number of kept frames.
    quantize "int8": dynamic quantization (activation scales per call, over the batch);
    "int8-static": static, with `calibration` (16 kHz arrays of training speech)."""
    import shutil

    if quantize not in (None, *QUANTIZE):
        raise ValueError(f"quantize must be one of {QUANTIZE} or None, got {quantize!r}")
    if (quantize == "int8-static") != bool(calibration):
        raise ValueError("int8-static quantization needs calibration audio (and only it takes any)")

    model = ckpt.model.float().eval()
    cfg = model.cfg
    C = chunk_frames or cfg.chunk_size
    if C % cfg.chunk_size:
        raise ValueError(f"chunk_frames must be a multiple of the model's chunk_size ({cfg.chunk_size})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    S = cfg.skip_layer
    state = StreamState.zeros(cfg, 2)
    names = [f"cache_{f}" for f in CACHE_FIELDS]
    new_names = [f"new_cache_{f}" for f in CACHE_FIELDS]
    dyn_cache = {n: {0: "batch"} for n in names + new_names}
    R = cfg.right_context
    # without lookahead the bottom stage also takes fewer frames than C: a stream's last step then runs on
    # its real frames only (a whole file in full context is mostly one short step; see `short_steps`), and
    # a stream's only step may take caches of no frames (StreamState.without_window)
    short = R == 0
    if short:
        for f, axis in {"k": 3, "v": 3, "kv_pos": 2, "kv_valid": 2}.items():
            dyn_cache[f"cache_{f}"][axis] = dyn_cache[f"new_cache_{f}"][axis] = "window"
    feats = torch.randn(2, cfg.input_frames(C + R), cfg.feat_dim)
    n_valid = torch.tensor([C + R, C // 2])
    meta = {**_metadata(ckpt, C, quantize), "short_steps": "1" if short else "0"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape arithmetic traced as constants, as meant
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter, which handles the stages
        torch.onnx.export(Fbank(ckpt.features).eval(), (torch.randn(2, 16000) * 0.1,), out / "fbank.onnx",
                          input_names=["waveform"], output_names=["feats"], opset_version=opset, dynamo=False,
                          dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "feats": {0: "batch", 1: "frames"}})
        # each wrapper in eval mode: the exporter puts a module back in its own mode afterwards, which train(True)
        # would pass on to the model
        torch.onnx.export(BottomStage(model).eval(), (feats, n_valid, state.offset, *state.stage(0, S)),
                          out / "bottom.onnx",
                          input_names=["feats", "n_valid", "offset", *names],
                          output_names=["x", "gate_raw", *new_names], opset_version=opset, dynamo=False,
                          dynamic_axes={"feats": {0: "batch", **({1: "feat_frames"} if short else {})},
                                        "n_valid": {0: "batch"}, "offset": {0: "batch"},
                                        "x": {0: "batch", **({1: "frames"} if short else {})},
                                        "gate_raw": {0: "batch", **({1: "frames"} if short else {})}, **dyn_cache})
        T = 5
        x = torch.randn(2, T, cfg.d_model)
        pos = torch.arange(T).expand(2, T).contiguous()
        valid = torch.tensor([[True] * T, [True] * 3 + [False] * 2])
        inputs, stage = (x, pos, valid), TopStage(model).eval()
        input_names = ["x", "pos", "valid"]
        dyn = {"x": {0: "batch", 1: "kept"}, "pos": {0: "batch", 1: "kept"}, "valid": {0: "batch", 1: "kept"}}
        if R:  # the kept lookahead copies, as inputs of their own
            A = 3
            inputs += (torch.randn(2, A, cfg.d_model), pos[:, :A] + C, valid[:, :A].flip(0))
            input_names += ["x_ahead", "pos_ahead", "valid_ahead"]
            dyn.update({f"{n}_ahead": {0: "batch", 1: "kept_ahead"} for n in ("x", "pos", "valid")})
            stage = TopStageAhead(model).eval()
        torch.onnx.export(stage, (*inputs, *state.stage(S, cfg.n_layers)), out / "top.onnx",
                          input_names=[*input_names, *names],
                          output_names=["final_raw", "hidden", *new_names], opset_version=opset, dynamo=False,
                          dynamic_axes={**dyn, "final_raw": {0: "batch", 1: "kept"}, "hidden": {0: "batch", 1: "kept"},
                                        **dyn_cache})
    if quantize == "int8":
        _quantize(out / "bottom.onnx")
        _quantize(out / "top.onnx")
    if quantize == "int8-rows":
        for stage in ("bottom.onnx", "top.onnx"):
            quantize_rows(out / stage, _heads(meta))
    tok_file = ckpt.tokenizer.to_config().get("model_file")
    if tok_file:
        shutil.copy(ckpt.tokenizer.model_path, out / tok_file)
    for name in ("fbank.onnx", "bottom.onnx", "top.onnx"):
        _add_metadata(out / name, {**meta, "stage": name.split(".")[0]})
    # what backend reads of an export folder: the layout for whole files (resolve_context), int8 MatMuls
    info = {**({"context": "full"} if cfg.with_context("full") == cfg else {}),
            **({"quantization": quantize} if quantize else {})}
    if info:
        (out / "export.json").write_text(json.dumps(info) + "\n")
    if quantize == "int8-static":  # calibrated on the fp32 export just written (quantize_static keeps its metadata)
        _quantize_static(out, calibration, meta)
    return out


# ONNX tensor types of the safetensors dtypes the runtime reads back (TensorProto.FLOAT16, FLOAT)
_ONNX_TYPES = {"F16": 10, "F32": 1}


def safetensors_index(path: Path) -> tuple[dict[str, dict], int]:
    """The header of a safetensors file (name -> dtype, shape, data_offsets) and where its data starts.

    The format is an 8-byte little-endian header length, a JSON header, then the raw tensors."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def share_weights(out: Path, weights: Path, stages: tuple[str, ...] = ("bottom.onnx", "top.onnx"),
                  location: str | None = None) -> dict:
    """Point an export's weights at the checkpoint's own `weights` file instead of copying them.

    Every initializer of the `stages` in `out` (an encoder export's bottom.onnx and top.onnx; an LM folder's
    steps) whose values are a tensor of `weights` (as stored,
    or transposed) becomes a reference to that tensor's bytes in the file: an external-data
    initializer in its stored dtype, then Cast to float32 (and Transpose) nodes in front of the graph,
    which ONNX Runtime folds into constants when the session starts. The int8 weights of quantize_rows
    (and their scales and column sums) that quantize_columns makes from such a tensor become references
    that say so ("derive"): the runtime computes them from the tensor when it opens the export. The export
    then holds only the graphs (a few hundred kB) and the weights ship once, in model.safetensors beside the
    export folder. The runtime hands the referenced bytes to ORT itself (`add_external_initializers`, from a
    memory map), so nothing but numpy reads them. `location`: the weights file as the graphs name it (default
    ../NAME: the export folder sits beside it). Returns the references for export.json."""
    import hashlib

    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    def digest(a):
        return a.shape, a.dtype.str, hashlib.sha1(np.ascontiguousarray(a).tobytes()).digest()

    graphs = {stage: onnx.load(str(out / stage)) for stage in stages}
    location = location or f"../{weights.name}"
    has_int8 = any(i.name.endswith("::int8") for m in graphs.values() for i in m.graph.initializer)
    header, data_start = safetensors_index(weights)
    raw = np.memmap(weights, dtype=np.uint8, mode="r")
    by_value: dict[tuple, tuple[str, bool]] = {}
    for name, h in header.items():
        if h["dtype"] not in _ONNX_TYPES:
            continue
        a, b = (data_start + o for o in h["data_offsets"])
        dtype = np.float16 if h["dtype"] == "F16" else np.float32
        t = raw[a:b].view(dtype).astype(np.float32).reshape(h["shape"])  # as the export holds it
        by_value[digest(t)] = (name, False)
        if t.ndim == 2:
            by_value.setdefault(digest(t.T), (name, True))
            for w, transposed in ((t, False), (t.T, True)) if has_int8 else ():  # what quantize_rows makes of it
                by_value.setdefault(digest(quantize_columns(w)[0]), (name, transposed))
    refs = {}
    for stage, m in graphs.items():
        inits = {i.name: i for i in m.graph.initializer}
        kept, nodes, shared, derived = [], [], [], set()
        # each int8 weight before its scales and sums, which it takes along when it is shared
        for init in sorted(m.graph.initializer, key=lambda i: not i.name.endswith("::int8")):
            if init.name in derived:
                continue
            a = numpy_helper.to_array(init)
            quantized = a.dtype == np.int8 and init.name.endswith("::int8")
            hit = (by_value.get(digest(a)) if (a.dtype == np.float32 or quantized) and a.size >= 1024 else None)
            if hit is None:
                kept.append(init)
                continue
            name, transposed = hit
            h = header[name]
            offset, end = (data_start + o for o in h["data_offsets"])
            source = {"tensor": name, "dtype": h["dtype"], "shape": h["shape"], "offset": offset,
                      "length": end - offset}

            def reference(ref_name, data_type, dims):
                ref = onnx.TensorProto(name=ref_name, data_type=data_type, dims=dims,
                                       data_location=onnx.TensorProto.EXTERNAL)
                for key, value in (("location", location), ("offset", str(offset)),
                                   ("length", str(end - offset))):
                    ref.external_data.add(key=key, value=value)
                return ref

            if quantized:  # the int8 weights, their scales and column sums: all three from one tensor
                base = init.name[: -len("::int8")]
                for part in ("int8", "scale", "colsum"):
                    t = inits[f"{base}::{part}"]
                    kept.append(reference(t.name, t.data_type, list(t.dims)))
                    shared.append({"name": t.name, **source, "derive": part, "transposed": transposed})
                    derived.add(t.name)
                continue
            cast = h["dtype"] != "F32"
            stored = f"{init.name}::stored" if cast or transposed else init.name
            kept.append(reference(stored, _ONNX_TYPES[h["dtype"]], h["shape"]))
            if cast:
                cast_out = f"{init.name}::f32" if transposed else init.name
                nodes.append(helper.make_node("Cast", [stored], [cast_out], to=onnx.TensorProto.FLOAT))
            if transposed:
                nodes.append(helper.make_node("Transpose", [cast_out if cast else stored], [init.name], perm=[1, 0]))
            shared.append({"name": stored, **source})
        del m.graph.initializer[:]
        m.graph.initializer.extend(kept)
        rest = list(m.graph.node)
        del m.graph.node[:]
        m.graph.node.extend(nodes + rest)
        onnx.save(m, str(out / stage))
        refs[stage] = shared
    return {"file": weights.name, "initializers": refs}
