"""encoder: the encoder alone on whole utterances, with and without layer skipping, per batch size,
and where the time goes (torch.profiler) in each mode.

`bench rtf` times the whole recognizer (features, encoder, decoding, text); on a GPU the encoder is
a small part of that, so a skipping gain or loss in the encoder can hide there. This bench feeds
the encoder the same features again and again (the bundled samples' log-mels, tiled to `--seconds`
per utterance) and reports, per batch size and mode, milliseconds per call, times real time, the
share of frames that ran the top layers, and with `--profile` the operators that take the most
device (or CPU) time and the host reads (`aten::item`, `aten::_local_scalar_dense`, device-to-host
copies) per call: each of those stalls the host until the device has caught up.
"""

from __future__ import annotations

from bench.common import append_results, load_manifest, table, timed


def _utterance(ckpt, device, seconds: float):
    """The bundled samples' log-mels one after another, tiled to `seconds` -> (T, F) and frames per second."""
    from pathlib import Path

    import torch

    from asr_engine.audio import SAMPLE_RATE
    from asr_engine.model.fbank import Fbank

    audios, _ = load_manifest(str(Path(__file__).resolve().parents[1] / "asr_engine" / "samples" / "manifest.jsonl"),
                              None)
    fbank = Fbank(ckpt.features).to(device)
    with torch.inference_mode():
        feats = torch.cat([fbank(torch.from_numpy(a).to(device)[None])[0] for a in audios])  # (T_all, F)
    per_s = feats.shape[0] / (sum(len(a) for a in audios) / SAMPLE_RATE)
    T = int(seconds * per_s)
    return feats.repeat(-(-T // feats.shape[0]), 1)[:T], per_s


def _batch(one, batch: int):
    """`batch` copies of one utterance (T, F) with ragged lengths (100% .. 62.5% of T)."""
    import torch

    T = one.shape[0]
    lengths = torch.tensor([T - (i % 4) * T // 8 for i in range(batch)], device=one.device)
    return one[None].expand(batch, T, one.shape[1]).contiguous(), lengths


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _profile(encoder, x, lengths, skip, device) -> dict:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), profile(activities=acts) as prof:
        encoder(x, lengths, skip)
        _sync(device)
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:8]
    host_reads = sum(e.count for e in events if e.key in ("aten::item", "aten::_local_scalar_dense"))
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    d2h = sum(e.count for e in events if "DtoH" in e.key or e.key == "cudaMemcpyAsync")
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    # the device's busy time (its kernels and copies) against the call's wall time: a call whose
    # device is busy for much less than its wall is bound by the host (launches, Python, host reads)
    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e3
    return {"host_reads": host_reads, "syncs": syncs, "memcpy": d2h, "launches": launches, "device_busy_ms": busy,
            "top_ops": [f"{e.key} {getattr(e, key, 0.0) / 1e3:.2f} ms x{e.count}" for e in top]}


def _host_ms(encoder, x, lengths, skip, device, calls: int = 5) -> float:
    """Milliseconds until a call returns to the host, before waiting for the device: its launches,
    its Python and its waits at host reads; with the device's busy time this splits a call's cost."""
    import time

    import torch

    total = 0.0
    with torch.inference_mode():
        for _ in range(calls):
            _sync(device)
            t0 = time.perf_counter()
            encoder(x, lengths, skip)
            total += time.perf_counter() - t0
    _sync(device)
    return total / calls * 1e3


def main(args) -> None:
    import torch

    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.kernels import select_ops
    from asr_engine.model.encoder import SkipOptions

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.model)
    encoder = ckpt.model.to(device).eval()
    encoder.ops = select_ops(device)
    dtype = getattr(torch, args.dtype)
    encoder.to(dtype)
    threshold = args.threshold if args.threshold is not None else ckpt.model.cfg.skip_threshold
    modes = {"off": None, "on": SkipOptions(threshold, ckpt.model.cfg.skip_dilation)}
    one, per_s = _utterance(ckpt, device, args.seconds)
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        x, lengths = _batch(one.to(dtype), batch)
        audio_s = float(lengths.sum()) / per_s
        row = {"device": str(device), "dtype": args.dtype, "batch": batch, "seconds": args.seconds,
               "threshold": threshold, "ops": encoder.ops.name}
        for name, skip in modes.items():
            with torch.inference_mode():
                t = timed(lambda: encoder(x, lengths, skip), args.reps, args.calls, lambda: _sync(device))
                out = encoder(x, lengths, skip)
            row[f"ms_{name}"] = t * 1e3
            row[f"x_{name}"] = audio_s / t
            row[f"top_{name}"] = float(out.top_mask.sum()) / float(out.lengths.sum())
            if args.profile:
                p = _profile(encoder, x, lengths, skip, device)
                p["host_ms"] = _host_ms(encoder, x, lengths, skip, device)
                row[f"profile_{name}"] = p
                print(f"batch {batch}, skipping {name}: {row[f'ms_{name}']:.2f} ms a call, returns to the host after "
                      f"{p['host_ms']:.2f} ms, device busy {p['device_busy_ms']:.2f} ms (profiled); "
                      f"{p['host_reads']} host reads, {p['syncs']} syncs, "
                      f"{p['memcpy']} memcpy, {p['launches']} launches; top ops:\n    " + "\n    ".join(p["top_ops"]),
                      flush=True)
        row["speedup"] = row["ms_off"] / row["ms_on"]
        rows.append(row)
    print(table(rows, [("device", "device", "s"), ("dtype", "dtype", "s"), ("batch", "batch", "d"),
                       ("ms off", "ms_off", ".2f"), ("ms on", "ms_on", ".2f"), ("speed-up", "speedup", ".2f"),
                       ("x real time off", "x_off", ".0f"), ("top frames on", "top_on", ".1%")]))
    append_results(args.results, "encoder", rows, {"model": args.model or "default"})


def add_parser(sub) -> None:
    p = sub.add_parser("encoder", help="the encoder alone, skipping off/on, per batch size (with --profile: where "
                                       "the time goes)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: the GPU when there is one)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 weights and inputs")
    p.add_argument("--batch", default="1,16,64", help="batch sizes (default 1,16,64)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per utterance, the longest (default 15)")
    p.add_argument("--threshold", type=float, default=None, help="skip threshold (default: the model's)")
    p.add_argument("--calls", type=int, default=5, help="calls per timed repetition (default 5)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions, the median is kept (default 3)")
    p.add_argument("--profile", action="store_true", help="print each mode's top operators and host reads")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (default: torch's choice)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
