"""ONNX export and the ONNX Runtime backend: parity with the torch encoder, chunk by chunk."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from asr_engine.checkpoint import Checkpoint  # noqa: E402
from asr_engine.cli import main  # noqa: E402
from asr_engine.engine import DecodeOptions, Engine  # noqa: E402
from asr_engine.export.onnx import export_onnx  # noqa: E402
from asr_engine.model.fbank import Fbank  # noqa: E402
from asr_engine.export.runtime import OnnxModel  # noqa: E402
from asr_engine.model.encoder import Encoder, SkipOptions  # noqa: E402
from asr_engine.model.runtime import TorchModel  # noqa: E402
from asr_engine.tokenizer import CharTokenizer  # noqa: E402

from conftest import tiny_model  # noqa: E402
from asr_engine.features import FbankConfig  # noqa: E402


@pytest.fixture(scope="module", params=["conformer", "whisper", "conformer-right3"])
def tiny(request, tmp_path_factory):
    layout, _, right = request.param.partition("-right")
    m = tiny_model(layout, right_context=int(right or 0))
    ckpt = Checkpoint(m, CharTokenizer(), FbankConfig(kind="kaldi" if layout == "conformer" else "whisper"))
    return ckpt, export_onnx(ckpt, tmp_path_factory.mktemp("onnx"), chunk_frames=8)


def _gap_threshold(m: Encoder, feats: torch.Tensor) -> float:
    """A threshold that skips about half of the frames and lies in a wide gap between the gate's
    P(blank) values, so float differences between backends cannot flip a decision."""
    with torch.no_grad():
        out = m(feats, torch.full((feats.shape[0],), feats.shape[1]))
    p = out.intermediate[m.cfg.skip_layer].blank_prob().flatten().sort().values
    n = len(p)
    mid = p[n // 4: 3 * n // 4]
    i = int((mid[1:] - mid[:-1]).argmax())
    return float(mid[i] + mid[i + 1]) / 2


@pytest.mark.parametrize("skipping", [False, True])
def test_onnx_equals_torch_chunk_by_chunk(tiny, skipping):
    ckpt, out = tiny
    m, onnx = TorchModel(ckpt), OnnxModel(out, threads=1)
    assert onnx.cfg == m.cfg and onnx.chunk_frames == 8
    B, C, cfg = 3, 8, m.cfg
    R = cfg.right_context
    win, hop = cfg.input_frames(C + R), cfg.stride * C
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B, hop * 12 + win, 80, generator=g) * 3 + 8
    skip = SkipOptions(_gap_threshold(ckpt.model, feats), 1) if skipping else None
    st_t, st_o = m.zeros_state(B), onnx.zeros_state(B)
    lengths = np.array([12 * C, 7 * C + 3, 2 * C])  # ragged: streams end at different chunks
    skipped = kept = 0
    for i in range(12):
        n_valid = np.clip(lengths - i * C, 0, C + R)
        chunk = feats[:, i * hop: i * hop + win].numpy()
        a, top_a, st_t, h_a = m.forward_chunk(chunk, n_valid, st_t, skip, hidden=True)
        b, top_b, st_o, h_b = onnx.forward_chunk(chunk, n_valid, st_o, skip, hidden=True)
        assert isinstance(b, np.ndarray) and isinstance(st_o.k, np.ndarray)
        assert np.array_equal(top_a, top_b)
        assert not h_b[~top_b].any()  # the last layer's output only where the top stage ran
        n_out = np.minimum(n_valid, C)
        for j in range(B):
            n = int(n_out[j])
            np.testing.assert_allclose(b[j, :n], a[j, :n], atol=5e-4, rtol=1e-4)
            np.testing.assert_allclose(h_b[j, :n], h_a[j, :n], atol=5e-4, rtol=1e-4)
        kept += int(top_a.sum())
        skipped += int(n_out.sum()) - int(top_a.sum())
    for f in ("k", "v", "conv"):
        np.testing.assert_allclose(getattr(st_o, f), getattr(st_t, f).numpy(), atol=2e-4, rtol=1e-4)
    assert np.array_equal(st_o.kv_pos, st_t.kv_pos.numpy()) and np.array_equal(st_o.kv_valid, st_t.kv_valid.numpy())
    assert np.array_equal(st_o.offset, st_t.offset.numpy())
    if skipping:
        assert skipped > 0 and kept > 0


def test_numpy_gate_and_log_probs_equal_the_torch_references():
    """The ONNX runtime's numpy gate, compaction and factorized output against asr_engine.kernels."""
    from asr_engine.export import runtime as rt
    from asr_engine.kernels import REFERENCE

    rng = np.random.default_rng(3)
    cases = [(3, 16, 8, 1, 0.6), (2, 8, 4, 2, 0.3), (1, 4, 4, 0, 1.0), (4, 8, 8, 1, 0.0)]
    for B, C, chunk, dilation, threshold in cases:
        raw = (rng.standard_normal((B, C, 7)) * 3).astype(np.float32)
        n_valid = rng.integers(0, C + 1, B)
        ref = REFERENCE.gate_compact(torch.from_numpy(raw), torch.zeros(B, C, 2), torch.from_numpy(n_valid),
                                     threshold, dilation, chunk)
        keep, index, valid = rt.gate_compact(raw, n_valid, threshold, dilation, chunk)
        assert np.array_equal(keep, ref.keep.numpy()) and np.array_equal(valid, ref.valid.numpy())
        assert np.array_equal(index, ref.index.numpy())
        np.testing.assert_allclose(rt.log_probs(raw), REFERENCE.log_probs(torch.from_numpy(raw)).numpy(), atol=1e-5)
    big = np.array([[[80.0, 1.0, -1.0], [-80.0, 0.0, 0.0]]], np.float32)  # saturated gates stay finite
    assert np.isfinite(rt.log_probs(big)).all()


def test_onnx_engine_equals_torch_engine(tiny):
    ckpt, out = tiny
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 27000, 5000)]
    feats = torch.cat([Fbank(ckpt.features)(torch.from_numpy(a)[None]) for a in audios], 1)  # what the engine sees
    threshold = _gap_threshold(ckpt.model, feats)
    res = {}
    for name, c in [("torch", ckpt), ("onnx", OnnxModel(out, threads=1))]:
        eng = Engine(c, DecodeOptions(chunk_frames=8, skip_threshold=threshold))
        res[name] = eng.transcribe_arrays(audios, ["a", "b", "c"], streaming=True)
    for a, b in zip(res["torch"], res["onnx"]):
        assert (a.text, a.frames, a.top_frames) == (b.text, b.frames, b.top_frames)
    assert 0 < sum(r.top_frames for r in res["torch"]) < sum(r.frames for r in res["torch"])  # some skip
    with pytest.raises(ValueError, match="chunks of 8"):
        Engine(OnnxModel(out), DecodeOptions(chunk_frames=4))
    assert Engine(OnnxModel(out)).chunk == 8


@pytest.mark.parametrize("layout", ["conformer", "whisper"])
def test_full_context_export_equals_the_torch_encoder_on_whole_utterances(layout, tmp_path):
    """The layout for whole files (ModelConfig.with_context("full"): 512-frame chunks, one to the left, no
    lookahead) exported from the same weights: streams of any length in steps of up to 512 frames, the last
    one without padding, and a stream that fits one step without caches, read as the torch encoder reads
    the whole utterance."""
    m = tiny_model(layout)
    cfg = m.cfg.with_context("full")
    assert (cfg.chunk_size, cfg.left_chunks, cfg.right_context) == (512, 1, 0)
    assert m.cfg.with_context("streaming") == m.cfg
    full = Encoder(cfg)
    full.load_state_dict(m.state_dict())
    ckpt = Checkpoint(full.eval(), CharTokenizer(), FbankConfig(kind="kaldi" if layout == "conformer" else "whisper"))
    onnx = OnnxModel(export_onnx(ckpt, tmp_path / "full"), threads=1)
    assert not full.training  # exporting leaves the model as it was (in eval mode: no dropout)
    assert onnx.short_steps and onnx.chunk_frames == 512 and onnx.cfg == cfg
    g = torch.Generator().manual_seed(2)
    # one short step (without caches), one full step, a last step of one frame, three steps (the last one short)
    for lengths in ([40, 130], [512, 300], [513, 512], [1100, 700]):
        T = max(lengths)
        feats = torch.randn(2, cfg.input_frames(T), cfg.feat_dim, generator=g) * 3 + 8
        with torch.no_grad():
            ref = full(feats, torch.tensor([cfg.input_frames(n) for n in lengths])).final.log_probs().numpy()
        state, outs = onnx.zeros_state(2), []
        if T <= 512:
            state = state.without_window()
        for a in range(0, T, 512):
            C = min(512, T - a)
            window = feats[:, cfg.stride * a: cfg.stride * a + cfg.input_frames(C)].numpy()
            lp, _, state = onnx.forward_chunk(window, np.clip(np.array(lengths) - a, 0, C), state, None)
            outs.append(lp)
        out = np.concatenate(outs, 1)
        for j, n in enumerate(lengths):
            np.testing.assert_allclose(out[j, :n], ref[j, :n], atol=5e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="up to 512 frames"):
        onnx.forward_chunk(np.zeros((1, cfg.input_frames(512) + 1, cfg.feat_dim), np.float32), np.array([1]),
                           onnx.zeros_state(1), None)


def test_files_in_full_context_read_the_same_on_both_backends(tmp_path, monkeypatch):
    """The engine's file mode in full context (the tests' trained tiny model): whole utterances on torch,
    streamed in steps of up to 512 frames on ONNX Runtime (exported once into the cache), the same
    transcripts, in the order given (batches are formed by length)."""
    from asr_engine.audio import load_audio
    from asr_engine.backend import load_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    samples = [load_audio(f"asr_engine/samples/sample{i}.wav") for i in (1, 2, 3)]
    audios = [np.concatenate(samples * 4), *samples, samples[0][:4000]]  # 512+ frames, three short ones, a bit
    names = ["long", "s1", "s2", "s3", "bit"]
    res = {}
    for backend in ("torch", "onnx"):
        model = load_model(None, backend, for_files=True, context="full")
        assert model.cfg.chunk_size == 512
        res[backend] = Engine(model, DecodeOptions(skip_threshold=1.0, max_batch=2)).transcribe_arrays(audios, names)
    assert [r.path for r in res["onnx"]] == names == [r.path for r in res["torch"]]
    for a, b in zip(res["torch"], res["onnx"]):
        assert (a.text, a.frames, [w.start for w in a.words]) == (b.text, b.frames, [w.start for w in b.words])
    assert res["onnx"][0].frames > 512 and all(r.text for r in res["onnx"][:4])
    assert (tmp_path / "cache" / "asr-engine" / "onnx").is_dir()  # the tiny model ships no onnx-full


def _stream(model, feats: torch.Tensor, chunks: int, skip=None) -> list:
    """Every output of model.forward_chunk over `chunks` chunks of a batch of two streams."""
    cfg, C = model.cfg, model.chunk_frames
    win, hop = cfg.input_frames(C + cfg.right_context), cfg.stride * C
    state, outs = model.zeros_state(2), []
    for i in range(chunks):
        n_valid = np.clip(np.array([chunks * C, 2 * C + 1]) - i * C, 0, C + cfg.right_context)
        out, top, state = model.forward_chunk(feats[:, i * hop: i * hop + win].numpy(), n_valid, state, skip)
        outs += [out, top, state.k, state.v]
    return outs


def test_shipped_exports_keep_their_weights_in_the_checkpoint(tiny, tmp_path):
    """`export --ship` on an fp16 checkpoint: the graphs refer to model.safetensors for every weight
    instead of copying it, and stream exactly as a self-contained export of the same checkpoint."""
    import onnx

    from asr_engine.backend import onnx_export_dir, ship_exports
    from asr_engine.checkpoint import load_checkpoint, save_checkpoint

    ckpt, _ = tiny
    ck = save_checkpoint(ckpt, tmp_path / "ck", half=True)
    (shipped, *_) = ship_exports(ck)
    assert shipped == onnx_export_dir(ck) == ck / f"onnx-c{ckpt.model.cfg.chunk_size}"
    plain = export_onnx(load_checkpoint(ck), tmp_path / "plain", chunk_frames=ckpt.model.cfg.chunk_size)
    refs = json.loads((shipped / "export.json").read_text())["shared"]
    assert refs["file"] == "model.safetensors"
    for stage in ("bottom.onnx", "top.onnx"):
        inline = onnx.load(str(shipped / stage), load_external_data=False).graph.initializer
        assert not [t.name for t in inline if t.data_location != onnx.TensorProto.EXTERNAL and
                    np.prod(t.dims) >= 1024]  # every weight matrix is a reference
        assert (shipped / stage).stat().st_size < (plain / stage).stat().st_size / 2
        assert {r["dtype"] for r in refs["initializers"][stage]} == {"F16"}
    feats = torch.randn(2, 400, 80, generator=torch.Generator().manual_seed(3)) * 3 + 8
    a, b = OnnxModel(shipped, threads=1), OnnxModel(plain, threads=1)
    skip = SkipOptions(_gap_threshold(load_checkpoint(ck).model, feats), 1)
    for x, y in zip(_stream(a, feats, 6, skip), _stream(b, feats, 6, skip)):
        np.testing.assert_array_equal(x, y)
    (ck / "model.safetensors").rename(ck / "moved.safetensors")
    with pytest.raises(ValueError, match="model.safetensors, which is missing"):
        OnnxModel(shipped)


def _bundled_checkpoint_only(dest: Path) -> Path:
    """The bundled checkpoint without the ONNX exports it ships: the ONNX backend exports it into the cache."""
    import shutil

    from asr_engine.backend import default_model_dir

    dest.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.model"):
        shutil.copy(default_model_dir() / name, dest / name)
    return dest


def test_cli_export_then_onnx_backend_equals_torch(tmp_path, capsys, monkeypatch):
    """The bundled model on the bundled samples: `export` + `transcribe --backend onnx` gives the
    torch backend's transcripts, words and skipping; a checkpoint folder without shipped exports is
    exported once into the cache; the bundled model uses its shipped ones and exports nothing."""
    samples = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["export", "--output", str(tmp_path / "m")]) == 0
    ck = _bundled_checkpoint_only(tmp_path / "ck")
    outs = {}
    for name, extra in [("torch", ["--backend", "torch"]),
                        ("onnx", ["--backend", "onnx", "--model", str(tmp_path / "m")]),
                        ("cached", ["--backend", "onnx", "--model", str(ck)]), ("shipped", ["--backend", "onnx"])]:
        capsys.readouterr()
        assert main(["transcribe", *samples, "--format", "jsonl", "-q", "--threads", "1", *extra]) == 0
        outs[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for name in ("onnx", "cached"):
        assert [r["text"] for r in outs[name]] == [r["text"] for r in outs["torch"]]
        assert [r["top_fraction"] for r in outs[name]] == [r["top_fraction"] for r in outs["torch"]]
        assert [[w["word"] for w in r["words"]] for r in outs[name]] == [[w["word"] for w in r["words"]]
                                                                         for r in outs["torch"]]
    assert outs["shipped"] == outs["cached"]
    assert len(list((tmp_path / "cache" / "asr-engine" / "onnx").iterdir())) == 1  # "cached" only
    assert main(["transcribe", samples[0], "--backend", "onnx", "--model", str(tmp_path)]) == 2
    assert "neither an ONNX export nor a checkpoint" in capsys.readouterr().err


def test_shipped_exports_are_used_only_for_their_weights(tmp_path, monkeypatch):
    """A checkpoint's onnx-cN/ folders serve the ONNX backend only when export.json names its weights."""
    from asr_engine.backend import default_model_dir, onnx_export_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shipped = onnx_export_dir(None)
    assert shipped.parent == default_model_dir() and shipped.name == "onnx-c8"
    assert onnx_export_dir(None, for_files=True).name == "onnx-c64"
    assert json.loads((shipped / "export.json").read_text())["quantization"] == "none"
    ck = _bundled_checkpoint_only(tmp_path / "ck")
    import shutil

    shutil.copytree(shipped, ck / "onnx-c8")
    assert onnx_export_dir(ck) == ck / "onnx-c8"
    (ck / "config.json").write_text((ck / "config.json").read_text().replace('"info": {', '"info": {"x": 1, ', 1))
    assert onnx_export_dir(ck).parent == tmp_path / "cache" / "asr-engine" / "onnx"  # other weights: exported


def test_exported_fbank_equals_torch_and_metadata_is_complete(tiny):
    import onnx

    ckpt, out = tiny
    enc = OnnxModel(out, threads=1)
    rng = np.random.default_rng(2)
    for n in (400, 561, 16000, 16161):
        x = (0.2 * rng.standard_normal((2, n))).astype(np.float32)
        np.testing.assert_allclose(enc.fbank(x), Fbank(ckpt.features)(torch.from_numpy(x)).numpy(), atol=2e-3,
                                   rtol=1e-4)
    assert enc.fbank(np.zeros((1, 399), np.float32)).shape == (1, 0, 80)
    assert enc.n_params == sum(p.numel() for p in ckpt.model.parameters())
    for stage in ("fbank", "bottom", "top"):
        meta = {p.key: p.value for p in onnx.load(str(out / f"{stage}.onnx")).metadata_props}
        assert meta["stage"] == stage and meta["quantization"] == "none"
        assert (meta["chunk_frames"], meta["left_chunks"]) == ("8", "2")
        assert meta["subsampling"] == str(ckpt.model.cfg.subsampling)
        assert meta["blank_id"] == "0" and int(meta["vocab_size"]) == ckpt.model.cfg.vocab_size
        assert float(meta["skip_threshold"]) == ckpt.model.cfg.skip_threshold and len(meta["model_version"]) == 16


def test_int8_export_is_smaller_and_close(tiny, tmp_path):
    import onnx

    ckpt, out = tiny
    q = export_onnx(ckpt, tmp_path / "q", chunk_frames=8, quantize="int8")
    ops = {n.op_type for n in onnx.load(str(q / "top.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert (q / "top.onnx").stat().st_size < 0.8 * (out / "top.onnx").stat().st_size  # tiny: biases, norms stay
    assert OnnxModel(q).meta["quantization"] == "int8"
    m, enc = TorchModel(ckpt), OnnxModel(q, threads=1)
    feats = (torch.randn(2, m.cfg.input_frames(8 + m.cfg.right_context), 80) * 3 + 8).numpy()
    a, _, _ = m.forward_chunk(feats, np.array([8, 8]), m.zeros_state(2), None)
    b, _, _ = enc.forward_chunk(feats, np.array([8, 8]), enc.zeros_state(2), None)
    err = np.abs(b - a).mean()
    assert 0 < err < 0.05 * np.abs(a).mean()  # quantized: close, not equal
    with pytest.raises(ValueError, match="quantize"):
        export_onnx(ckpt, tmp_path / "bad", quantize="int4")


def test_static_int8_is_close_smaller_and_decodes_a_stream_alone_as_batched(tiny, tmp_path, capsys):
    """int8-static: activation scales fixed by calibration, so a stream's result does not depend on
    the streams it is batched with (dynamic int8's per-call scales do)."""
    import onnx

    ckpt, out = tiny
    rng = np.random.default_rng(4)
    speechy = [(0.2 * rng.standard_normal(n) * np.repeat(rng.random(n // 1600 + 1) > 0.4, 1600)[:n]).astype(
        np.float32) for n in (16000, 23000, 9000, 30000, 12000)]
    q = export_onnx(ckpt, tmp_path / "s", chunk_frames=8, quantize="int8-static", calibration=speechy[:3])
    ops = {n.op_type for n in onnx.load(str(q / "bottom.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert (q / "bottom.onnx").stat().st_size < (out / "bottom.onnx").stat().st_size  # tiny: convs, norms stay
    m = OnnxModel(q, threads=1)
    assert m.meta["quantization"] == "int8-static" and m.meta["stage"] == "bottom"
    feats = (torch.randn(2, m.cfg.input_frames(8 + m.cfg.right_context), 80) * 3 + 8).numpy()
    a, _, _ = TorchModel(ckpt).forward_chunk(feats, np.array([8, 8]), TorchModel(ckpt).zeros_state(2), None)
    b, _, _ = m.forward_chunk(feats, np.array([8, 8]), m.zeros_state(2), None)
    assert 0 < np.abs(b - a).mean() < 0.1 * np.abs(a).mean()
    eng = Engine(m, DecodeOptions(max_batch=8))
    together = eng.transcribe_arrays(speechy, [str(i) for i in range(5)])
    alone = [eng.transcribe_arrays([x], [str(i)])[0] for i, x in enumerate(speechy)]
    assert [(r.text, r.top_frames) for r in together] == [(r.text, r.top_frames) for r in alone]
    with pytest.raises(ValueError, match="calibration"):
        export_onnx(ckpt, tmp_path / "x", quantize="int8-static")
    assert main(["export", "--output", str(tmp_path / "y"), "--quantize", "int8-static"]) == 2
    assert "needs --calibration" in capsys.readouterr().err


def test_eval_and_auto_backend_use_onnx_runtime(tmp_path, capsys):
    """`eval --backend onnx` streams through ORT and scores like the torch backend; `auto` is ONNX on the CPU."""
    from asr_engine.backend import load_model, resolve_backend

    assert resolve_backend("auto", "cpu") == "onnx" and resolve_backend("auto", "cuda") == "torch"
    assert isinstance(load_model(None, "auto"), OnnxModel) and isinstance(load_model(None, "torch"), TorchModel)
    with pytest.raises(ValueError, match="backend must be"):
        resolve_backend("tf")
    manifest = Path("asr_engine/samples/manifest.jsonl").resolve()
    reports, ck = {}, _bundled_checkpoint_only(tmp_path / "ck")  # fp32 export of the bundled weights
    for backend in ("torch", "onnx"):
        assert main(["eval", str(manifest), "--backend", backend, "--model", str(ck), "--thresholds", "1.0,0.9", "-q",
                     "--threads", "1", "--json", str(tmp_path / f"{backend}.json")]) == 0
        reports[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
    for a, b in zip(reports["torch"]["settings"], reports["onnx"]["settings"]):
        assert a["hypotheses"] == b["hypotheses"] and a["top_fraction"] == b["top_fraction"]
        assert a["wer"] < 0.7 and b["cer"] == a["cer"]


def test_global_thread_pool_gives_the_same_results(tiny):
    """ORT's process-wide pool is process state: checked in a fresh interpreter."""
    import subprocess
    import sys

    _, out = tiny
    code = f"""
import numpy as np
from asr_engine.export.runtime import OnnxModel
a, b = OnnxModel({str(out)!r}, 2, global_pool=True), OnnxModel({str(out)!r}, 2, global_pool=True)
window = a.cfg.input_frames(8 + a.cfg.right_context)
feats = np.random.default_rng(0).standard_normal((2, window, 80)).astype(np.float32) + 8
x, _, _ = a.forward_chunk(feats, np.array([8, 5]), a.zeros_state(2), None)
y, _, _ = b.forward_chunk(feats, np.array([8, 5]), b.zeros_state(2), None)
assert np.array_equal(x, y)
try:
    OnnxModel({str(out)!r}, 2)
except ValueError as e:
    print("refused:", e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "refused: this process already runs ONNX sessions with global thread pools" in r.stdout


DEV_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_real" / "manifest.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not DEV_REAL.is_file(), reason="needs ../shared/data/dev_real")
def test_onnx_equals_torch_on_dev_real(tmp_path):
    """The bundled model on the whole real-speech dev set: the same transcripts from both backends (the
    torch encoder on whole utterances, its shipped ONNX exports streaming), with and without skipping, in
    both layouts (streaming chunks; full context, as files are decoded); ONNX in fp32 (int8, the model's default
    on a CPU, is held to fp32's accuracy in docs/onnx.md, not to its transcripts)."""
    from asr_engine.backend import bundled_model_dir

    ck = bundled_model_dir()
    for context in ("streaming", "full"):
        reports = {}
        for backend in ("torch", "onnx"):
            out = tmp_path / f"{backend}-{context}.json"
            assert main(["eval", str(DEV_REAL), "--backend", backend, "--model", str(ck), "--context", context,
                         "--precision", "fp32", "--thresholds", "1.0,0.95", "-q", "--json", str(out)]) == 0
            reports[backend] = json.loads(out.read_text())
        for a, b in zip(reports["torch"]["settings"], reports["onnx"]["settings"]):
            assert a["hypotheses"] == b["hypotheses"] and a["top_fraction"] == b["top_fraction"]


def test_the_bundled_model_ships_exports_made_from_its_files(tmp_path, monkeypatch):
    # installs without torch cannot export: both shipped folders (live chunk and file step) must name
    # the bundled config.json and weights, or the ONNX backend would try to export into the cache
    from asr_engine.backend import bundled_model_dir, onnx_export_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = bundled_model_dir()
    chunk = json.loads((src / "config.json").read_text())["model"]["chunk_size"]
    assert onnx_export_dir(src) == src / f"onnx-c{chunk}"
    assert onnx_export_dir(src, for_files=True).parent == src
    assert onnx_export_dir(src, context="full") == src / "onnx-full"  # whole files, as the model recommends
    assert onnx_export_dir(src, precision="int8") == src / f"onnx-c{chunk}-int8"
    assert onnx_export_dir(src, for_files=True, precision="int8").parent == src
    assert onnx_export_dir(src, context="full", precision="int8") == src / "onnx-full-int8"
    assert not (tmp_path / "cache").exists()


def test_a_long_recording_in_full_context_is_decoded_as_its_pieces_cut_at_pauses(tmp_path, monkeypatch):
    """Full context (the tests' tiny model: 512-frame chunks of 40 ms, 20.48 s): a recording longer than
    one chunk is cut at pauses into pieces of at most one chunk, each decoded alone, and the pieces' results
    joined with their times, the same on both backends."""
    from asr_engine.audio import load_audio, pause_cuts
    from asr_engine.backend import load_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    samples = [load_audio(f"asr_engine/samples/sample{i}.wav") for i in (1, 2, 3)]
    gap = np.zeros(8000, np.float32)
    long = np.concatenate([x for s in samples * 3 for x in (s, gap)])  # about 40 s
    for backend in ("torch", "onnx"):
        engine = Engine(load_model(None, backend, for_files=True, context="full"), DecodeOptions(skip_threshold=1.0))
        assert engine.full_context and engine.chunk == 512
        cuts = pause_cuts(long, 512 * 4 * 160)
        assert len(cuts) >= 3  # at least two pieces
        whole = engine.transcribe_arrays([long], ["long"])[0]
        pieces = engine.transcribe_arrays([long[a:b] for a, b in zip(cuts[:-1], cuts[1:])],
                                          [str(i) for i in range(len(cuts) - 1)])
        assert whole.text == " ".join(p.text for p in pieces if p.text) and whole.text
        assert whole.frames == sum(p.frames for p in pieces) and whole.duration == len(long) / 16000
        starts = [w.start for w in whole.words]
        assert starts == sorted(starts) and starts[-1] > cuts[-2] / 16000  # the last piece's words, placed in time
        assert [w.word for w in whole.words] == [w.word for p in pieces for w in p.words]
        assert whole.words[-1].start == pytest.approx(pieces[-1].words[-1].start + cuts[-2] / 16000)


def test_export_context_full_makes_a_folder_transcribe_reads_in_full_context(tmp_path, capsys):
    # `export --context full` (the tests' tiny model): transcribe --model DIR decodes in full context, as
    # --context full on the checkpoint does; a streaming export refuses full context
    from asr_engine.backend import default_model_dir

    samples = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]
    out = tmp_path / "full"
    assert main(["export", "--context", "full", "--output", str(out)]) == 0
    assert main(["export", "--context", "full", "--chunk-frames", "64", "--output", str(tmp_path / "x")]) == 2
    capsys.readouterr()

    def run(*extra):
        assert main(["transcribe", *samples, "--beam", "1", "--format", "jsonl", *extra]) == 0
        text, err = capsys.readouterr()
        return [json.loads(line)["text"] for line in text.splitlines()], err.strip().splitlines()[-1].split(" | ")[-1]

    assert run("--model", str(out)) == run("--context", "full") == (run("--context", "full")[0],
                                                                    "decoding: greedy, full context")
    assert OnnxModel(out).short_steps
    streaming = next(default_model_dir().glob("onnx-c*"))
    assert main(["transcribe", samples[0], "--model", str(streaming), "--context", "full", "-q"]) == 2
    assert "streaming export" in capsys.readouterr().err


def test_quantize_columns_scales_each_column_and_sums_its_int8_values():
    from asr_engine.export.runtime import WEIGHT_LEVELS, quantize_columns

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 5)) * np.array([0.01, 1.0, 30.0, 1e-3, 0.0])).astype(np.float32)
    q, scale, colsum = quantize_columns(w)
    assert q.dtype == np.int8 and scale.dtype == colsum.dtype == np.float32
    assert WEIGHT_LEVELS == 63  # 7 bits: 255 x 63 x 2 fits the int16 that AVX2's u8 x s8 products saturate
    assert np.abs(q).max(0).tolist()[:4] == [63] * 4 and not q[:, 4].any()  # each column uses its whole range
    assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-7)
    np.testing.assert_array_equal(colsum, q.astype(np.int64).sum(0))


def test_int8_matmul_is_exact_where_the_cpu_saturates_pairs(tmp_path):
    """The largest products an int8 export can make (rows quantized to 255 against weights at the end of their
    range, of one sign) sum exactly in ONNX Runtime's MatMulInteger on this CPU. With 8-bit weights (127) an AVX2
    CPU without VNNI adds two such products into a saturating int16: this test failed on an AMD EPYC with AVX2
    (4 of the 12 sums off by up to 759 of 768)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from asr_engine.export.onnx import quantize_rows

    w = np.ones((256, 4), np.float32) * np.array([1.0, -1.0, 0.5, -2.0], np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    quantize_rows(path, exclude=[])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.stack([np.full(256, 3.0), -np.full(256, 3.0), np.tile([3.0, -3.0], 128)]).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-3)


def test_quantize_rows_computes_each_row_with_its_own_scale(tmp_path):
    """A MatMul made int8 by quantize_rows, against numpy: each row quantized with its own scale and zero
    point, and a row's result unchanged by the rows beside it (ORT's dynamic quantization's is not)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from asr_engine.export.onnx import quantize_rows
    from asr_engine.export.runtime import quantize_columns

    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 24)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
                           helper.make_node("MatMul", ["x", "w"], ["z"], name="kept")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", 48])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert quantize_rows(path, exclude=["kept"]) == 1
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "MatMulInteger" in ops and ops.count("MatMul") == 1
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((3, 7, 48)).astype(np.float32) * np.array([1, 100, 0.01], np.float32)[:, None, None]
    x[1, 2] = 0  # a padding row
    x[2, 3] = np.abs(x[2, 3])  # a row with no negative value
    y, z = sess.run(None, {"x": x})
    np.testing.assert_allclose(z, x @ w, rtol=1e-4, atol=1e-4)  # the excluded MatMul is fp32 as it was
    q, ws, _ = quantize_columns(w)
    lo, hi = np.minimum(x.min(-1, keepdims=True), 0), np.maximum(x.max(-1, keepdims=True), 0)
    sc = np.maximum((hi - lo) / 255, 1e-8)
    zp = np.round(-lo / sc)
    xq = np.clip(np.floor(x / sc + zp + 0.5), 0, 255)
    ref = ((xq - zp) @ q.astype(np.float64)) * sc * ws
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-3 * np.abs(ref).max())  # x * (1 / scale) may round apart
    assert not y[1, 2].any()
    assert np.abs(y - x @ w).max() < 0.02 * np.abs(x @ w).max()
    alone = sess.run(None, {"x": x[:1]})[0]
    np.testing.assert_array_equal(alone, y[:1])  # the rows beside it change nothing
    np.testing.assert_array_equal(sess.run(None, {"x": x[0, None, 4:5]})[0], y[:1, 4:5])


def test_int8_exports_ship_as_graphs_and_decode_a_stream_alone_as_batched(tiny, tmp_path, capsys):
    """--ship writes an int8 export beside each fp32 one: graphs only, whose int8 weights the runtime derives
    from model.safetensors exactly as a self-contained int8-rows export holds them; close to fp32, and a
    stream's result the same alone or batched."""
    import onnx

    from asr_engine.backend import load_model, onnx_export_dir, ship_exports
    from asr_engine.checkpoint import load_checkpoint, save_checkpoint

    ckpt, _ = tiny
    ck = save_checkpoint(ckpt, tmp_path / "ck", half=True)
    C = ckpt.model.cfg.chunk_size
    shipped = ship_exports(ck)
    assert ck / f"onnx-c{C}-int8" in shipped and ck / f"onnx-c{C}" in shipped
    q = onnx_export_dir(ck, precision="int8")
    assert q == ck / f"onnx-c{C}-int8"
    info = json.loads((q / "export.json").read_text())
    assert info["quantization"] == "int8-rows"
    for stage in ("bottom.onnx", "top.onnx"):
        graph = onnx.load(str(q / stage), load_external_data=False).graph
        assert "MatMulInteger" in {n.op_type for n in graph.node}
        assert not [t.name for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL and
                    np.prod(t.dims) >= 1024]
        assert {r.get("derive") for r in info["shared"]["initializers"][stage]} >= {"int8", "scale", "colsum"}
    plain = export_onnx(load_checkpoint(ck), tmp_path / "plain", chunk_frames=C, quantize="int8-rows")
    feats = torch.randn(2, 400, 80, generator=torch.Generator().manual_seed(3)) * 3 + 8
    a, b = OnnxModel(q, threads=1), OnnxModel(plain, threads=1)
    for x, y in zip(_stream(a, feats, 6), _stream(b, feats, 6)):
        np.testing.assert_array_equal(x, y)
    fp32 = load_model(ck, "onnx", precision="fp32")
    assert fp32.path == ck / f"onnx-c{C}"
    lp8, lp32 = _stream(a, feats, 3)[0], _stream(fp32, feats, 3)[0]
    assert 0 < np.abs(np.exp(lp8) - np.exp(lp32)).max() < 0.1
    rng = np.random.default_rng(4)
    speechy = [(0.2 * rng.standard_normal(n) * np.repeat(rng.random(n // 1600 + 1) > 0.4, 1600)[:n]).astype(
        np.float32) for n in (16000, 23000, 9000, 30000, 12000)]
    eng = Engine(a, DecodeOptions(max_batch=8))
    together = eng.transcribe_arrays(speechy, [str(i) for i in range(5)])
    alone = [eng.transcribe_arrays([x], [str(i)])[0] for i, x in enumerate(speechy)]
    assert [(r.text, r.top_frames) for r in together] == [(r.text, r.top_frames) for r in alone]
    (ck / "model.safetensors").rename(ck / "moved.safetensors")
    with pytest.raises(ValueError, match="model.safetensors, which is missing"):
        OnnxModel(q)


def test_precision_is_chosen_by_the_caller_or_the_model(tmp_path, monkeypatch):
    from asr_engine.backend import load_model, onnx_export_dir, recommended_decoding

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ck = _bundled_checkpoint_only(tmp_path / "ck")
    assert recommended_decoding(ck) == {}
    with pytest.raises(ValueError, match="onnx backend"):
        load_model(ck, "torch", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        onnx_export_dir(ck, precision="int4")
    (ck / "decoding.json").write_text('{"beam": 1, "precision": "int4"}')
    with pytest.raises(ValueError, match='"precision": "fp32" or "int8"'):
        recommended_decoding(ck)
    (ck / "decoding.json").write_text('{"beam": 1, "precision": "int8"}')
    assert recommended_decoding(ck)["precision"] == "int8"
    m = load_model(ck, "onnx")  # exported into the cache once, in int8 as the model recommends
    assert m.meta["quantization"] == "int8-rows" and m.path.parent == tmp_path / "cache" / "asr-engine" / "onnx"
    assert load_model(ck, "onnx", precision="fp32").meta["quantization"] == "none"
    assert load_model(m.path).path == m.path  # an export folder runs in its own precision
    with pytest.raises(ValueError, match="an export in int8"):
        load_model(m.path, precision="fp32")


def test_cli_precision_int8_transcribes_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    samples = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2)]

    def run(*extra):
        assert main(["transcribe", *samples, "--beam", "1", "--format", "jsonl", *extra]) == 0
        out, err = capsys.readouterr()
        return [json.loads(line)["text"] for line in out.splitlines()], err.strip().splitlines()[-1]

    (int8, summary), (fp32, plain) = run("--precision", "int8"), run()
    assert summary.endswith(", int8") and not plain.endswith("int8")
    assert all(int8) and len(int8) == len(fp32)
    assert main(["transcribe", samples[0], "--backend", "torch", "--precision", "int8", "-q"]) == 2
    assert "onnx backend on the CPU" in capsys.readouterr().err
    assert main(["eval", "asr_engine/samples/manifest.jsonl", "--precision", "int8",
                 "--thresholds", "1.0", "-q"]) == 0
