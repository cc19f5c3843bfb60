"""The wheel without torch: built here, installed with the `cpu` extra into a fresh virtual
environment (its dependencies from the package registry, as a user gets them), where torch
does not import and `transcribe`, `serve` and `stream` work on the bundled ONNX files."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_wheel

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [str(ROOT / "asr_engine" / "samples" / f"sample{i}.wav") for i in (1, 2, 3)]


def _run(cmd, timeout=600, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stderr[-3000:]}"
    return r


@pytest.fixture(autouse=True)
def _bundled_model(monkeypatch):
    """These tests are about what users install: the bundled default model, not the tests' small one."""
    monkeypatch.delenv("ASR_ENGINE_MODEL", raising=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp / "dist")
    _run([sys.executable, "-m", "venv", str(tmp / "venv")])
    py = tmp / "venv" / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", f"{wheel}[cpu]"])
    return tmp / "venv", wheel


def test_the_wheel_ships_the_onnx_files_and_installs_without_torch(venv):
    env, wheel = venv
    py = env / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    import zipfile

    from asr_engine.backend import bundled_model_dir, file_chunk_frames

    names = zipfile.ZipFile(wheel).namelist()
    chunk = json.loads((bundled_model_dir() / "config.json").read_text())["model"]["chunk_size"]
    for name in [f"c{c}{p}" for c in {chunk, file_chunk_frames(bundled_model_dir())} for p in ("", "-int8")] + [
            "full", "full-int8"]:
        for f in ("bottom.onnx", "top.onnx", "fbank.onnx", "export.json"):
            assert f"asr_engine/models/default/onnx-{name}/{f}" in names
        # the graphs refer to the weights in model.safetensors (int8 too: derived when loaded): they ship once
        assert json.loads((bundled_model_dir() / f"onnx-{name}" / "export.json").read_text())["shared"]
    for f in ("lm.onnx", "lm-int8.onnx", "lm-onnx.json"):  # the LM's steps, reading lm.safetensors too
        assert f"asr_engine/models/default-lm/{f}" in names
    for f in ("model.onnx", "vocab.txt", "mixed.json", "punct.json"):
        assert f"asr_engine/models/default-punct/{f}" in names
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    tooling = ("pip", "setuptools", "pkg_resources", "_distutils_hack")  # the venv's own, not ours
    sizes = {}
    for f in site.rglob("*"):
        top = f.relative_to(site).parts[0].split("-")[0].split(".")[0]
        if f.is_file() and top not in tooling:
            sizes[top] = sizes.get(top, 0) + f.stat().st_size
    big = sorted(sizes.items(), key=lambda kv: -kv[1])[:4]
    print(f"installed without torch: {sum(sizes.values()) / 1e6:.0f} MB ("
          + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in big) + ")")  # stated in the README
    assert "av" not in sizes and "torch" not in sizes


def test_transcribe_without_torch_equals_the_torch_backend(venv, tmp_path):
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.engine import DecodeOptions, Engine
    from asr_engine.punctuation import load_punctuator

    written = DecodeOptions(punctuator=load_punctuator("default"))  # the bundled model recommends it
    env, _ = venv
    cache = tmp_path / "cache"  # the shipped exports are used: nothing is exported into it
    r = _run([str(env / "bin" / "asr-engine"), "transcribe", *SAMPLES, "--beam", "1", "--format", "jsonl", "-q",
              "--precision", "fp32"], cwd=tmp_path, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert "TracerWarning" not in r.stderr and not (cache / "asr-engine").exists()
    # here, on torch, whole utterances in full context (the bundled model recommends it for files)
    ref = Engine(load_checkpoint(None, context="full"), written).transcribe_files(SAMPLES)
    assert [g["text"] for g in got] == [x.text for x in ref] and all(x.text for x in ref)
    assert [g["top_fraction"] for g in got] == [round(x.top_fraction, 4) for x in ref]
    r = _run([str(env / "bin" / "asr-engine"), "transcribe", SAMPLES[0], "--beam", "16", "--lm", "default", "-q"],
             cwd=tmp_path, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    # the bundled LM's shipped step, and the exports the bundled model recommends: nothing exported
    assert r.stdout.strip() and not (cache / "asr-engine").exists()
    default = _run([str(env / "bin" / "asr-engine"), "transcribe", SAMPLES[0], "-q"], cwd=tmp_path,
                   env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert default.stdout == r.stdout  # the bundled model's decoding.json: beam 16 with the bundled LM
    probe = ("import asr_engine\n"
             "print(asr_engine.load(for_files=True).model.precision, asr_engine.load().model.path.name)")
    assert _run([str(env / "bin" / "python"), "-c", probe], cwd=tmp_path).stdout.split() == ["fp32", "onnx-c32"]
    code = ("import asr_engine, soundfile\n"
            f"a, sr = soundfile.read({SAMPLES[0]!r}, dtype='float32')\n"
            "print(asr_engine.load(beam=1, for_files=True, precision='fp32').transcribe(a, sr).text)\n"
            "print(asr_engine.load(beam=1, precision='fp32').transcribe(a, sr).text)")  # live: the streaming layout
    live = Engine(load_checkpoint(None), written).transcribe_files(SAMPLES[:1])[0].text
    assert _run([str(env / "bin" / "python"), "-c", code], cwd=tmp_path).stdout.splitlines() == [ref[0].text, live]


def test_serve_and_stream_without_torch(venv, tmp_path):
    env, _ = venv
    server = subprocess.Popen([str(env / "bin" / "asr-engine"), "serve", "--host", "127.0.0.1", "--port", "0"],
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url, t0 = None, time.monotonic()
        while url is None and time.monotonic() - t0 < 60:
            line = server.stderr.readline()
            m = re.search(r"(ws://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
            assert line or server.poll() is None, "the server exited"
        assert url, "the server did not say where it listens"
        # the server decodes live audio in the streaming layout, as `transcribe --streaming` does (files alone
        # are decoded in full context by default, which may read a word differently)
        offline = _run([str(env / "bin" / "asr-engine"), "transcribe", SAMPLES[1], "--streaming", "-q"],
                       cwd=tmp_path).stdout.strip()
        r = _run([str(env / "bin" / "asr-engine"), "stream", "--url", url, SAMPLES[1], "--fast", "-q"], timeout=120,
                 cwd=tmp_path)
        assert r.stdout.strip() == offline and offline
    finally:
        server.terminate()
        server.wait(30)
