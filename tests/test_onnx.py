"""ONNX export and the ONNX Runtime backend: parity with the torch encoder, chunk by chunk."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from asr_engine.checkpoint import Checkpoint  # noqa: E402
from asr_engine.cli import main  # noqa: E402
from asr_engine.engine import Engine, EngineOptions  # noqa: E402
from asr_engine.export.onnx import export_onnx  # noqa: E402
from asr_engine.features import Fbank  # noqa: E402
from asr_engine.export.runtime import OnnxEncoder, load_onnx  # noqa: E402
from asr_engine.model.encoder import Encoder, SkipOptions  # noqa: E402
from asr_engine.model.streaming import StreamState  # noqa: E402
from asr_engine.tokenizer import CharTokenizer  # noqa: E402

from conftest import tiny_model  # noqa: E402
from asr_engine.features import FbankConfig  # noqa: E402


@pytest.fixture(scope="module", params=["conformer", "whisper"])
def tiny(request, tmp_path_factory):
    m = tiny_model(request.param)
    ckpt = Checkpoint(m, CharTokenizer(), FbankConfig(kind="kaldi" if request.param == "conformer" else "whisper"))
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
    m, onnx = ckpt.model, OnnxEncoder(out, threads=1)
    assert onnx.cfg == m.cfg and onnx.chunk_frames == 8
    B, C = 3, 8
    win, hop = m.subsampling.input_frames(C), m.subsampling.stride * C
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B, hop * 12 + win, 80, generator=g) * 3 + 8
    skip = SkipOptions(_gap_threshold(m, feats), 1) if skipping else None
    st_t = st_o = StreamState.zeros(m.cfg, B)
    lengths = torch.tensor([12 * C, 7 * C + 3, 2 * C])  # ragged: streams end at different chunks
    skipped = kept = 0
    with torch.no_grad():
        for i in range(12):
            n_valid = (lengths - i * C).clamp(0, C)
            chunk = feats[:, i * hop: i * hop + win]
            a, st_t = m.forward_chunk(chunk, n_valid, st_t, skip)
            b, st_o = onnx.forward_chunk(chunk, n_valid, st_o, skip)
            assert torch.equal(a.top_mask, b.top_mask)
            for j in range(B):
                n = int(n_valid[j])
                torch.testing.assert_close(b.final.raw[j, :n], a.final.raw[j, :n], atol=2e-4, rtol=1e-4)
                torch.testing.assert_close(b.intermediate[2].raw[j, :n], a.intermediate[2].raw[j, :n],
                                           atol=2e-4, rtol=1e-4)
            kept += int(a.top_mask.sum())
            skipped += int(n_valid.sum()) - int(a.top_mask.sum())
    for f in ("k", "v", "conv"):
        torch.testing.assert_close(getattr(st_o, f), getattr(st_t, f), atol=2e-4, rtol=1e-4)
    assert torch.equal(st_o.kv_pos, st_t.kv_pos) and torch.equal(st_o.kv_valid, st_t.kv_valid)
    if skipping:
        assert skipped > 0 and kept > 0


def test_onnx_engine_equals_torch_engine(tiny):
    ckpt, out = tiny
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 27000, 5000)]
    feats = torch.cat([Fbank()(torch.from_numpy(a)[None]) for a in audios], 1)
    threshold = _gap_threshold(ckpt.model, feats)
    res = {}
    for name, c in [("torch", ckpt), ("onnx", load_onnx(out, threads=1))]:
        eng = Engine(c, EngineOptions(chunk_frames=8, skip_threshold=threshold))
        res[name] = eng.transcribe_arrays(audios, ["a", "b", "c"])
    for a, b in zip(res["torch"], res["onnx"]):
        assert (a.text, a.frames, a.top_frames) == (b.text, b.frames, b.top_frames)
        assert 0 < a.top_frames < a.frames
    with pytest.raises(ValueError, match="chunks of 8"):
        Engine(load_onnx(out), EngineOptions(chunk_frames=4))
    assert Engine(load_onnx(out)).chunk == 8


def test_cli_export_then_onnx_backend_equals_torch(tmp_path, capsys, monkeypatch):
    """The bundled model on the bundled samples: `export` + `transcribe --backend onnx` gives the
    torch backend's transcripts, words and skipping; a checkpoint folder is exported once into the cache."""
    samples = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["export", "--output", str(tmp_path / "m")]) == 0
    outs = {}
    for name, extra in [("torch", []), ("onnx", ["--backend", "onnx", "--model", str(tmp_path / "m")]),
                        ("cached", ["--backend", "onnx"])]:
        capsys.readouterr()
        assert main(["transcribe", *samples, "--format", "jsonl", "-q", "--threads", "1", *extra]) == 0
        outs[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for name in ("onnx", "cached"):
        assert [r["text"] for r in outs[name]] == [r["text"] for r in outs["torch"]]
        assert [r["top_fraction"] for r in outs[name]] == [r["top_fraction"] for r in outs["torch"]]
        assert [[w["word"] for w in r["words"]] for r in outs[name]] == [[w["word"] for w in r["words"]]
                                                                         for r in outs["torch"]]
    assert len(list((tmp_path / "cache" / "asr-engine" / "onnx").iterdir())) == 1
    assert main(["transcribe", samples[0], "--backend", "onnx", "--model", str(tmp_path)]) == 2
    assert "neither an ONNX export nor a checkpoint" in capsys.readouterr().err


def test_exported_fbank_equals_torch_and_metadata_is_complete(tiny):
    import onnx

    ckpt, out = tiny
    enc = OnnxEncoder(out, threads=1)
    rng = np.random.default_rng(2)
    for n in (400, 561, 16000, 16161):
        x = torch.from_numpy((0.2 * rng.standard_normal((2, n))).astype(np.float32))
        torch.testing.assert_close(enc.fbank(x), Fbank(ckpt.features)(x), atol=2e-3, rtol=1e-4)
    assert enc.fbank(torch.zeros(1, 399)).shape == (1, 0, 80)
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
    assert OnnxEncoder(q).meta["quantization"] == "int8"
    m, enc = ckpt.model, OnnxEncoder(q, threads=1)
    feats = torch.randn(2, m.subsampling.input_frames(8), 80) * 3 + 8
    st = StreamState.zeros(m.cfg, 2)
    with torch.no_grad():
        a, _ = m.forward_chunk(feats, torch.tensor([8, 8]), st)
        b, _ = enc.forward_chunk(feats, torch.tensor([8, 8]), st)
    err = (b.final.log_probs() - a.final.log_probs()).abs().mean()
    assert 0 < err < 0.05 * a.final.log_probs().abs().mean()  # quantized: close, not equal
    with pytest.raises(ValueError, match="quantize"):
        export_onnx(ckpt, tmp_path / "bad", quantize="int4")


def test_eval_and_auto_backend_use_onnx_runtime(tmp_path, capsys):
    """`eval --backend onnx` streams through ORT and scores like the torch backend; `auto` is ONNX on the CPU."""
    from asr_engine.backend import load_model, resolve_backend

    assert resolve_backend("auto", "cpu") == "onnx" and resolve_backend("auto", "cuda") == "torch"
    assert isinstance(load_model(None, "auto").model, OnnxEncoder)
    with pytest.raises(ValueError, match="backend must be"):
        resolve_backend("tf")
    manifest = Path("asr_engine/samples/manifest.jsonl").resolve()
    reports = {}
    for backend in ("torch", "onnx"):
        assert main(["eval", str(manifest), "--backend", backend, "--thresholds", "1.0,0.9", "-q", "--threads", "1",
                     "--json", str(tmp_path / f"{backend}.json")]) == 0
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
import torch
from asr_engine.export.runtime import OnnxEncoder
from asr_engine.model.streaming import StreamState
a, b = OnnxEncoder({str(out)!r}, 2, global_pool=True), OnnxEncoder({str(out)!r}, 2, global_pool=True)
feats = torch.randn(2, a.subsampling.input_frames(8), 80) + 8
st = StreamState.zeros(a.cfg, 2)
x, _ = a.forward_chunk(feats, torch.tensor([8, 5]), st)
y, _ = b.forward_chunk(feats, torch.tensor([8, 5]), st)
assert torch.equal(x.final.raw, y.final.raw)
try:
    OnnxEncoder({str(out)!r}, 2)
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
    """The whole real-speech dev set: the same transcripts from both backends, with and without skipping."""
    reports = {}
    for backend in ("torch", "onnx"):
        assert main(["eval", str(DEV_REAL), "--backend", backend, "--thresholds", "1.0,0.95", "-q",
                     "--json", str(tmp_path / f"{backend}.json")]) == 0
        reports[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
    for a, b in zip(reports["torch"]["settings"], reports["onnx"]["settings"]):
        assert a["hypotheses"] == b["hypotheses"] and a["top_fraction"] == b["top_fraction"]
