import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

if not torch.cuda.is_available():  # the Triton kernels run in Triton's interpreter (read at their import)
    os.environ.setdefault("TRITON_INTERPRET", "1")

# where the Triton kernels' tests build their tensors: the GPU when there is one (compiled kernels
# take device pointers only), else the CPU, where the interpreter runs them
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Tests that need a trained model without naming one get the small Conformer the project trained from
# scratch (tests/models/tiny: 4.5 M parameters, fast); the bundled default model (Whisper's encoder,
# 23 M) is tested where it is named (backend.bundled_model_dir). Subprocesses inherit the choice.
TINY_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "tiny")
os.environ["ASR_ENGINE_MODEL"] = TINY_MODEL

from asr_engine.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from asr_engine.model.config import ModelConfig  # noqa: E402
from asr_engine.model.encoder import Encoder  # noqa: E402
from asr_engine.tokenizer import CharTokenizer  # noqa: E402


# `bash bench/gpu_check.sh --slim` leaves the bundled punctuation model out of what travels to a GPU machine (its
# 6 MB do not fit the device tool's 64 MiB); there the bundled model decodes as it would without it, and the tests
# of punctuation itself skip. A checkout or wheel always has it (tests/test_wheel.py checks the wheel).
from asr_engine.punctuation import DEFAULT_PUNCT_DIR  # noqa: E402

PUNCT_SLIMMED = not (DEFAULT_PUNCT_DIR / "model.onnx").exists()
needs_punct = pytest.mark.skipif(PUNCT_SLIMMED, reason="the bundled punctuation model was left out (gpu_check --slim)")
# the same for the bundled LM's weights (7.3 MiB since it grew to width 512): there the bundled model decodes with its
# recommended beam and no LM, and the tests of the bundled LM itself skip
from asr_engine.lm.config import resolve_lm_dir  # noqa: E402

LM_SLIMMED = not (resolve_lm_dir("default") / "lm.safetensors").exists()
needs_lm = pytest.mark.skipif(LM_SLIMMED, reason="the bundled LM's weights were left out (gpu_check --slim)")


@pytest.fixture(scope="session", autouse=True)
def _without_punctuation_when_slimmed():
    if not (PUNCT_SLIMMED or LM_SLIMMED):
        yield
        return
    from asr_engine import backend

    recommended = backend.recommended_decoding

    def without(model):
        rec = recommended(model)
        if PUNCT_SLIMMED:
            rec.pop("punctuate", None)
        if LM_SLIMMED and rec.get("lm") == "default":
            rec.pop("lm")
        return rec

    backend.recommended_decoding = without
    yield
    backend.recommended_decoding = recommended


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """ONNX exports of checkpoints (the onnx backend's cache) go to a temporary folder, not ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


# the two model layouts: the Conformer trained from scratch, and Whisper's encoder with conv modules
LAYOUTS = {"conformer": {}, "whisper": dict(stem="whisper", block="whisper", positions="absolute", subsampling=2,
                                            position_period=50,  # streams in the tests wrap around
                                            head_hidden=24, conv_layers=(2, 4))}  # 1 and 3: none


def tiny_model(layout: str = "conformer", seed: int = 0, **kw) -> Encoder:
    """A random tiny model; in the whisper layout the conv modules' and head MLPs' zero-initialized
    output projections get random weights too, so that every path is exercised."""
    torch.manual_seed(seed)
    m = Encoder(tiny_config(**{**LAYOUTS[layout], **kw}))
    if layout == "whisper":
        for layer in m.layers:
            if layer.conv is not None:
                torch.nn.init.normal_(layer.conv.pw2.weight, std=0.2)
        for head in [m.final_head, *m.heads.values()]:
            torch.nn.init.normal_(head.mlp[2].weight, std=0.05)
    return m.eval()


def tiny_config(**kw) -> ModelConfig:
    base = dict(vocab_size=len(CharTokenizer().vocab), d_model=32, n_heads=2, n_layers=4,
                conv_kernel=5, chunk_size=4, left_chunks=2, intermediate_layers=(1, 2), skip_layer=2,
                dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="session")
def tiny_ckpt_dir(tmp_path_factory):
    """A randomly initialised tiny checkpoint: exercises the code paths, not accuracy."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(Checkpoint(Encoder(tiny_config()).eval(), CharTokenizer()), out)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A CA of the test's own (trustme), a certificate it signed for 127.0.0.1 and localhost, and files in
    each shape a user may hold: certificate and key apart, both in one file, the CA, another key, the key
    encrypted; `client()` is an SSL context that trusts the CA."""
    import ssl
    from types import SimpleNamespace

    trustme = pytest.importorskip("trustme")
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    out = SimpleNamespace(**{name: str(d / f"{name}.pem") for name in ("cert", "key", "both", "ca", "other_key",
                                                                          "encrypted_key")})
    cert.cert_chain_pems[0].write_to_path(out.cert)
    cert.private_key_pem.write_to_path(out.key)
    cert.private_key_and_cert_chain_pem.write_to_path(out.both)
    ca.cert_pem.write_to_path(out.ca)
    ca.issue_cert("other.example").private_key_pem.write_to_path(out.other_key)
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    with open(out.encrypted_key, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret")))
    out.client = lambda: ssl.create_default_context(cafile=out.ca)
    return out


def tone(seconds: float, sr: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


@pytest.fixture
def wav(tmp_path):
    def write(name: str, seconds: float = 1.0, sr: int = 16000, **kw):
        path = tmp_path / name
        sf.write(path, tone(seconds, sr, **kw), sr)
        return path
    return write


def build_wheel(dest):
    """`pip wheel` of this checkout into the folder dest -> the wheel's path. setuptools builds inside the source
    tree (build/), so two builds at once (pytest -n) collide: one at a time, under a file lock."""
    root = Path(__file__).resolve().parents[1]
    with open(Path(tempfile.gettempdir()) / "asr-engine-wheel-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dest), str(root)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"pip wheel: {r.stderr[-3000:]}"
    (wheel,) = Path(dest).glob("asr_engine-*.whl")
    return wheel
