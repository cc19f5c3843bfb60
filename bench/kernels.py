"""kernels: the Triton kernels of the skipping path against their torch references, on a CUDA GPU:
time per call and effective bandwidth.

Effective bandwidth counts the bytes an op must move, divided by its time:
- gate_compact: the blank logit of every frame, the kept rows of x read and the compacted rows
  written, and the per-frame index, slot and keep;
- scatter_back: one (B, T, V) read (each row from the base or from y) and one written, and the slots;
- factorized_log_probs: one read and one write of the (N, V) logits.
Each op is checked against its reference before it is timed. Times are medians over repetitions of
`--calls` back-to-back calls between synchronisations: wall time, which holds each call's launches
and, for gate_compact, the host's read of the kept-frame count that sizes its output. The device
columns count only the time the GPU spends in the Triton op's kernels and copies (torch.profiler,
one call): how close the kernels come to the memory's bandwidth.

Without a GPU the bench prints a note and records nothing, unless `--interpret`: then the same code
runs through Triton's interpreter on the CPU at tiny shapes. That checks the bench and the kernels'
outputs, and says nothing about speed.
"""

from __future__ import annotations

import os

from asr_engine.argtypes import at_least, dims, listed, one_of
from bench.common import append_results, table, timed


def _gate(B: int, T: int, V: int, device: str, dtype, keep_share: float):
    """Gate logits whose blank probability is clear of the 0.5 threshold; about keep_share of frames kept."""
    import torch

    g = torch.Generator().manual_seed(0)
    raw = torch.randn(B, T, V, generator=g) * 2
    kept = torch.rand(B, T, generator=g) < keep_share
    raw[..., 0] = torch.where(kept, -3.0, 3.0) + torch.rand(B, T, generator=g)  # P(blank) < or > 0.5
    return raw.to(device=device, dtype=dtype)


def _device_time(fn) -> float:
    """Seconds the GPU spends in one call's kernels and copies (torch.profiler), without the host's
    launch and synchronisation costs that the wall time holds."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()) / 1e6


def measure(B: int, T: int, D: int, V: int, dtype_name: str, device: str, reps: int, calls: int) -> list[dict]:
    import torch

    from asr_engine.kernels import REFERENCE, load_triton_ops

    tri = load_triton_ops()
    dtype = getattr(torch, dtype_name)
    e = torch.finfo(dtype).bits // 8
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    raw = _gate(B, T, V, device, dtype, keep_share=0.4)
    x = torch.randn(B, T, D, device=device, dtype=dtype)
    lengths = torch.full((B,), T, device=device, dtype=torch.long)
    lengths[::2] = T - T // 4  # ragged
    threshold, dilation, chunk = 0.5, 1, 16

    ref_c = REFERENCE.gate_compact(raw, x, lengths, threshold, dilation, chunk)
    tri_c = tri.gate_compact(raw, x, lengths, threshold, dilation, chunk)
    if not (torch.equal(tri_c.x, ref_c.x) and torch.equal(tri_c.slot, ref_c.slot)):
        raise SystemExit(f"gate_compact differs from its reference at {B}x{T}x{D} {dtype_name}")
    y = torch.randn(B, ref_c.x.shape[1], V, device=device, dtype=dtype)
    if not torch.equal(tri.scatter_back(raw, y, tri_c), REFERENCE.scatter_back(raw, y, ref_c)):
        raise SystemExit(f"scatter_back differs from its reference at {B}x{T}x{V} {dtype_name}")
    lp_diff = (tri.log_probs(raw).float() - REFERENCE.log_probs(raw).float()).abs().max().item()

    kept = int(ref_c.keep.sum())
    cases = [
        ("gate_compact", f"{B}x{T}x{D}", lambda ops: ops.gate_compact(raw, x, lengths, threshold, dilation, chunk),
         B * T * e + kept * D * e + B * ref_c.x.shape[1] * D * e + B * T * (8 + 8 + 1), 0.0),
        ("scatter_back", f"{B}x{T}x{V}", lambda ops: ops.scatter_back(raw, y, ref_c if ops is REFERENCE else tri_c),
         2 * B * T * V * e + B * T * 8, 0.0),
        ("factorized_log_probs", f"{B * T}x{V}", lambda ops: ops.log_probs(raw), 2 * B * T * V * e, lp_diff),
    ]
    rows = []
    for name, shape, call, nbytes, diff in cases:
        t_ref = timed(lambda: call(REFERENCE), reps, calls, sync)
        t_tri = timed(lambda: call(tri), reps, calls, sync)
        t_dev = _device_time(lambda: call(tri)) if device == "cuda" else float("nan")
        dev_cols = {"device_us": t_dev * 1e6, "device_gbps": nbytes / t_dev / 1e9 if t_dev > 0 else float("nan")}
        rows.append({**dev_cols, "kernel": name, "shape": shape, "dtype": dtype_name, "kept": kept / (B * T),
                     "triton_us": t_tri * 1e6, "reference_us": t_ref * 1e6, "speedup": t_ref / t_tri,
                     "triton_gbps": nbytes / t_tri / 1e9, "reference_gbps": nbytes / t_ref / 1e9,
                     "max_abs_diff": diff})
    return rows


def main(args) -> None:
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton's modules load
    import torch

    if args.interpret:
        device, (B, T, D, V), reps, calls = "cpu", (2, 40, 8, 6), 1, 1
        print("Triton interpreter on the CPU, tiny shapes: a check of the bench and the kernels, not a speed")
    elif torch.cuda.is_available():
        device, (B, T, D, V), reps, calls = "cuda", args.shape, args.reps, args.calls
    else:
        print("kernels: skipped, no CUDA GPU here (the Triton kernels run on GPUs; --interpret checks them "
              "on the CPU without timing them)")
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        print("kernels: skipped, Triton is not installed (pip install -e '.[gpu]')")
        return
    rows = []
    for dtype_name in args.dtype:
        rows += measure(B, T, D, V, dtype_name, device, reps, calls)
    print(table(rows, [("kernel", "kernel", "s"), ("shape", "shape", "s"), ("dtype", "dtype", "s"),
                       ("Triton us", "triton_us", ".1f"), ("reference us", "reference_us", ".1f"),
                       ("speed-up", "speedup", ".2f"), ("Triton GB/s", "triton_gbps", ".1f"),
                       ("reference GB/s", "reference_gbps", ".1f"), ("Triton device us", "device_us", ".1f"),
                       ("device GB/s", "device_gbps", ".0f"), ("max abs diff", "max_abs_diff", ".1e")]))
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    append_results(args.results, "kernels", rows, {"device": device, "gpu": gpu, "interpreted": args.interpret,
                                                   "kept_share": rows[0]["kept"] if rows else None})


def add_parser(sub) -> None:
    p = sub.add_parser("kernels", help="Triton kernels vs torch references: time and GB/s (CUDA)")
    p.add_argument("--shape", type=dims(4), default=[16, 1500, 256, 512], help="BxTxDxV (default 16x1500x256x512)")
    p.add_argument("--dtype", type=listed(one_of("float32", "float16", "bfloat16")),
                   default=["float32", "float16"], help="dtypes (default float32,float16)")
    p.add_argument("--reps", type=at_least(1), default=20, help="timed repetitions (default 20)")
    p.add_argument("--calls", type=at_least(1), default=10, help="calls per repetition (default 10)")
    p.add_argument("--interpret", action="store_true",
                   help="run through Triton's interpreter on the CPU at tiny shapes (a check, not a timing)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
