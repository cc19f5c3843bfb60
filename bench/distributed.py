"""distributed: batch transcription on Ray (local mode) with 1..N workers against the single-process
engine, on the same files: wall time, hours of audio per hour, and the fixed costs (Ray's start, an
actor's start with its model load, measured on one file) apart from the per-file cost."""

from __future__ import annotations

import time

from asr_engine.argtypes import at_least, listed
from bench.common import append_results, table


def main(args) -> None:
    import ray

    import asr_engine
    from asr_engine.audio import load_audio
    from asr_engine.distributed import transcribe_ray
    from asr_engine.manifest import read_corpus

    paths = [u.audio for m in args.manifest for u in read_corpus(m)[: args.limit]]
    audio_s = sum(len(load_audio(p)) for p in paths) / 16000
    rows = []
    t0 = time.perf_counter()
    engine = asr_engine.load(args.model, threads=args.threads, for_files=True)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(paths), args.batch_size):
        engine.transcribe_files(paths[i: i + args.batch_size])
    wall = time.perf_counter() - t0
    rows.append({"mode": "one process", "workers": 1, "wall_s": wall, "fixed_s": load_s})
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    try:
        for w in args.workers:
            t0 = time.perf_counter()
            transcribe_ray(paths[:1], workers=w, model=args.model, threads=args.threads, batch_size=args.batch_size)
            fixed = time.perf_counter() - t0  # actors' start and model load, one file
            t0 = time.perf_counter()
            transcribe_ray(paths, workers=w, model=args.model, threads=args.threads, batch_size=args.batch_size)
            rows.append({"mode": "ray (local)", "workers": w, "wall_s": time.perf_counter() - t0, "fixed_s": fixed})
    finally:
        ray.shutdown()
    for r in rows:
        r["x_real_time"] = audio_s / r["wall_s"]
        r["audio_hours_per_hour"] = r["x_real_time"]
        r["per_file_ms"] = 1000 * max(0.0, r["wall_s"] - (r["fixed_s"] if r["mode"] != "one process" else 0)) / len(
            paths)
    print(f"{len(paths)} files, {audio_s / 60:.1f} min of audio; ray.init {init_s:.1f} s; "
          f"{args.threads} thread(s) per worker")
    print(table(rows, [("mode", "mode", ""), ("workers", "workers", "d"), ("wall s", "wall_s", ".1f"),
                       ("fixed s", "fixed_s", ".1f"), ("ms per file", "per_file_ms", ".0f"),
                       ("hours of audio per hour", "audio_hours_per_hour", ".0f")]))
    append_results(args.results, "distributed", rows, {"model": args.model or "default", "manifest": args.manifest,
                                                       "files": len(paths), "audio_s": audio_s, "ray_init_s": init_s,
                                                       "threads": args.threads})


def add_parser(sub) -> None:
    p = sub.add_parser("distributed", help="batch transcription on Ray (local) with 1..N workers vs one process")
    p.add_argument("--manifest", required=True, action="append", help="JSONL manifest (repeat for several)")
    p.add_argument("--model", default=None, help="checkpoint or ONNX folder (default: the bundled model)")
    p.add_argument("--limit", type=at_least(1), default=None, help="files per manifest (default: all)")
    p.add_argument("--workers", type=listed(at_least(1)), default=[1, 2],
                   help="Ray actor counts to measure (default 1,2)")
    p.add_argument("--threads", type=at_least(0), default=1, help="ONNX Runtime threads per worker (default 1)")
    p.add_argument("--batch-size", type=at_least(1), default=8, help="files per call (default 8)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
