"""Whisper-base's reading of every utterance of a corpus: how intelligible is each one? Usage:
  python docs/experiments/intelligibility.py OUT.jsonl MANIFEST [MANIFEST ...] [--workers 2]
Each line of OUT: the manifest, the utterance's audio path as the manifest gives it, whisper-base's greedy
transcript (faster-whisper int8, as `bench peers` runs it but without the temperature fallback, which decodes
unreadable speech up to six times) and its WER against the reference. Resumable: utterances already in OUT are
skipped. A corpus's augmentation can make speech that Whisper itself cannot read (held-out synthetic speech, babble:
Whisper-base 91% WER); this says which utterances those are."""

import argparse
import json
import multiprocessing as mp
import os
from pathlib import Path

import jiwer
import soundfile as sf


def _work(args):
    jobs, worker = args
    from faster_whisper import WhisperModel

    from asr_engine.pretrained import whisper_base_ct2_dir
    from asr_engine.text import normalize

    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "asr-engine",
                         "whisper-base-ct2")
    model = WhisperModel(str(whisper_base_ct2_dir(cache)), device="cpu", compute_type="int8", cpu_threads=1)
    out = []
    for manifest, audio, text in jobs:
        x, _ = sf.read(str(Path(manifest).parent / audio), dtype="float32")
        segments, _ = model.transcribe(x, language="en", beam_size=1, without_timestamps=True, temperature=0.0,
                                       condition_on_previous_text=False, vad_filter=False)
        hyp = normalize(" ".join(s.text.strip() for s in segments))
        ref = normalize(text)
        wer = jiwer.wer(ref, hyp or "<empty>") if ref else float(bool(hyp))
        out.append({"manifest": manifest, "audio": audio, "whisper": hyp, "wer": round(wer, 4)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=50)
    args = p.parse_args(argv)
    done = set()
    if Path(args.out).exists():
        done = {(r["manifest"], r["audio"]) for r in map(json.loads, open(args.out))}
    jobs = [(m, u["audio"], u["text"]) for m in args.manifests for u in map(json.loads, open(m))
            if (m, u["audio"]) not in done]
    chunks = [(jobs[i: i + args.chunk], i) for i in range(0, len(jobs), args.chunk)]
    print(f"{len(jobs)} utterances to read ({len(done)} already read)", flush=True)
    with mp.get_context("spawn").Pool(args.workers) as pool, open(args.out, "a") as f:
        for n, rows in enumerate(pool.imap(_work, chunks), 1):
            f.writelines(json.dumps(r) + "\n" for r in rows)
            f.flush()
            if n % 20 == 0:
                print(f"{n * args.chunk} read", flush=True)


if __name__ == "__main__":
    main()
