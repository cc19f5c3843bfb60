"""Batch transcription on Ray in local mode: the same outputs as the single-process CLI, a file
that fails is reported and the batch goes on."""

import json
import shutil

import pytest

pytest.importorskip("ray")

from asr_engine.cli import main  # noqa: E402

SAMPLES = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]


def test_ray_local_mode_equals_the_local_cli_and_reports_failures(tmp_path, capsys):
    import ray

    files = []
    for i, s in enumerate(SAMPLES * 2):  # six files, two per actor call
        files.append(str(shutil.copy(s, tmp_path / f"f{i}.wav")))
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    files.insert(3, str(bad))
    outs = {}
    try:
        for name, extra in [("local", []), ("ray", ["--ray", "--workers", "2", "--batch-size", "2"])]:
            out = tmp_path / f"{name}.jsonl"
            code = main(["transcribe", *files, "--format", "jsonl", "-o", str(out), "-q", "--threads", "1", *extra])
            err = capsys.readouterr().err
            assert code == 1 and f"error: {bad}" in err  # the failure is reported; the others finish
            outs[name] = [json.loads(line) for line in out.read_text().splitlines()]
            srt = tmp_path / f"{name}-srt"
            assert main(["transcribe", *files[:2], "--format", "srt", "-o", str(srt), "-q", *extra]) == 0
            outs[name + "-srt"] = sorted((p.name, p.read_text()) for p in srt.iterdir())
    finally:
        ray.shutdown()
    assert outs["ray"] == outs["local"]
    assert outs["ray-srt"] == outs["local-srt"] and len(outs["ray-srt"]) == 2
    assert len(outs["ray"]) == 7 and "error" in outs["ray"][3] and all(r.get("text") for i, r in
                                                                       enumerate(outs["ray"]) if i != 3)
