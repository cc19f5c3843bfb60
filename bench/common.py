"""What every benchmark shares: the machine description, manifests, percentiles, the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from asr_engine.argtypes import at_least


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu,
            "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "commit": commit}


def load_manifest(path: str, limit: int | None) -> tuple[list[np.ndarray], list[str]]:
    """Audio (16 kHz float32) and reference texts of a manifest's first `limit` rows."""
    from asr_engine.audio import load_audio
    from asr_engine.manifest import read_corpus

    rows = read_corpus(path)[:limit]
    if not rows:
        raise SystemExit(f"{path}: no utterances")
    return [load_audio(u.audio) for u in rows], [u.text for u in rows]


def load_manifests(paths: list[str], limit: int | None) -> tuple[list[np.ndarray], list[str]]:
    """load_manifest over several manifests, `limit` rows from each."""
    audios, refs = [], []
    for p in paths:
        a, r = load_manifest(p, limit)
        audios += a
        refs += r
    return audios, refs


def load_sorted(paths: list[str], limit: int | None) -> tuple[list[np.ndarray], list[str]]:
    """load_manifests, shortest utterance first: batches of similar lengths pad little (as eval does)."""
    audios, refs = load_manifests(paths, limit)
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    return [audios[i] for i in order], [refs[i] for i in order]


def add_offline_arguments(p, backend_default: str, backend_help: str) -> None:
    """The arguments of the offline benchmarks (rtf, sweep): manifests, model, backend, device."""
    p.add_argument("--manifest", required=True, action="append",
                   help="JSONL manifest or LibriSpeech-layout folder (repeat for several)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--limit", type=at_least(1), default=None, help="utterances per manifest (default: all)")
    p.add_argument("--backend", default=backend_default, help=f"{backend_help} (default {backend_default})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def timed(fn, reps: int, calls: int, sync) -> float:
    """Seconds per call of fn: after one warm-up call, the median over `reps` repetitions of `calls`
    back-to-back calls, `sync` (the device's synchronisation, or nothing) closing each repetition."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


def append_results(path: str | None, bench: str, rows: list[dict], context: dict) -> None:
    """One JSON line per measured setting: machine, context (model, manifest, ...) and the row."""
    if not path:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps({"bench": bench, "time": stamp, "machine": machine(), **context, **r}) + "\n")


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table; columns are (header, key, format)."""
    out = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(format(r[k], f) for _, k, f in columns) + " |")
    return "\n".join(out)


def decoder(model, threshold: float, batch: int, dilation: int | None = None):
    """(audios, paths) -> results for an engine's model (asr_engine.backend.load_model): whole
    utterances on a torch model, streaming on an ONNX one."""
    from asr_engine.engine import DecodeOptions, Engine

    return Engine(model, DecodeOptions(skip_threshold=threshold, skip_dilation=dilation, max_batch=batch)
                  ).transcribe_arrays
