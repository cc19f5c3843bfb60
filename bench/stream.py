"""stream: per-chunk compute latency, time to first partial and final latency of the streaming
engine, for one session and for batches of sessions, with and without layer skipping.

Each of B slots replays utterances one after another as a live source would: every step, each
slot's session gets one chunk of audio, then `engine.step` runs all of them as one batch. The
step's wall time is the chunk latency every session in it sees; the RTF also counts the
time the sessions spend turning audio into features.
"""

from __future__ import annotations

import tempfile
import time

from asr_engine.argtypes import at_least, listed, one_of
from bench.common import append_results, load_manifest, percentiles, table


def run_setting(engine, audios: list, batch: int, rounds: int) -> dict:
    """Replay `rounds` utterances per slot through `batch` concurrent sessions."""
    from asr_engine.audio import SAMPLE_RATE

    piece = engine.hop_samples  # audio samples per step
    chunk_s = piece / SAMPLE_RATE
    queue = [audios[i % len(audios)] for i in range(batch * rounds)]
    slots: list[dict | None] = [None] * batch
    steps, first, final, audio_s, compute = [], [], [], 0.0, 0.0
    while queue or any(slots):
        for k in range(batch):
            if slots[k] is None and queue:
                slots[k] = {"s": engine.session(), "x": queue.pop(), "pos": 0, "first": None, "final": 0.0}
        live = [sl for sl in slots if sl]
        t_feed = time.perf_counter()
        feeds = []  # every session's piece through one front-end call, as the server feeds them
        for sl in live:
            if sl["pos"] < len(sl["x"]):
                feeds.append((sl["s"], sl["x"][sl["pos"]: sl["pos"] + piece]))
                sl["pos"] += piece
            else:
                sl["s"].input_done()
        engine.accept_audio(feeds)
        t0 = time.perf_counter()
        stepped = engine.step([sl["s"] for sl in live])
        dt = time.perf_counter() - t0
        compute += time.perf_counter() - t_feed  # RTF counts the front end (fbank, resampling) too
        if stepped:
            steps.append(dt)
        for k, sl in enumerate(slots):
            if not sl:
                continue
            s = sl["s"]
            if sl["first"] is None and s.result().text:  # audio fed so far plus this step's compute
                sl["first"] = min(sl["pos"], len(sl["x"])) / SAMPLE_RATE + dt
            if s.input_finished:
                sl["final"] += dt
                if not s.ready:
                    s.final()
                    final.append(sl["final"])
                    if sl["first"] is not None:
                        first.append(sl["first"])
                    audio_s += len(sl["x"]) / SAMPLE_RATE
                    engine.close(s)
                    slots[k] = None
    return {"chunk_ms": round(chunk_s * 1000), "batch": batch, "steps": len(steps),
            **{f"chunk_{k}_ms": v * 1000 for k, v in percentiles(steps).items()},
            **{f"first_partial_{k}_ms": v * 1000 for k, v in percentiles(first, (50,)).items()},
            **{f"final_{k}_ms": v * 1000 for k, v in percentiles(final, (50, 95)).items()},
            "rtf": compute / audio_s, "streams_realtime": audio_s / compute}


def main(args) -> None:
    import torch

    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.engine import DecodeOptions, Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    audios, _ = load_manifest(args.manifest, args.limit)
    torch_ckpt = load_checkpoint(args.model)
    cfg = torch_ckpt.model.cfg
    rows = []
    settings = [(b, c, p) for b in args.backend for c in args.chunk_ms
                for p in (args.precision if b == "onnx" else ["fp32"])]  # torch computes in fp32
    for backend, chunk_ms, precision in settings:
        frames = round(chunk_ms / 1000 / cfg.frame_shift_s)
        if frames % cfg.chunk_size:
            print(f"chunk {chunk_ms} ms: not a multiple of this model's {cfg.chunk_size * cfg.frame_shift_s * 1000:.0f}"
                  " ms training chunk; skipped")
            continue
        if backend == "onnx":
            from asr_engine.export.onnx import export_onnx
            from asr_engine.export.runtime import OnnxModel

            with tempfile.TemporaryDirectory() as tmp:
                model = OnnxModel(export_onnx(torch_ckpt, tmp, frames, quantize="int8-rows" if precision == "int8"
                                              else None), torch.get_num_threads())
        else:
            from asr_engine.model.runtime import TorchModel

            model = TorchModel(torch_ckpt)
        for batch in args.batch:
            for threshold in (1.0, None):  # no skipping, then the model's default threshold
                engine = Engine(model, DecodeOptions(chunk_frames=frames, skip_threshold=threshold, max_batch=batch))
                run_setting(engine, audios[:2], batch, 1)  # warm-up
                row = run_setting(engine, audios, batch, args.rounds)
                row["skip_threshold"] = engine.skip.threshold if engine.skip else 1.0
                row["backend"], row["precision"] = backend, precision
                rows.append(row)
                print(f"{backend} {precision}: chunk {row['chunk_ms']} ms, batch {batch}, "
                      f"skip {row['skip_threshold']}: p50 {row['chunk_p50_ms']:.1f} ms, RTF {row['rtf']:.4f}",
                      flush=True)
    print(table(rows, [("backend", "backend", "s"), ("precision", "precision", "s"), ("chunk ms", "chunk_ms", "d"),
                       ("sessions", "batch", "d"),
                       ("skip thr", "skip_threshold", "g"),
                       ("chunk p50 ms", "chunk_p50_ms", ".1f"), ("p95", "chunk_p95_ms", ".1f"),
                       ("p99", "chunk_p99_ms", ".1f"), ("first partial p50 ms", "first_partial_p50_ms", ".0f"),
                       ("final p50 ms", "final_p50_ms", ".1f"), ("RTF", "rtf", ".4f"),
                       ("x real time", "streams_realtime", ".1f")]))
    append_results(args.results, "stream", rows, {"model": args.model or "default", "manifest": args.manifest,
                                                  "utterances": len(audios), "device": "cpu"})


def add_parser(sub) -> None:
    p = sub.add_parser("stream", help="streaming chunk latency and RTF, one session and batches")
    p.add_argument("--manifest", required=True, help="JSONL manifest (or LibriSpeech-layout folder)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--limit", type=at_least(1), default=40, help="utterances from the manifest (default 40)")
    p.add_argument("--rounds", type=at_least(1), default=2, help="utterances replayed per session slot (default 2)")
    p.add_argument("--chunk-ms", type=listed(at_least(1)), default=[160, 320, 640, 1280],
                   help="chunk sizes to try (default 160,320,640,1280)")
    p.add_argument("--batch", type=listed(at_least(1)), default=[1, 16], help="concurrent sessions (default 1,16)")
    p.add_argument("--backend", type=listed(one_of("torch", "onnx")), default=["torch", "onnx"],
                   help="backends to measure (default torch,onnx)")
    p.add_argument("--precision", type=listed(one_of("fp32", "int8")), default=["fp32", "int8"],
                   help="the onnx backend's precisions (default fp32,int8; torch runs fp32)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
