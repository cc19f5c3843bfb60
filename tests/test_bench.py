"""Smoke tests of the benchmarks (tiny inputs; no timing assertions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stream_bench_runs_and_records(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "stream", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--limit", "2", "--rounds", "1", "--chunk-ms", "320,640", "--batch", "1,2",
                           "--threads", "1", "--backend", "torch", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "320 ms: not a multiple" in proc.stdout and "| torch | 640 | 2 |" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["batch"], r["skip_threshold"]) for r in rows] == [(1, 1.0), (1, 0.95), (2, 1.0), (2, 0.95)]
    for r in rows:
        assert r["machine"]["cores"] >= 1 and r["rtf"] > 0 and r["steps"] > 0
        assert r["chunk_p50_ms"] <= r["chunk_p95_ms"] <= r["chunk_p99_ms"]


def test_rtf_bench_compares_backends_with_and_without_skipping(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "rtf", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--reps", "2", "--batch", "2", "--threads", "1", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "| torch | cpu | 0.95 |" in proc.stdout and "| onnx | cpu | 0.95 |" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["backend"] for r in rows] == ["torch", "onnx"]
    for r in rows:
        assert r["rtf_off"] > 0 and r["rtf_on"] > 0 and r["speedup"] == r["rtf_off"] / r["rtf_on"]
        assert r["top_off"] == 1.0 and 0 < r["top_on"] < 1.0 and r["reps"] == 2
    assert rows[0]["wer_off"] == rows[1]["wer_off"] and rows[0]["top_on"] == rows[1]["top_on"]  # same transcripts
