import re
import zipfile
from pathlib import Path

import pytest

from conftest import build_wheel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel")))


def test_wheel_has_every_subpackage_under_asr_engine(wheel):
    names = set(wheel.namelist())
    for pkg in ("asr_engine", "asr_engine/kernels", "asr_engine/export", "asr_engine/server",
                "asr_engine/model", "asr_engine/data"):
        assert f"{pkg}/__init__.py" in names, pkg
    assert "asr_engine/kernels/compaction.py" in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"asr_engine"}  # never a bare top-level server, kernels or export module


def test_wheel_ships_default_model_samples_and_web_page(wheel):
    names = set(wheel.namelist())
    assert {"asr_engine/models/default/model.safetensors", "asr_engine/models/default/config.json",
            "asr_engine/models/default-lm/lm.safetensors", "asr_engine/models/default-lm/lm.json",
            "asr_engine/models/default-lm/lexicon.txt"} <= names
    assert any(n.startswith("asr_engine/samples/") and n.endswith(".wav") for n in names)
    assert "asr_engine/server/web/index.html" in names  # the page the server shows at /
    assert not any(n.endswith((".pt", ".pth", ".bin", ".pkl")) for n in names)


def test_onnxruntime_builds_are_in_separate_extras():
    text = (ROOT / "pyproject.toml").read_text()
    cpu = re.search(r"^cpu = \[(.*)\]", text, re.M).group(1)
    gpu = re.search(r"^gpu = \[(.*)\]", text, re.M).group(1)
    assert "onnxruntime-gpu" not in cpu and '"onnxruntime>' in cpu
    assert "onnxruntime-gpu" in gpu and '"onnxruntime>' not in gpu
    assert '"torch==2.13.0"' in text


def test_readme_quickstart_is_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "transcribe" in commands[0] and "pytest" in commands[1]
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text()


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    """Every ```python block of the README runs as written (call.wav: a bundled sample at 8 kHz)."""
    import soundfile as sf

    from asr_engine.audio import load_audio, resample

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    (tmp_path / "asr_engine").symlink_to(ROOT / "asr_engine")
    sample = load_audio(ROOT / "asr_engine" / "samples" / "sample1.wav")
    sf.write(tmp_path / "call.wav", resample(sample, 16000, 8000), 8000, subtype="PCM_16")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASR_ENGINE_MODEL", raising=False)  # the README's examples run the bundled model
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
        assert capsys.readouterr().out.strip()  # each example prints a transcript
