"""rtf: offline real-time factor of whole files for each backend, with and without layer
skipping in the same run.

Per backend, the skipping-off and skipping-on decoders take turns (off, on, off, on, ...)
over the same audio, so drifts of the machine hit both alike; the table gives each one's
median RTF, their ratio (the speed-up skipping buys), the fraction of encoder frames that
ran the top layers, and the WER. The torch backend decodes whole utterances in batches;
the ONNX backend streams the files through its export in large steps (the CLI's default).
Files are sorted by length first, so a batch pads little. With --context streaming,full both
layouts of the same weights take turns too (full: whole-file attention; see docs/whisper-import.md).
"""

from __future__ import annotations

import statistics
import time

from asr_engine.argtypes import PROBABILITY, at_least
from bench.common import add_offline_arguments, append_results, decoder, load_sorted, table


def _wer(refs: list[str], hyps: list[str]) -> float:
    from asr_engine.text import word_error_counts

    errors = words = 0
    for r, h in zip(refs, hyps):
        e, n = word_error_counts(r, h)
        errors, words = errors + e, words + n
    return errors / max(1, words)


def _run(decode, audios: list, batch: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(audios), batch):
        results += decode(audios[i: i + batch], [str(j) for j in range(i, min(i + batch, len(audios)))])
    return time.perf_counter() - t0, results


def measure(models: dict, audios: list, refs: list[str], thresholds: dict, reps: int, batch: int) -> list[dict]:
    """models {key: engine model}, thresholds {key: skip threshold}: each model with skipping off and on,
    all of them taking turns over the same audio -> a row per key."""
    from asr_engine.audio import SAMPLE_RATE

    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    decoders = {(key, name): decoder(m, 1.0 if name == "off" else thresholds[key], batch)
                for key, m in models.items() for name in ("off", "on")}
    for d in decoders.values():  # warm-up
        _run(d, audios[:batch], batch)
    walls: dict[tuple, list[float]] = {k: [] for k in decoders}
    results = {}
    for _ in range(reps):
        for k, d in decoders.items():
            wall, results[k] = _run(d, audios, batch)
            walls[k].append(wall)
    rows = []
    for key in models:
        row = {"threshold": thresholds[key], "audio_s": audio_s, "reps": reps}
        for name in ("off", "on"):
            res = results[key, name]
            row[f"rtf_{name}"] = statistics.median(walls[key, name]) / audio_s
            row[f"top_{name}"] = sum(r.top_frames for r in res) / max(1, sum(r.frames for r in res))
            row[f"wer_{name}"] = _wer(refs, [r.text for r in res])
        row["speedup"] = row["rtf_off"] / row["rtf_on"]
        rows.append(row)
    return rows


def main(args) -> None:
    import torch

    from asr_engine.backend import load_model, resolve_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    audios, refs = load_sorted(args.manifest, args.limit)
    models, thresholds = {}, {}
    for backend in args.backend.split(","):
        for context in args.context.split(","):
            for precision in args.precision.split(",") if args.precision else [None]:
                if precision == "int8" and resolve_backend(backend, args.device) != "onnx":
                    continue  # int8 is ONNX Runtime's on the CPU
                m = load_model(args.model, backend, args.device, torch.get_num_threads(), for_files=True,
                               context=context, precision=precision)
                key = backend, context, m.precision
                models[key] = m
                thresholds[key] = args.threshold if args.threshold is not None else m.cfg.skip_threshold
    rows = [{"backend": backend, "context": context, "precision": precision, "device": args.device, **row}
            for (backend, context, precision), row in zip(models, measure(models, audios, refs, thresholds, args.reps,
                                                                          args.batch))]
    for row in rows:
        print(f"{row['backend']}, {row['context']} context, {row['precision']}: RTF {row['rtf_off']:.4f} without "
              f"skipping, {row['rtf_on']:.4f} with (x{row['speedup']:.2f})", flush=True)
    print(table(rows, [("backend", "backend", "s"), ("context", "context", "s"), ("precision", "precision", "s"),
                       ("device", "device", "s"),
                       ("threshold", "threshold", "g"), ("RTF off", "rtf_off", ".4f"), ("RTF on", "rtf_on", ".4f"),
                       ("speed-up", "speedup", ".2f"), ("top frames on", "top_on", ".1%"),
                       ("WER off", "wer_off", ".2%"), ("WER on", "wer_on", ".2%")]))
    append_results(args.results, "rtf", rows, {"model": args.model or "default", "manifest": args.manifest,
                                               "utterances": len(audios), "batch": args.batch})


def add_parser(sub) -> None:
    p = sub.add_parser("rtf", help="offline RTF per backend, with and without skipping, in one run")
    add_offline_arguments(p, "torch,onnx", "backends to measure")
    p.add_argument("--context", default="streaming",
                   help="layouts to measure, comma-separated: streaming (the model's chunks), full (whole-file "
                        "attention, as transcribe decodes files for models that recommend it); default streaming")
    p.add_argument("--precision", default="",
                   help="precisions to measure, comma-separated: fp32, int8 (ONNX Runtime on the CPU only); "
                        "default: the model's")
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="skip threshold (default: the model's)")
    p.add_argument("--reps", type=at_least(1), default=3, help="alternating repetitions per setting (default 3)")
    p.add_argument("--batch", type=at_least(1), default=16, help="files per batch (default 16)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch/ORT threads (default: torch's choice)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
