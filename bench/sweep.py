"""sweep: the skipping trade-off. For each skip threshold and dilation, the WER, the fraction of
encoder frames that ran the top layers, and the offline RTF, as a table and a plot.

Threshold 1.0 is the no-skip point (dilation does not apply to it); it is measured in the same
run and marked on the plot. Every setting decodes the same audio; the repetitions go round the
settings (one pass of each, then the next), so a drift of the machine hits all of them alike, and
the RTF is the median. The plot has two panels against the top-layer fraction: WER, and RTF.
"""

from __future__ import annotations

import statistics

from asr_engine.argtypes import PROBABILITY, at_least, listed
from bench.common import add_offline_arguments, append_results, decoder, load_sorted, table
from bench.rtf import _run, _wer


def sweep(ckpt, audios: list, refs: list[str], settings: list[tuple[float, int]], reps: int, batch: int,
          device: str) -> list[dict]:
    from asr_engine.audio import SAMPLE_RATE

    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    decoders = [decoder(ckpt, t, batch, d) for t, d in settings]
    _run(decoders[0], audios[:batch], batch)  # warm-up
    walls: list[list[float]] = [[] for _ in settings]
    results: list[list] = [[] for _ in settings]
    for _ in range(reps):
        for k, dec in enumerate(decoders):
            wall, results[k] = _run(dec, audios, batch)
            walls[k].append(wall)
    rows = []
    for (t, d), w, res in zip(settings, walls, results):
        rows.append({"threshold": t, "dilation": d if t < 1.0 else None, "no_skip": t >= 1.0,
                     "rtf": statistics.median(w) / audio_s,
                     "top": sum(r.top_frames for r in res) / max(1, sum(r.frames for r in res)),
                     "wer": _wer(refs, [r.text for r in res])})
    base = next(r for r in rows if r["no_skip"])
    for r in rows:
        r["wer_change"] = r["wer"] - base["wer"]
        r["speedup"] = base["rtf"] / r["rtf"]
    return rows


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_wer, ax_rtf) = plt.subplots(1, 2, figsize=(11, 4.2))
    base = next(r for r in rows if r["no_skip"])
    for d in sorted({r["dilation"] for r in rows if not r["no_skip"]}):
        line = sorted((r for r in rows if r["dilation"] == d), key=lambda r: r["top"])
        for ax, key in ((ax_wer, "wer"), (ax_rtf, "rtf")):
            ax.plot([r["top"] for r in line], [r[key] for r in line], "o-", label=f"dilation {d}")
            if ax is ax_wer:
                for r in line:
                    ax.annotate(f"{r['threshold']:g}", (r["top"], r["wer"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
    for ax, key in ((ax_wer, "wer"), (ax_rtf, "rtf")):
        ax.plot([base["top"]], [base[key]], "k*", markersize=14, label="no skipping")
        ax.set_xlabel("fraction of frames through the top layers")
        ax.grid(alpha=0.3)
    ax_wer.set_ylabel("WER")
    ax_wer.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax_rtf.set_ylabel("real-time factor (offline)")
    ax_wer.legend(fontsize=8)
    ax_wer.set_title("WER (labels: skip threshold)", fontsize=10)
    ax_rtf.set_title("RTF", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args) -> None:
    import torch

    from asr_engine.backend import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    thresholds = args.thresholds
    dilations = args.dilations
    if any(not 0.0 < t <= 1.0 for t in thresholds) or any(d < 0 for d in dilations):
        raise SystemExit("thresholds must be in (0, 1] and dilations >= 0")
    settings = [(1.0, 0)] + [(t, d) for d in dilations for t in thresholds if t < 1.0]
    audios, refs = load_sorted(args.manifest, args.limit)
    ckpt = load_model(args.model, args.backend, args.device, torch.get_num_threads(), for_files=True)
    rows = sweep(ckpt, audios, refs, settings, args.reps, args.batch, args.device)
    for r in rows:
        r["backend"] = args.backend
    print(table([{**r, "dilation": "-" if r["no_skip"] else r["dilation"]} for r in rows],
                [("threshold", "threshold", "g"), ("dilation", "dilation", ""), ("top frames", "top", ".1%"),
                 ("WER", "wer", ".2%"), ("WER change", "wer_change", "+.2%"), ("RTF", "rtf", ".4f"),
                 ("speed-up", "speedup", ".2f")]))
    if args.plot:
        plot(rows, args.plot, f"{args.model or 'default model'}, {args.backend}, {len(audios)} utterances")
        print(f"plot: {args.plot}")
    append_results(args.results, "sweep", rows, {"model": args.model or "default", "manifest": args.manifest,
                                                 "utterances": len(audios), "batch": args.batch,
                                                 "device": args.device, "reps": args.reps})


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="skip threshold x dilation: WER, top-layer frames, RTF; table and plot")
    add_offline_arguments(p, "torch", "torch or onnx")
    p.add_argument("--thresholds", type=listed(PROBABILITY), default=[0.99, 0.98, 0.95, 0.9, 0.8, 0.6],
                   help="skip thresholds (the no-skip point 1.0 is always measured)")
    p.add_argument("--dilations", type=listed(at_least(0)), default=[0, 1, 2], help="skip dilations (default 0,1,2)")
    p.add_argument("--reps", type=at_least(1), default=2, help="repetitions round the settings (default 2)")
    p.add_argument("--batch", type=at_least(1), default=16, help="files per batch (default 16)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch/ORT threads (default: torch's choice)")
    p.add_argument("--plot", default="bench/sweep.png", help="PNG to write ('' for none)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
