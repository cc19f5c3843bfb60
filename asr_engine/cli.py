"""`asr-engine` command line: parses arguments into the library's option dataclasses."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from asr_engine.audio import AUDIO_EXTENSIONS
from asr_engine.formats import FORMATS, SUBTITLE_FORMATS, render
from asr_engine.manifest import read_manifest
from asr_engine.text import word_error_counts


class InputError(ValueError):
    pass


def expand_inputs(items: list[str]) -> list[tuple[str, str | None]]:
    """FILES, DIRS (recursive), @list.txt and MANIFEST.jsonl -> [(path, reference text or None)].

    Paths inside a list or manifest are relative to that file's folder.
    """
    out: list[tuple[str, str | None]] = []
    for item in items:
        if item.startswith("@"):
            lst = Path(item[1:])
            if not lst.is_file():
                raise InputError(f"{lst}: list file not found")
            for line in lst.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    out.append((str(lst.parent / line.strip()), None))
        elif item.endswith(".jsonl"):
            if not Path(item).is_file():
                raise InputError(f"{item}: manifest not found")
            out += [(str(u.audio), u.text) for u in read_manifest(item)]
        elif Path(item).is_dir():
            found = sorted(p for p in Path(item).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise InputError(f"{item}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            out += [(str(p), None) for p in found]
        else:
            out.append((item, None))  # a missing file is reported per file, like a corrupt one
    return out


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def cmd_transcribe(args: argparse.Namespace) -> int:
    import torch

    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.transcribe import DecodeOptions, Transcriber

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here (use --device cpu)")
    inputs = expand_inputs(args.inputs)
    if args.format in SUBTITLE_FORMATS and len(inputs) > 1 and not (args.output and Path(args.output).is_dir()):
        raise InputError(f"--format {args.format} with several inputs needs --output DIR (an existing folder)")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = DecodeOptions(beam=args.beam, skip_threshold=args.skip_threshold, nbest=args.nbest)
    transcriber = Transcriber(load_checkpoint(args.model, args.device), options, args.device)
    t0 = time.perf_counter()
    results = []
    bar = None
    if len(inputs) > 1 and not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(inputs), unit="file", desc="transcribing", file=sys.stderr)
    for rng in _batches(len(inputs), args.batch_size):
        batch = transcriber.transcribe_files([inputs[i][0] for i in rng])
        for r in batch:
            if r.error:
                print(f"error: {r.error}", file=sys.stderr)
        results += batch
        if bar is not None:
            bar.update(len(rng))
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    _write_outputs(results, args)
    if not args.quiet:
        print(_summary(results, [ref for _, ref in inputs], wall), file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def _write_outputs(results, args: argparse.Namespace) -> None:
    if args.format in SUBTITLE_FORMATS and args.output and Path(args.output).is_dir():
        for r in results:
            if r.error is None:
                (Path(args.output) / f"{Path(r.path).stem}.{args.format}").write_text(render([r], args.format))
        return
    ok = [r for r in results if r.error is None] if args.format in SUBTITLE_FORMATS else results
    if not ok:
        return
    text = render(ok, args.format)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


def _summary(results, refs: list[str | None], wall: float) -> str:
    ok = [r for r in results if r.error is None]
    audio = sum(r.duration for r in ok)
    frames = sum(r.frames for r in ok)
    top = sum(r.top_frames for r in ok)
    parts = [f"files: {len(ok)} ok, {len(results) - len(ok)} failed",
             f"audio: {audio / 3600:.4f} h ({audio:.1f} s)", f"wall: {wall:.2f} s",
             f"RTF: {wall / audio:.4f}" if audio else "RTF: n/a",
             f"frames skipped: {1 - top / frames:.1%}" if frames else "frames skipped: n/a"]
    scored = [(r, ref) for r, ref in zip(results, refs) if ref is not None and r.error is None]
    if scored:
        errs = [word_error_counts(ref, r.text) for r, ref in scored]
        parts.append(f"WER: {sum(e for e, _ in errs) / max(1, sum(n for _, n in errs)):.2%}")
    return "summary: " + " | ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-engine", description="Streaming Conformer/CTC speech recognition.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files (offline, whole files)",
                       description="Transcribe audio files with a Conformer/CTC checkpoint.")
    t.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files, folders (searched recursively), @list.txt (one path per line) "
                        "or MANIFEST.jsonl (with references, the summary reports WER)")
    t.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    t.add_argument("--format", choices=FORMATS, default="txt",
                   help="txt: text (path<TAB>text for several files); json: one array; jsonl: one object "
                        "per input with path, text, words; srt/vtt: subtitles (one file, or --output DIR)")
    t.add_argument("--output", "-o", default=None, help="output file (default: stdout), or a folder for srt/vtt")
    t.add_argument("--beam", type=int, default=1, help="CTC prefix beam width (1: greedy; default 1)")
    t.add_argument("--nbest", type=int, default=1, help="alternatives kept in json/jsonl output (<= beam)")
    t.add_argument("--skip-threshold", type=float, default=None,
                   help="skip the top layers for frames whose intermediate P(blank) is above this "
                        "(default: the model's; 1.0 turns skipping off)")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    t.add_argument("--batch-size", type=int, default=8, help="files per forward pass (default 8)")
    t.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary on stderr")
    t.set_defaults(func=cmd_transcribe)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError, FileNotFoundError) as e:
        print(f"asr-engine: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
