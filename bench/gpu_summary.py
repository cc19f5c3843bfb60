"""What `bench/gpu_check.sh` measured, as one table, then issue 28's targets, each met, not met or not
measured: python -m bench.gpu_summary RESULTS.jsonl (the JSON lines the benches and the script's steps
wrote). Read on the CPU too (tests/test_bench.py), so that a GPU call's last minute is not spent on a
fault here."""

from __future__ import annotations

import json
import math
import sys

TRAIN_X = 3000.0  # training, times real time, for the model sizes the engine ships (bench train's sizes)
TRAIN_SIZES = ("default", "whisper-base")
OFFLINE_X = 1.2  # skipping's speed-up on whole utterances at the model's threshold
GATE_GBPS = 1000.0  # gate_compact's wall bandwidth at its best shape
ENCODER = ("encoder", "dtype", "batch", "threshold", "speedup")  # what an encoder row needs to count


def _gbps(r: dict, key: str) -> float:
    v = r.get(key, float("nan"))
    return v if isinstance(v, (int, float)) and not math.isnan(v) else float("nan")


def _line(r: dict) -> str | None:
    b = r["bench"]
    if b == "gpu_check":
        return f"| step | {r['step']} | {r['outcome']} in {r['seconds']} s |"
    if b == "kernels":
        return (f"| kernels | {r['kernel']} {r['shape']} {r['dtype']} | {r['triton_gbps']:.0f} GB/s "
                f"(reference {r['reference_gbps']:.0f}), {r['speedup']:.2f}x; kernels alone "
                f"{_gbps(r, 'device_gbps'):.0f} GB/s |")
    if b == "encoder":
        graphs = " graphs" if r.get("graphs") else ""
        return (f"| encoder | {r.get('context', 'full')}{graphs} {r['dtype']} batch {r['batch']} threshold "
                f"{r['threshold']:g} | {r['ms_off']:.1f} ms off, {r['ms_on']:.1f} ms on ({r['speedup']:.2f}x, "
                f"top {r['top_on']:.0%}), {r['x_off']:.0f}x real time off |")
    if b == "rtf":
        return (f"| rtf | {r['backend']} {r.get('context', 'streaming')} {r.get('device', 'cpu')} threshold "
                f"{r['threshold']:g} | RTF {r['rtf_off']:.5f} off, {r['rtf_on']:.5f} on ({r['speedup']:.2f}x), WER "
                f"{r['wer_off']:.2%} / {r['wer_on']:.2%} |")
    if b == "server":
        where = f"{r.get('device', 'cpu')}{' graphs' if r.get('cuda_graphs') else ''}"
        if r.get("summary"):  # a line only when the server said something of trouble
            return f"| server | {where} said | {'; '.join(r['server_noted'])} |" if r.get("server_noted") else None
        return (f"| server | {where} {r['clients']} clients | p50 {r['latency_p50_ms']:.0f} ms, "
                f"p95 {r['latency_p95_ms']:.0f} ms, {r['failures']} failures |")
    if b == "train":
        return (f"| train | {r['size']} skip {r['skip']} | {r['x_realtime']:.0f}x real time, "
                f"{r['ms_per_step']:.0f} ms/step |")
    raise KeyError(b)


def table(rows: list[dict]) -> list[str]:
    """A line per row; a row in a shape this does not know (another bench, an older version of one) is
    written as its first fields rather than stopping the summary."""
    out = ["| bench | setting | measure |", "|---|---|---|"]
    for r in rows:
        try:
            line = _line(r)
        except (KeyError, TypeError, ValueError):
            keys = [k for k in r if k not in ("machine", "time", "bench")]
            line = f"| {r.get('bench', '?')} | " + ", ".join(f"{k}={r[k]}" for k in keys[:6]) + " |"
        if line is not None:
            out.append(line)
    return out


def targets(rows: list[dict]) -> list[tuple[str, str, str]]:
    """Issue 28's GPU targets -> (target, "met" / "not met" / "not measured", what was measured)."""
    def on_gpu(r):
        return str(r.get("device", "")).startswith("cuda")

    def has(r, bench, *keys):
        return r.get("bench") == bench and all(k in r for k in keys)

    out = []
    suite = [r for r in rows if has(r, "gpu_check", "step", "outcome") and r["step"] == "test suite"]
    out.append(("all tests green on the GPU machine",
                "not measured" if not suite else "met" if suite[-1]["outcome"] == "passed" else "not met",
                suite[-1]["outcome"] if suite else "the suite did not run"))

    train = [r for r in rows
             if has(r, "train", "size", "skip", "x_realtime") and on_gpu(r) and r["size"] in TRAIN_SIZES]
    worst = min(train, key=lambda r: r["x_realtime"], default=None)
    out.append((f"training >= {TRAIN_X:,.0f}x real time ({', '.join(TRAIN_SIZES)}, skip-aware steps on and off)",
                "not measured" if worst is None else "met" if worst["x_realtime"] >= TRAIN_X else "not met",
                "" if worst is None else f"slowest {worst['size']} skip {worst['skip']}: {worst['x_realtime']:,.0f}x"))

    timed = ([(f"encoder {r.get('context', 'full')}{' graphs' if r.get('graphs') else ''} batch {r['batch']} "
               f"threshold {r['threshold']:g}", r["speedup"])
              for r in rows if has(r, *ENCODER) and on_gpu(r) and r["dtype"] == "float32"]
             + [(f"rtf {r['backend']} {r.get('context', 'streaming')} threshold {r['threshold']:g}", r["speedup"])
                for r in rows if has(r, "rtf", "backend", "threshold", "speedup") and on_gpu(r)])
    worst = min(timed, key=lambda t: t[1], default=None)
    out.append(("skipping at least break-even on the GPU (fp32, every batch and mode)",
                "not measured" if worst is None else "met" if worst[1] >= 1.0 else "not met",
                "" if worst is None else f"slowest {worst[0]}: {worst[1]:.2f}x of {len(timed)} settings"))

    full = [r for r in rows if has(r, *ENCODER, "top_on") and on_gpu(r) and r["dtype"] == "float32"
            and r.get("context", "full") == "full" and r.get("model_threshold", r["threshold"]) == r["threshold"]]
    best = max(full, key=lambda r: r["speedup"], default=None)
    out.append((f"skipping >= {OFFLINE_X}x on whole utterances (fp32, the model's threshold)",
                "not measured" if best is None else "met" if best["speedup"] >= OFFLINE_X else "not met",
                "" if best is None else f"best batch {best['batch']} at {best['threshold']:g}: {best['speedup']:.2f}x "
                                        f"({best['top_on']:.0%} of frames kept)"))

    gate = [r for r in rows if has(r, "kernels", "kernel", "shape", "dtype", "triton_gbps") and on_gpu(r)
            and r["kernel"] == "gate_compact"]
    best = max(gate, key=lambda r: r["triton_gbps"], default=None)
    out.append((f"gate_compact >= {GATE_GBPS / 1000:g} TB/s (wall)",
                "not measured" if best is None else "met" if best["triton_gbps"] >= GATE_GBPS else "not met",
                "" if best is None else f"best {best['shape']} {best['dtype']}: {best['triton_gbps']:,.0f} GB/s"))
    return out


def summary(rows: list[dict]) -> str:
    lines = ["", *table(rows), "", "| issue 28's target | verdict | measured |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {m} |" for t, v, m in targets(rows)]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench.gpu_summary RESULTS.jsonl")
    with open(argv[0]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(summary(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
