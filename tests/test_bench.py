"""Smoke tests of the benchmarks (tiny inputs; no timing assertions)."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_DEVICE

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = str(ROOT / "tests" / "models" / "tiny")
# the `--interpret` benches run the Triton kernels in the CPU's interpreter; where a GPU runs them
# compiled (tests/test_kernels.py, bench/gpu_check.sh) they are not needed, and Triton 3.6's
# interpreter fails under NumPy 2.5 on the GPU machine
interpreter_only = pytest.mark.skipif(KERNEL_DEVICE == "cuda", reason="a GPU runs the compiled kernels")


def _summarized(rows: list[dict]) -> None:
    """gpu_check's summary reads the bench's rows (a row each in its table), and counts no CPU row toward
    issue 28's GPU targets."""
    from bench.gpu_summary import summary, targets

    lines = summary(rows).splitlines()
    quiet = sum(bool(r.get("summary")) and not r.get("server_noted") for r in rows)  # a server's quiet summary
    assert sum(line.startswith(f"| {rows[0]['bench']} |") for line in lines) == len(rows) - quiet
    assert {verdict for _, verdict, _ in targets(rows)} == {"not measured"}


def test_stream_bench_runs_and_records(tmp_path):
    from asr_engine.checkpoint import default_model_dir

    cfg = json.loads((default_model_dir() / "config.json").read_text())["model"]
    chunk_ms = cfg["chunk_size"] * cfg["subsampling"] * 10  # the bundled model's chunk (10 ms feature frames)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "stream", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--limit", "2", "--rounds", "1", "--chunk-ms", f"{chunk_ms * 3 // 2},{chunk_ms * 2}",
                           "--batch", "1,2",
                           "--threads", "1", "--backend", "torch", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{chunk_ms * 3 // 2} ms: not a multiple" in proc.stdout  # 1.5 chunks
    assert f"| torch | fp32 | {chunk_ms * 2} | 2 |" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["batch"], r["skip_threshold"]) for r in rows] == [(1, 1.0), (1, 0.95), (2, 1.0), (2, 0.95)]
    for r in rows:
        assert r["machine"]["cores"] >= 1 and r["rtf"] > 0 and r["steps"] > 0
        assert r["chunk_p50_ms"] <= r["chunk_p95_ms"] <= r["chunk_p99_ms"]


def test_rtf_bench_compares_backends_with_and_without_skipping(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "rtf", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--reps", "2", "--batch", "2", "--threads", "1", "--context", "streaming,full",
                           "--precision", "fp32,int8", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "| torch | streaming | fp32 | cpu | 0.95 |" in proc.stdout
    assert "| onnx | full | int8 | cpu | 0.95 |" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["backend"], r["context"], r["precision"]) for r in rows] == [
        ("torch", "streaming", "fp32"), ("torch", "full", "fp32"),  # torch has no int8: left out
        ("onnx", "streaming", "fp32"), ("onnx", "streaming", "int8"),
        ("onnx", "full", "fp32"), ("onnx", "full", "int8")]
    for r in rows:
        assert r["rtf_off"] > 0 and r["rtf_on"] > 0 and r["speedup"] == r["rtf_off"] / r["rtf_on"]
        assert r["top_off"] == 1.0 and 0 < r["top_on"] < 1.0 and r["reps"] == 2
    for a, b in ((rows[0], rows[2]), (rows[1], rows[4])):  # the backends read alike in each layout
        assert a["wer_off"] == b["wer_off"] and a["top_on"] == b["top_on"]
    _summarized(rows)


def test_server_bench_finds_the_largest_realtime_n_and_samples_the_server(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "server", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--seconds", "2", "--max-clients", "2", "--threads", "1", "--results", str(out),
                           "--lm-precision", "fp32"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "largest N in real time with p95 latency < 500 ms: 2" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    levels, (summary,) = rows[:-1], rows[-1:]
    assert [r["clients"] for r in levels] == [1, 2]
    for r in levels:
        assert r["keeps_up"] and r["failures"] == 0 and r["messages"] >= 2 * r["clients"]
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] <= r["latency_p99_ms"] < 500
        assert r["rss_peak_mb"] > 50 and r["cpu_percent"] > 0
    assert summary["summary"] and summary["largest_realtime_clients"] == 2 and summary["rss_idle_mb"] > 50
    assert {r["device"] for r in rows} == {"cpu"} and {r["lm_precision"] for r in rows} == {"fp32"}  # as passed on
    assert summary["server_noted"] == []  # the server said nothing of trouble: its log's ordinary lines are not noted
    _summarized(rows)
    from bench.server import _noted

    log = "serving on ws://127.0.0.1:1/ decoding: greedy\nCUDA graphs off, the encoder's steps run eagerly: x\n"
    assert _noted(log) == ["CUDA graphs off, the encoder's steps run eagerly: x"]
    assert _noted("Traceback (most recent call last):\n" * 12)[-1] == "... and 2 more"


def test_server_bench_reports_failures_against_a_server_that_refuses(tmp_path):
    """A level whose clients cannot connect fails (no hang, no crash), and N stays 0."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "bench", "server", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--url", f"ws://127.0.0.1:{port}/", "--chunk-ms", "640", "--seconds", "1",
                           "--clients", "1", "--results", ""], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "falls behind" in proc.stdout and "largest N in real time with p95 latency < 500 ms: 0" in proc.stdout


def test_sweep_bench_writes_table_plot_and_rows(tmp_path):
    out, png = tmp_path / "r.jsonl", tmp_path / "sweep.png"
    proc = subprocess.run([sys.executable, "-m", "bench", "sweep", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--thresholds", "0.95,0.6", "--dilations", "0,2", "--reps", "1", "--batch", "3",
                           "--threads", "1", "--plot", str(png), "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["threshold"], r["dilation"]) for r in rows] == [(1.0, None), (0.95, 0), (0.6, 0), (0.95, 2), (0.6, 2)]
    base = rows[0]
    assert base["no_skip"] and base["top"] == 1.0 and base["wer_change"] == 0.0 and base["speedup"] == 1.0
    top = {(r["threshold"], r["dilation"]): r["top"] for r in rows}
    assert top[(0.6, 0)] <= top[(0.95, 0)] < 1.0  # a lower threshold skips more
    assert top[(0.95, 0)] <= top[(0.95, 2)]  # dilation keeps frames around the kept ones
    assert all(r["rtf"] > 0 and 0 <= r["wer"] for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "| 1 | - | 100.0% |" in proc.stdout


@interpreter_only
def test_kernels_bench_checks_kernels_through_the_interpreter(tmp_path):
    out = tmp_path / "r.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "bench", "kernels", "--interpret", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    if "Triton is not installed" in proc.stdout:
        return  # nothing to check without Triton (the test extra installs it on Linux x86_64)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted({(r["kernel"], r["dtype"]) for r in rows}) == sorted(
        (k, d) for k in ("gate_compact", "scatter_back", "factorized_log_probs") for d in ("float32", "float16"))
    for r in rows:
        assert r["interpreted"] and r["triton_us"] > 0 and r["reference_us"] > 0 and r["triton_gbps"] > 0
        assert r["max_abs_diff"] < (1e-2 if r["dtype"] == "float16" else 1e-4)
    _summarized(rows)


def test_kernels_bench_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # the GPU path is what runs there
    proc = subprocess.run([sys.executable, "-m", "bench", "kernels", "--results", str(tmp_path / "r.jsonl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "skipped, no CUDA GPU" in proc.stdout
    assert not (tmp_path / "r.jsonl").exists()


def test_peers_bench_puts_pocketsphinx_and_whisper_base_beside_ours(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "peers", "--manifest", "asr_engine/samples/manifest.jsonl",
                           "--results", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["engine"].startswith("asr-engine (") and rows[0]["wer"] < 0.5 and rows[0]["rtf"] > 0
    if "skipped" in rows[1]:
        assert "pocketsphinx: skipped, not installed" in proc.stdout
    else:
        assert rows[1]["engine"].startswith("pocketsphinx") and 0 <= rows[1]["wer"] and rows[1]["rtf"] > 0
        assert "| pocketsphinx (en-us, streaming) |" in proc.stdout
    if "skipped" in rows[2]:
        assert "whisper-base: skipped, not installed" in proc.stdout
    else:  # whisper-base hears the bundled samples
        assert rows[2]["engine"].startswith("whisper-base (faster-whisper int8") and rows[2]["wer"] < 0.3


@interpreter_only
def test_lm_bench_checks_the_scan_and_measures_fusion(tmp_path):
    import torch

    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.lm.model import GILRLanguageModel, LMConfig, save_lm, vocab_fingerprint

    tok = load_checkpoint(None).tokenizer
    torch.manual_seed(0)
    lm = save_lm(GILRLanguageModel(LMConfig(len(tok.vocab), d_model=16, n_layers=1, vocab_hash=vocab_fingerprint(tok))),
                 tmp_path / "lm")
    (lm / "lexicon.txt").write_text("the\nof\nand\n")
    out = tmp_path / "r.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "bench", "lm", "--interpret", "--manifest",
                           "asr_engine/samples/manifest.jsonl", "--lm", str(lm), "--lm-weights", "0,0.5",
                           "--length-bonuses", "0", "--lexicon-penalties", "0,-30", "--beam", "4",
                           "--sessions", "2", "--threads", "1",
                           "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    scan = [r for r in rows if r["bench"] == "lm-scan"]
    impls = {(r["op"], r["impl"]) for r in scan}
    assert {("scan", "sequential reference"), ("scan", "blocked reference"), ("scan", "loop, own backward"),
            ("gilr_step", "reference")} <= impls
    if importlib.util.find_spec("triton") is not None:
        assert ("scan", "triton") in impls and ("gilr_step", "triton (fused)") in impls
    assert all(r["max_abs_diff"] < 1e-3 and r["forward_ms"] > 0 for r in scan)
    dec = [r for r in rows if r["bench"] == "lm-decode"]
    names = [r["decoder"] for r in dec]
    assert names == ["greedy", "beam 4"] + ["beam 4 + LM (torch)"] * 4 + ["beam 4 + LM (onnx)"] * 4
    assert all(0 <= r["wer"] <= 2 and r["decode_rtf"] > 0 and r["utterances"] == 3 for r in dec)
    by = {(r["decoder"], r["lm_weight"], r["lexicon_penalty"]): r["wer"] for r in dec if "LM" in r["decoder"]}
    # weight 0 without the lexicon is beam search without the LM; torch and ONNX Runtime steps decode alike
    assert by[("beam 4 + LM (torch)", 0.0, 0.0)] == dec[1]["wer"]
    assert by[("beam 4 + LM (torch)", 0.5, 0.0)] == by[("beam 4 + LM (onnx)", 0.5, 0.0)]
    # a three-word lexicon at a prohibitive penalty turns the samples' other words into errors
    assert by[("beam 4 + LM (torch)", 0.0, -30.0)] > by[("beam 4 + LM (torch)", 0.0, 0.0)]


def test_train_bench_measures_throughput_with_and_without_skip_aware_steps(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "train", "--device", "cpu", "--sizes", "default",
                           "--batch", "2", "--seconds", "2", "--steps", "1", "--threads", "1", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["skip"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"off", "on"}
    assert rows["off"]["top_fraction"] == 1.0 and 0.2 < rows["on"]["top_fraction"] < 0.6  # --keep 0.4
    for r in rows.values():
        assert r["bench"] == "train" and r["size"] == "default" and 4 < r["params_m"] < 5
        assert r["x_realtime"] > 0 and r["device"] == "cpu"
    _summarized(list(rows.values()))
    proc = subprocess.run([sys.executable, "-m", "bench", "train", "--device", "cpu", "--sizes", "huge",
                           "--results", ""], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown size 'huge'" in proc.stderr


def test_encoder_bench_times_both_modes_per_batch_and_profiles(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "encoder", "--device", "cpu", "--model", TINY_MODEL,
                           "--batch", "1,2", "--seconds", "2", "--calls", "1", "--reps", "1", "--threshold", "0.5",
                           "--profile", "--threads", "1", "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["bench"] == "encoder" and r["device"] == "cpu" and r["ops"] == "reference"
        assert r["top_off"] == 1.0 and 0.0 <= r["top_on"] <= 1.0
        assert r["ms_off"] > 0 and r["ms_on"] > 0 and r["speedup"] == r["ms_off"] / r["ms_on"]
        assert r["profile_on"]["top_ops"] and r["profile_off"]["host_reads"] == 0  # no skipping: no reads
        for mode in ("on", "off"):  # on the CPU a call returns when it is done, and no device is busy
            assert r[f"profile_{mode}"]["host_ms"] > 0 and r[f"profile_{mode}"]["device_busy_ms"] == 0
    assert "skipping on" in proc.stdout and "| cpu | float32 | full | 2 |" in proc.stdout
    _summarized(rows)


def test_encoder_bench_streams_the_engines_steps(tmp_path):
    """--context stream: each call feeds the utterances one model chunk per step; the rows carry the
    steps, the time per step and the share of frames through the top layers, as in the engine."""
    out = tmp_path / "r.jsonl"
    for graphs in ([], ["--graphs"]):  # the second through recorded steps (run eagerly on a CPU)
        proc = subprocess.run([sys.executable, "-m", "bench", "encoder", "--device", "cpu", "--model", TINY_MODEL,
                               "--context", "stream", "--batch", "2", "--seconds", "2", "--calls", "1", "--reps", "1",
                               "--threshold", "0.5", "--threads", "1", "--results", str(out), *graphs],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"| cpu | float32 | stream | {bool(graphs)} | 2 |" in proc.stdout
    r, g = [json.loads(line) for line in out.read_text().splitlines()]
    from asr_engine.checkpoint import load_checkpoint

    cfg = load_checkpoint(TINY_MODEL).model.cfg
    steps = 2 * 100 / cfg.stride / cfg.chunk_size  # 2 s of 10 ms features, subsampled, in model chunks
    assert r["context"] == "stream" and math.floor(steps) <= r["steps"] <= math.ceil(steps) + 1
    assert r["step_ms_on"] == r["ms_on"] / r["steps"] and r["top_off"] == 1.0 and 0.0 <= r["top_on"] < 1.0
    assert (g["graphs"], r["graphs"]) == (True, False)
    assert (g["steps"], g["top_off"], g["top_on"]) == (r["steps"], r["top_off"], r["top_on"])
    _summarized([r, g])


def test_gpu_summary_says_which_of_issue_28s_targets_a_run_met():
    from bench.gpu_summary import summary, targets

    def enc(batch, speedup, context="full", threshold=0.99, dtype="float32", graphs=False):
        return {"bench": "encoder", "device": "cuda", "dtype": dtype, "context": context, "graphs": graphs,
                "batch": batch, "threshold": threshold, "model_threshold": 0.99, "ms_off": 10.0 * speedup,
                "ms_on": 10.0, "speedup": speedup, "top_on": 0.78, "x_off": 900.0}

    def train(size, skip, x):
        return {"bench": "train", "device": "cuda", "size": size, "skip": skip, "x_realtime": x, "ms_per_step": 90.0}

    def kernel(name, gbps):
        return {"bench": "kernels", "device": "cuda", "kernel": name, "shape": "64x1500x512", "dtype": "float32",
                "triton_gbps": gbps, "reference_gbps": 500.0, "speedup": 4.0, "device_gbps": float("nan")}

    rows = [{"bench": "gpu_check", "step": "test suite", "outcome": "passed", "seconds": 150},
            enc(1, 1.02), enc(64, 1.16), enc(64, 1.27, threshold=0.95), enc(16, 0.97, "stream", graphs=True),
            enc(64, 0.5, dtype="float16"),  # fp16 rows are not the target's
            {"bench": "rtf", "device": "cuda", "backend": "torch", "context": "full", "threshold": 0.99,
             "rtf_off": 0.0005, "rtf_on": 0.0004, "speedup": 1.25, "wer_off": 0.3, "wer_on": 0.3},
            train("default", "off", 9300.0), train("whisper-base", "on", 2900.0), train("large", "off", 1000.0),
            kernel("gate_compact", 2091.0), kernel("scatter_back", 900.0),
            {"bench": "server", "device": "cuda", "clients": 64, "latency_p50_ms": 30.0, "latency_p95_ms": 65.0,
             "failures": 0}, {"bench": "server", "summary": True, "server_noted": []},
            {"bench": "server", "device": "cuda", "cuda_graphs": True, "clients": 64, "latency_p50_ms": 20.0,
             "latency_p95_ms": 40.0, "failures": 0},
            {"bench": "server", "device": "cuda", "cuda_graphs": True, "summary": True,
             "server_noted": ["CUDA graphs off, the encoder's steps run eagerly: capture failed"]}]
    verdicts = {t.split(" ")[0] + (" " + t.split(" ")[1] if t.startswith("skipping") else ""): (v, m)
                for t, v, m in targets(rows)}
    assert verdicts["all"] == ("met", "passed")
    assert verdicts["training"] == ("not met", "slowest whisper-base skip on: 2,900x")  # "large" is not the target's
    assert verdicts["skipping at"] == ("not met", "slowest encoder stream graphs batch 16 threshold 0.99: 0.97x of 5 "
                                                  "settings")
    assert verdicts["skipping >="] == ("not met", "best batch 64 at 0.99: 1.16x (78% of frames kept)")  # not 0.95's
    assert verdicts["gate_compact"] == ("met", "best 64x1500x512 float32: 2,091 GB/s")
    text = summary(rows)
    assert text.count("| encoder |") == 5 and text.count("| server |") == 3 and "| step | test suite |" in text
    assert "| server | cuda graphs 64 clients | p50 20 ms, p95 40 ms, 0 failures |" in text
    assert "| server | cuda graphs said | CUDA graphs off, the encoder's steps run eagerly: capture failed |" in text
    rows[4]["speedup"] = 1.01
    rows[0]["outcome"] = "timed out"
    assert [v for _, v, _ in targets(rows)] == ["not met", "not met", "met", "not met", "met"]
    assert [v for _, v, _ in targets([])] == ["not measured"] * 5


def test_gpu_summary_reads_every_row_the_benches_ever_recorded():
    """bench/results.jsonl holds every bench's rows since the first, in their shapes of the day: the summary
    writes a line for each (the server's summaries aside) rather than stopping at one it does not know."""
    from bench.gpu_summary import summary

    path = ROOT / "bench" / "results.jsonl"
    if not path.exists():
        pytest.skip("bench/results.jsonl is left out of a GPU call (gpu_check.sh --slim)")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    lines = summary(rows).splitlines()
    n = sum(not (r["bench"] == "server" and r.get("summary") and not r.get("server_noted")) for r in rows)
    assert len(lines) == 1 + 2 + n + 1 + 2 + 5  # a blank line and a header before each table
    assert {r["bench"] for r in rows} >= {"rtf", "server", "stream"}


@pytest.mark.parametrize("argv", [["encoder", "--device", "tpu"], ["train", "--device", "cuda:x"],
                                  ["rtf", "--manifest", "asr_engine/samples/manifest.jsonl", "--device", "gpu"]])
def test_a_bench_on_a_device_that_cannot_run_ends_in_one_line(argv):
    from bench.__main__ import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--results", ""])
    names = "cpu, cuda or cuda:N" if argv[0] == "rtf" else "cpu, cuda, cuda:N or auto"  # encoder, train take auto
    assert str(e.value) == f"python -m bench {argv[0]}: error: device {argv[-1]!r}: use {names}"


@pytest.mark.parametrize("argv, says", [
    (["encoder", "--batch", "1,0"], "argument --batch: 0: must be at least 1"),  # was a reshape traceback
    (["encoder", "--batch", "-3"], "argument --batch: -3: must be at least 1"),  # an overflow traceback
    (["rtf", "--manifest", "m", "--threshold", "nan"], "argument --threshold: nan: must be a finite number"),
    (["sweep", "--manifest", "m", "--thresholds", "0.9,2"], "argument --thresholds: 2: must be a finite number"),
    (["stream", "--manifest", "m", "--backend", "tf"], "argument --backend: 'tf': one of torch, onnx"),
    (["kernels", "--shape", "16x1500"], "argument --shape: '16x1500': 4 positive whole numbers joined by x"),
    (["lm", "--lm-weights", "0.5,inf"], "argument --lm-weights: inf: must be a finite number"),
    (["train", "--skip", "off,maybe"], "argument --skip: 'maybe': one of off, on"),
    (["server", "--manifest", "m", "--chunk-ms", "0"], "argument --chunk-ms: 0: must be a finite number"),
])
def test_a_bench_refuses_impossible_options_when_it_reads_them(argv, says, capsys):
    from bench.__main__ import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--results", ""])
    assert e.value.code == 2 and f"python -m bench {argv[0]}: error: {says}" in capsys.readouterr().err


def test_a_bench_given_no_manifest_says_so_in_one_line(tmp_path):
    from bench.__main__ import main

    with pytest.raises(SystemExit) as e:  # a FileNotFoundError traceback before
        main(["rtf", "--manifest", str(tmp_path / "nothing.jsonl"), "--results", ""])
    assert str(e.value) == f"python -m bench rtf: error: {tmp_path / 'nothing.jsonl'}: no such manifest or folder"


def test_every_bench_that_gpu_check_runs_parses():
    """gpu_check.sh's bench lines are read by the parsers they will meet on the GPU machine (one call, no
    second try there): an option renamed or a value format changed here fails this, not the device's call."""
    import shlex

    from bench.__main__ import parser

    script = (ROOT / "bench" / "gpu_check.sh").read_text().replace("\\\n", " ")
    lines = [line.split("-m bench ", 1)[1] for line in script.splitlines() if "$PY -m bench " in line]
    assert len(lines) >= 10
    for line in lines:
        line = line.split(" | ")[0].replace('"$RES"', "r.jsonl").replace('"$MAN"', "m.jsonl")
        line = re.sub(r'"\$\{\w+:-([^}]*)\}"', r"\1", line)  # a variable's default
        line = line.replace('"${LM_ARG[@]}"', "--lm none")  # what it holds when the bundled LM stayed home
        args = parser().parse_args(shlex.split(line))
        assert args.func, line


def test_gpu_check_script_parses_and_says_when_there_is_no_gpu(tmp_path):
    import torch

    script = ROOT / "bench" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if torch.cuda.is_available():
        return  # there it runs for minutes: bench/gpu_check.sh is run by hand on a GPU machine
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "no CUDA GPU here" in proc.stdout


WHEELS_MIB = 5.4  # what `gpu_check.sh --fetch-wheels` fetched on 2026-12-07 (5.37 MiB, Python 3.12, text2num too)


def test_gpu_check_leaves_room_for_its_wheels_under_the_device_tools_limit():
    """The device tool sends at most 64 MiB (the working tree and the carried wheels); `--size` says
    what travels once the call's leavings are out, changing nothing."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--size"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mib = float(proc.stdout.split(" MiB")[0].split()[-1])
    wheels = 0.0 if "with .whl" in proc.stdout else WHEELS_MIB
    assert 10 < mib and mib + wheels <= 64, proc.stdout
    assert subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout == before


def test_gpu_check_steps_end_by_its_budget(tmp_path):
    """The device tool stops a call at 600 s: gpu_check's steps are cut to end by GPU_CHECK_BUDGET, and a
    step with no time left is left out and counted as failed (its step function, run alone)."""
    lines = (ROOT / "bench" / "gpu_check.sh").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("BUDGET="))
    body = next(i for i in range(start, len(lines)) if lines[i].startswith("step() {"))
    end = next(i for i in range(body, len(lines)) if lines[i] == "}")
    script = tmp_path / "steps.sh"
    script.write_text("\n".join([f"LOG={tmp_path}/log", f"RES={tmp_path}/res.jsonl", f"PY={sys.executable}",
                                 "status=0", "GPU_CHECK_BUDGET=4", "GPU_CHECK_MIN_STEP=1", *lines[start:end + 1],
                                 'step fast 100 true', 'step slow 100 sleep 60', 'step late 100 true',
                                 'echo "status=$status"']) + "\n")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    out = proc.stdout
    assert "== fast (limit 4s)" in out and "== fast: exit 0" in out
    assert "== slow: exit 124" in out  # cut at the budget, not at its own 100 s
    assert "== late: left out" in out and out.rstrip().endswith("status=1")
    steps = [json.loads(line) for line in (tmp_path / "res.jsonl").read_text().splitlines()]  # for gpu_summary
    assert [(r["step"], r["outcome"]) for r in steps] == [("fast", "passed"), ("slow", "timed out"),
                                                          ("late", "left out (budget)")]


def test_server_bench_reaches_a_tls_server_that_its_ca_file_vouches_for(tls_files):
    """`bench server --url wss://... --ca-file PEM` measures a server of the user's behind TLS (a self-signed one
    included); without the file its clients fail the certificate check and the level fails, in one run."""
    from asr_engine.backend import load_model
    from asr_engine.engine import DecodeOptions, Engine

    from servers import Running

    r = Running(Engine(load_model(None, "auto"), DecodeOptions()), tls_cert=tls_files.cert, tls_key=tls_files.key)
    try:
        url = r.url.replace("ws://", "wss://") + "/"
        base = [sys.executable, "-m", "bench", "server", "--manifest", "asr_engine/samples/manifest.jsonl",
                "--url", url,
                "--chunk-ms", "320", "--seconds", "1", "--clients", "1", "--results", ""]
        trusted = subprocess.run([*base, "--ca-file", tls_files.ca], cwd=ROOT, capture_output=True, text=True,
                                 timeout=120)
        assert trusted.returncode == 0, trusted.stderr
        assert "1 clients: latency" in trusted.stdout and "0 failures" in trusted.stdout
        assert "largest N in real time with p95 latency < 500 ms: 1" in trusted.stdout
        untrusted = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert untrusted.returncode == 0 and "largest N in real time with p95 latency < 500 ms: 0" in untrusted.stdout
        plain = subprocess.run([*base[:7], r.url + "/", *base[8:], "--ca-file", tls_files.ca], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert plain.returncode != 0 and "--ca-file goes with a wss:// URL" in plain.stderr
    finally:
        r.stop()
