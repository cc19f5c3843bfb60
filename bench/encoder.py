"""encoder: the encoder alone on whole utterances (or, with `--context stream`, as the engine's
streaming steps), with and without layer skipping, per batch size, and where the time goes
(torch.profiler) in each mode.

`bench rtf` times the whole recognizer (features, encoder, decoding, text); on a GPU the encoder is
a small part of that, so a skipping gain or loss in the encoder can hide there. This bench feeds
the encoder the same features again and again (the bundled samples' log-mels, tiled to `--seconds`
per utterance) and reports, per batch size and mode, milliseconds per call, times real time, the
share of frames that ran the top layers, and with `--profile` the operators that take the most
device (or CPU) time and the host reads (`aten::item`, `aten::_local_scalar_dense`, device-to-host
copies) per call: each of those stalls the host until the device has caught up. In streaming steps
a call is the whole utterance fed one model chunk per step, each step's log-probs read back to the
host as the engine reads them.
"""

from __future__ import annotations

from asr_engine.argtypes import PROBABILITY, at_least, listed, within
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


def _profile(run, skip, device) -> dict:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), profile(activities=acts) as prof:
        run(skip)
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


def _host_ms(run, skip, device, calls: int = 5) -> float:
    """Milliseconds until a call returns to the host, before waiting for the device: its launches,
    its Python and its waits at host reads; with the device's busy time this splits a call's cost."""
    import time

    import torch

    total = 0.0
    with torch.inference_mode():
        for _ in range(calls):
            _sync(device)
            t0 = time.perf_counter()
            run(skip)
            total += time.perf_counter() - t0
    _sync(device)
    return total / calls * 1e3


def _stream_steps(encoder, x, lengths):
    """Features (B, T_in, F) with (B,) lengths -> the engine's steps: [(feature window, (B,) valid
    frames)], one model chunk of encoder frames per step, each window holding its right context."""
    import torch

    cfg, sub = encoder.cfg, encoder.subsampling
    C, R = cfg.chunk_size, cfg.right_context
    n = sub.output_lengths(lengths)  # (B,) encoder frames
    steps = -(-int(n.max()) // C)
    pad = sub.stride * C * steps + cfg.input_frames(R) - x.shape[1]
    x = torch.cat([x, x.new_zeros(x.shape[0], max(pad, 0), x.shape[2])], 1)
    return [(x[:, k * C * sub.stride: k * C * sub.stride + cfg.input_frames(C + R)].contiguous(),
             (n - k * C).clamp(0, C + R)) for k in range(steps)]


def _streamer(encoder, steps, batch: int, dtype, graphs: bool = False):
    """run(skip) feeds every step in turn from a fresh state, reads each step's log-probs to the host
    (as the engine does) -> (frames that ran the top layers, frames output). graphs: through captured
    CUDA graphs (`StepGraphs`; the warm-up call captures them)."""
    from asr_engine.model.graphs import StepGraphs
    from asr_engine.model.streaming import StreamState

    device = steps[0][0].device
    recorded = StepGraphs(encoder) if graphs else None

    def run(skip):
        state = StreamState.zeros(encoder.cfg, batch, device, dtype)
        top = total = 0
        for win, n_valid in steps:
            if recorded is not None:
                (log_probs, mask), state = recorded.step(win, n_valid, state, skip)
                log_probs.cpu()
                top, total = top + mask.sum(), total + n_valid.clamp(max=encoder.cfg.chunk_size).sum()
                continue
            out, state = encoder.forward_chunk(win, n_valid, state, skip)
            encoder.ops.log_probs(out.final.raw).float().cpu()
            top, total = top + out.top_mask.sum(), total + out.lengths.sum()
        return top, total

    return run


def _whole(encoder, x, lengths):
    """run(skip): one call on the whole utterances -> (frames that ran the top layers, frames output);
    the lengths are given as the host knows them too, as the engine gives them."""
    host = lengths.tolist()

    def run(skip):
        out = encoder(x, lengths, skip, host_lengths=host)
        return out.top_mask.sum(), out.lengths.sum()

    return run


def main(args) -> None:
    import torch

    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.kernels import select_ops
    from asr_engine.model.encoder import SkipOptions
    from asr_engine.train import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.graphs and args.context != "stream":
        raise SystemExit("encoder: --graphs needs --context stream")
    ckpt = load_checkpoint(args.model)
    encoder = ckpt.model.to(device).eval()
    encoder.ops = select_ops(device)
    dtype = getattr(torch, args.dtype)
    encoder.to(dtype)
    threshold = args.threshold if args.threshold is not None else ckpt.model.cfg.skip_threshold
    modes = {"off": None, "on": SkipOptions(threshold, ckpt.model.cfg.skip_dilation)}
    one, per_s = _utterance(ckpt, device, args.seconds)
    rows = []
    for batch in args.batch:
        x, lengths = _batch(one.to(dtype), batch)
        audio_s = float(lengths.sum()) / per_s
        steps = _stream_steps(encoder, x, lengths) if args.context == "stream" else None
        run = _whole(encoder, x, lengths) if steps is None else _streamer(encoder, steps, batch, dtype, args.graphs)
        row = {"device": str(device), "dtype": args.dtype, "context": args.context, "batch": batch,
               "seconds": args.seconds, "threshold": threshold, "model_threshold": ckpt.model.cfg.skip_threshold,
               "ops": encoder.ops.name, "graphs": args.graphs}
        if steps is not None:
            row["steps"] = len(steps)
        for name, skip in modes.items():
            with torch.inference_mode():
                t = timed(lambda: run(skip), args.reps, args.calls, lambda: _sync(device))
                top, total = run(skip)
            row[f"ms_{name}"] = t * 1e3
            row[f"x_{name}"] = audio_s / t
            row[f"top_{name}"] = float(top) / float(total)
            if steps is not None:
                row[f"step_ms_{name}"] = t * 1e3 / len(steps)
            if args.profile:
                p = _profile(run, skip, device)
                p["host_ms"] = _host_ms(run, skip, device)
                row[f"profile_{name}"] = p
                print(f"batch {batch}, skipping {name}: {row[f'ms_{name}']:.2f} ms a call, returns to the host after "
                      f"{p['host_ms']:.2f} ms, device busy {p['device_busy_ms']:.2f} ms (profiled); "
                      f"{p['host_reads']} host reads, {p['syncs']} syncs, "
                      f"{p['memcpy']} memcpy, {p['launches']} launches; top ops:\n    " + "\n    ".join(p["top_ops"]),
                      flush=True)
        row["speedup"] = row["ms_off"] / row["ms_on"]
        rows.append(row)
    cols = [("device", "device", "s"), ("dtype", "dtype", "s"), ("context", "context", "s"), ("batch", "batch", "d"),
            ("ms off", "ms_off", ".2f"), ("ms on", "ms_on", ".2f"), ("speed-up", "speedup", ".2f"),
            ("x real time off", "x_off", ".0f"), ("top frames on", "top_on", ".1%")]
    if args.context == "stream":
        cols[3:3] = [("graphs", "graphs", "")]
        cols[7:7] = [("steps", "steps", "d"), ("ms a step off", "step_ms_off", ".3f"),
                     ("ms a step on", "step_ms_on", ".3f")]
    print(table(rows, cols))
    append_results(args.results, "encoder", rows, {"model": args.model or "default"})


def add_parser(sub) -> None:
    p = sub.add_parser("encoder", help="the encoder alone, skipping off/on, per batch size (with --profile: where "
                                       "the time goes)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: the GPU when there is one)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="float32, float16 or bfloat16 weights and inputs")
    p.add_argument("--batch", type=listed(at_least(1)), default=[1, 16, 64], help="batch sizes (default 1,16,64)")
    p.add_argument("--context", default="full", choices=["full", "stream"],
                   help="full: whole utterances in one call; stream: the engine's streaming steps, one model "
                        "chunk each, their log-probs read back every step (default full)")
    p.add_argument("--graphs", action="store_true",
                   help="with --context stream: each step through captured CUDA graphs (StepGraphs; on a CPU the "
                        "same parts run eagerly: a check of the plumbing, not a speed-up)")
    p.add_argument("--seconds", type=within(0.1, 3600), default=15.0,
                   help="seconds per utterance, the longest (default 15)")
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="skip threshold (default: the model's)")
    p.add_argument("--calls", type=at_least(1), default=5, help="calls per timed repetition (default 5)")
    p.add_argument("--reps", type=at_least(1), default=3, help="timed repetitions, the median is kept (default 3)")
    p.add_argument("--profile", action="store_true", help="print each mode's top operators and host reads")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads on the CPU (default: torch's choice)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
