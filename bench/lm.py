"""lm: the recurrent LM's kernels and the cost and gain of fusing it into beam search.

`--part scan`: the linear recurrence h_t = a_t h_{t-1} + b_t over (B, T, D): the sequential torch
reference (a Python loop over T, autograd through it), the blocked reference, the loop with its own backward
(the CPU training path) and, on CUDA, the Triton scan;
forward, and forward + backward. Tokens/s counts B*T positions; GB/s counts the bytes the scan must
move (a and b read, h written). Then the decoding step of one GILR layer for N hypotheses (gather the
parents' states, gates, update): the torch reference and, on CUDA, the fused Triton kernel. Every
kernel is checked against the sequential reference before it is timed.

`--part decode`: the acoustic model's log-probs for the manifests are computed once; then they are
decoded greedy, by beam search without an LM, and with the LM (torch and ONNX Runtime steps) at every
(--lm-weights x --length-bonuses x --lexicon-penalties) point, `--sessions` streams at a time in `--chunk`-frame pieces
(as the engine does: one batched LM step per frame for all of them). It reports WER per manifest and
the decoder's time per second of audio (its real-time factor, the encoder excluded).

`--interpret`: the scan part through Triton's interpreter at tiny shapes (a check, not a timing).
"""

from __future__ import annotations

import os
import statistics
import time

from asr_engine.argtypes import FINITE, at_least, dims, listed, one_of
from bench.common import append_results, load_manifest, table


def _timed(fn, reps: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scan_rows(B: int, T: int, D: int, N: int, device: str, reps: int, sequential: bool = True) -> list[dict]:
    import torch

    from asr_engine.lm.scan import gilr_step_reference, scan_blocked, scan_loop, scan_sequential

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(B, T, D, generator=g).clamp(0.05, 1.0).to(device).requires_grad_()
    b = torch.randn(B, T, D, generator=g).to(device).requires_grad_()
    w = torch.randn(B, T, D, generator=g).to(device)
    impls = [("blocked reference", scan_blocked), ("loop, own backward", scan_loop)]
    if sequential:
        impls.insert(0, ("sequential reference", scan_sequential))
    if device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from asr_engine.lm.triton_scan import triton_gilr_step, triton_linear_scan

        impls.append(("triton", triton_linear_scan))
    with torch.no_grad():
        ref = scan_sequential(a, b)
    rows = []
    nbytes = 3 * B * T * D * 4
    for name, fn in impls:
        with torch.no_grad():
            diff = (fn(a, b) - ref).abs().max().item()
        if diff > 1e-3:
            raise SystemExit(f"{name} differs from the sequential scan by {diff:.2e}")

        def fwd(fn=fn):
            with torch.no_grad():
                fn(a, b)

        def fwd_bwd(fn=fn):
            torch.autograd.grad((fn(a, b) * w).sum(), (a, b))

        t_f, t_fb = _timed(fwd, reps, sync), _timed(fwd_bwd, reps, sync)
        rows.append({"op": "scan", "impl": name, "shape": f"{B}x{T}x{D}", "forward_ms": t_f * 1e3,
                     "fwd_bwd_ms": t_fb * 1e3, "tokens_per_s": B * T / t_f, "gbps": nbytes / t_f / 1e9,
                     "max_abs_diff": diff})
    # the decoding step: N hypotheses from M = N parents, shuffled (a beam's reorder)
    uv = torch.randn(N, 2 * D, generator=g).to(device)
    h_src = torch.randn(N, D, generator=g).to(device)
    idx = torch.randperm(N, generator=g).to(device)
    step_ref = gilr_step_reference(uv, h_src, idx)
    steps = [("reference", gilr_step_reference)]
    if any(n == "triton" for n, _ in impls):
        steps.append(("triton (fused)", triton_gilr_step))
    for name, fn in steps:
        diff = (fn(uv, h_src, idx) - step_ref).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"{name} GILR step differs from the reference by {diff:.2e}")
        t = _timed(lambda fn=fn: fn(uv, h_src, idx), reps, sync)
        rows.append({"op": "gilr_step", "impl": name, "shape": f"{N}x{D}", "forward_ms": t * 1e3,
                     "fwd_bwd_ms": float("nan"), "tokens_per_s": N / t, "gbps": (3 * N * D * 4 + N * 8) / t / 1e9,
                     "max_abs_diff": diff})
    return rows


def _log_probs(ckpt, audios, batch: int = 16):
    """The acoustic model's log-probs (T, V) per utterance, whole utterances, default skipping (no
    frames for audio too short for one encoder frame)."""
    import numpy as np

    from asr_engine.model.config import SkipOptions
    from asr_engine.model.runtime import TorchModel

    model = TorchModel(ckpt)
    skip, empty = SkipOptions.resolve(model.cfg), np.zeros((0, model.cfg.vocab_size), np.float32)
    return [empty if e is None else e[0] for i in range(0, len(audios), batch)
            for e in model.encode(audios[i: i + batch], skip)]


def _decode(log_probs, beam: int, lm, sessions: int, chunk: int) -> tuple[list[tuple[int, ...]], float]:
    """Decode `sessions` streams at a time, `chunk` frames per step; (best token sequences, seconds)."""
    from asr_engine.decoding import GreedySearch, PrefixBeamSearch, advance_searches

    best = []
    t0 = time.perf_counter()
    for a in range(0, len(log_probs), sessions):
        group = log_probs[a: a + sessions]
        searches = [GreedySearch() if beam == 1 else PrefixBeamSearch(beam, lm=lm) for _ in group]
        for f in range(0, max(lp.shape[0] for lp in group), chunk):
            live = [(s, lp[f: f + chunk]) for s, lp in zip(searches, group) if f < lp.shape[0]]
            advance_searches([s for s, _ in live], [c for _, c in live])
        best += [s.hypotheses(1)[0].tokens for s in searches]
    return best, time.perf_counter() - t0


def decode_rows(args) -> list[dict]:
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.lm.fusion import load_fusion
    from asr_engine.text import word_error_counts

    ckpt = load_checkpoint(args.model, context=args.context)  # full: whole-utterance attention, as files are
    tok = ckpt.tokenizer
    sets = []
    for m in args.manifest:
        audios, refs = load_manifest(m, args.limit)
        sets.append((m, _log_probs(ckpt, audios), refs, sum(len(x) for x in audios) / 16000))
    configs = [("greedy", 1, None, None), (f"beam {args.beam}", args.beam, None, None)]
    if args.lm:
        for backend in args.lm_backend:
            fusion = load_fusion(args.lm, tok, 0.0, 0.0, backend)  # with the LM's lexicon, if it has one
            lexicon = fusion.lexicon
            penalties = (args.lexicon_penalties if args.lexicon_penalties
                         else [lexicon.penalty if lexicon else 0.0])
            if lexicon is None and any(penalties):
                raise SystemExit(f"--lexicon-penalties: {args.lm} has no lexicon.txt")
            for w in args.lm_weights:
                for bonus in args.length_bonuses:
                    for pen in penalties:  # each backend's fusion keeps its own lexicon, set per point
                        configs.append((f"beam {args.beam} + LM ({backend})", args.beam, fusion,
                                        (w, bonus, pen, lexicon)))
    rows = []
    for name, beam, fusion, wb in configs:
        if fusion is not None:
            fusion.weight, fusion.length_bonus, pen, lexicon = wb
            fusion.lexicon = lexicon if pen else None
            if pen:
                lexicon.penalty = pen
            fusion.calls = fusion.rows = 0
        for m, lps, refs, seconds in sets:
            hyps, wall = _decode(lps, beam, fusion, args.sessions, args.chunk)
            errors = words = 0
            for ref, h in zip(refs, hyps):
                e, n = word_error_counts(ref, tok.decode(list(h)))
                errors, words = errors + e, words + n
            rows.append({"decoder": name, "manifest": m, "lm_weight": wb[0] if wb else float("nan"),
                         "length_bonus": wb[1] if wb else float("nan"),
                         "lexicon_penalty": wb[2] if wb else float("nan"), "wer": errors / max(1, words),
                         "decode_rtf": wall / seconds, "lm_rows_per_step": fusion.rows / max(1, fusion.calls)
                         if fusion else float("nan"), "utterances": len(refs)})
    return rows


def main(args) -> None:
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton's modules load
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if args.part in ("scan", "all"):
        if args.interpret:
            print("Triton interpreter on the CPU, tiny shapes: a check of the bench and the kernels, not a speed")
            shape, N, device = (2, 40, 8), 6, "cpu"
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            shape, N = args.shape, args.hypotheses
        scan = scan_rows(*shape, N, device, 1 if args.interpret else args.reps)
        print(table(scan, [("op", "op", "s"), ("implementation", "impl", "s"), ("shape", "shape", "s"),
                           ("forward ms", "forward_ms", ".3f"), ("fwd+bwd ms", "fwd_bwd_ms", ".3f"),
                           ("tokens/s", "tokens_per_s", ".3g"), ("GB/s", "gbps", ".2f"),
                           ("max abs diff", "max_abs_diff", ".1e")]))
        append_results(args.results, "lm-scan", scan, {"device": device, "interpreted": args.interpret})
        rows += scan
    if args.part in ("decode", "all"):
        if not args.manifest:
            raise SystemExit("--part decode needs --manifest")
        dec = decode_rows(args)
        print(table(dec, [("decoder", "decoder", "s"), ("manifest", "manifest", "s"),
                          ("LM weight", "lm_weight", ".2f"),
                          ("length bonus", "length_bonus", ".2f"), ("lexicon", "lexicon_penalty", ".1f"),
                          ("WER", "wer", ".2%"),
                          ("decode RTF", "decode_rtf", ".4f"), ("LM rows/step", "lm_rows_per_step", ".1f")]))
        append_results(args.results, "lm-decode", dec, {"model": args.model or "bundled", "lm": args.lm,
                                                        "sessions": args.sessions, "chunk": args.chunk,
                                                        "context": args.context})


def add_parser(sub) -> None:
    p = sub.add_parser("lm", help="recurrent LM: scan kernels vs the sequential reference; WER and speed of "
                                  "LM fusion in beam search")
    p.add_argument("--part", choices=("scan", "decode", "all"), default="all", help="what to measure (default all)")
    p.add_argument("--shape", type=dims(3), default=[8, 512, 256], help="scan BxTxD (default 8x512x256)")
    p.add_argument("--hypotheses", type=at_least(1), default=256, help="hypotheses per GILR step (default 256)")
    p.add_argument("--reps", type=at_least(1), default=5, help="timed repetitions (default 5)")
    p.add_argument("--interpret", action="store_true",
                   help="scan part through Triton's interpreter on the CPU at tiny shapes (a check, not a timing)")
    p.add_argument("--manifest", action="append", default=[], help="JSONL manifest for --part decode (repeatable)")
    p.add_argument("--limit", type=at_least(1), default=None, help="utterances per manifest (default: all)")
    p.add_argument("--model", default=None, help="acoustic checkpoint folder (default: the bundled model)")
    p.add_argument("--lm", default=None, help="LM folder (without it: greedy and beam only)")
    p.add_argument("--lm-backend", type=listed(one_of("torch", "onnx")), default=["torch", "onnx"],
                   help="LM step backends (default torch,onnx)")
    p.add_argument("--lm-weights", type=listed(FINITE), default=[0.5], help="comma-separated LM weights (default 0.5)")
    p.add_argument("--length-bonuses", type=listed(FINITE), default=[1.0],
                   help="comma-separated length bonuses (default 1.0)")
    p.add_argument("--lexicon-penalties", type=listed(FINITE), default=None,
                   help="comma-separated penalties for words outside the LM's lexicon.txt, 0 for none "
                        "(default: the LM's own setting)")
    p.add_argument("--beam", type=at_least(1), default=8, help="beam width (default 8)")
    p.add_argument("--context", choices=("streaming", "full"), default="streaming",
                   help="the acoustic model's layout: streaming chunks (default) or full context, as files are decoded")
    p.add_argument("--sessions", type=at_least(1), default=8, help="streams decoded together (default 8)")
    p.add_argument("--chunk", type=at_least(1), default=16, help="frames per streaming step (default 16)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
