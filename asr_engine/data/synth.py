"""Offline speech synthesis for training data.

Each utterance is a (sentence, engine, voice, prosody) job, drawn deterministically
from a seed; jobs are synthesized in parallel processes into 16 kHz FLAC files and
listed in a JSONL manifest (`audio`, `text`, `duration`, `engine`, `voice`).
Existing files are kept, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_engine.audio import SAMPLE_RATE, resample

ESPEAK_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "whisper", "croak", "Andy", "Annie", "Denis",
                   "Gene", "Jacky", "Lee", "Mr serious", "Storm", "Tweaky", "anika", "steph")
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")


@dataclass(frozen=True)
class SynthJob:
    uid: str
    text: str
    engine: str
    voice: str
    rate: float  # relative speaking rate, 1.0 = engine default
    pitch: int  # espeak pitch 0-99


def available_engines() -> list[str]:
    return [e for e, exe in (("espeak-ng", "espeak-ng"), ("flite", "flite")) if shutil.which(exe)]


def make_jobs(sentences: list[str], n: int, seed: int, engines: list[str], prefix: str) -> list[SynthJob]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        engine = rng.choice(engines)
        if engine == "espeak-ng":
            variant = rng.choice(ESPEAK_VARIANTS)
            voice = rng.choice(ESPEAK_VOICES) + (f"+{variant}" if variant else "")
        else:
            voice = rng.choice(FLITE_VOICES)
        jobs.append(SynthJob(f"{prefix}{i:07d}", rng.choice(sentences), engine, voice,
                             round(rng.uniform(0.8, 1.3), 3), rng.randint(25, 75)))
    return jobs


def _run_engine(job: SynthJob, wav: Path) -> None:
    if job.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", job.voice, "-s", str(int(175 * job.rate)), "-p", str(job.pitch),
               "-w", str(wav), job.text]
    elif job.engine == "flite":
        cmd = ["flite", "-voice", job.voice, "--setf", f"duration_stretch={1 / job.rate:.3f}",
               "-t", job.text, "-o", str(wav)]
    else:
        raise ValueError(f"unknown engine {job.engine!r}")
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def synthesize(job: SynthJob, out_dir: Path) -> dict:
    """Synthesize one job into out_dir/<shard>/<uid>.flac; return its manifest row."""
    rel = Path(job.uid[-7:-4]) / f"{job.uid}.flac"
    path = out_dir / rel
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "a.wav"
            _run_engine(job, wav)
            audio, sr = sf.read(wav, dtype="float32", always_2d=True)
        audio = resample(audio.mean(axis=1), sr, SAMPLE_RATE)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 0:
            audio = audio * (0.9 / peak)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".tmp.flac")
        sf.write(part, audio, SAMPLE_RATE)
        part.rename(path)  # atomic: a killed run never leaves a half-written file behind
    duration = sf.info(path).duration
    return {"audio": str(rel), "text": job.text, "duration": round(duration, 3), **{
        k: v for k, v in asdict(job).items() if k in ("engine", "voice")}}


def synthesize_corpus(jobs: list[SynthJob], out_dir: Path, workers: int, progress: bool = True) -> Path:
    """Run jobs in `workers` processes and write out_dir/manifest.jsonl (in job order)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with ProcessPoolExecutor(workers) as pool:
        it = pool.map(synthesize, jobs, [out_dir] * len(jobs), chunksize=16)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(jobs), desc="synth", unit="utt")
        rows = list(it)
    manifest = out_dir / "manifest.jsonl"
    with open(manifest, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return manifest
