"""Audio input: any format libsndfile reads, any sample rate, mixed to 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")

__all__ = ["SAMPLE_RATE", "AUDIO_EXTENSIONS", "AudioError", "load_audio", "resample", "to_float32"]


class AudioError(ValueError):
    """An input that cannot be turned into speech samples (unreadable, empty, corrupt)."""


def resample(samples: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with libsoxr (VHQ); (N,) float32 -> (M,) float32."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if sr_in == sr_out or samples.size == 0:
        return samples
    import soxr

    return soxr.resample(samples, sr_in, sr_out, quality="VHQ").astype(np.float32, copy=False)


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 PCM or float audio -> float32 in [-1, 1]; rejects other dtypes and non-finite values."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        out = samples.astype(np.float32) / 32768.0
    elif samples.dtype in (np.float32, np.float64):
        out = samples.astype(np.float32, copy=False)
    else:
        raise AudioError(f"unsupported sample dtype {samples.dtype} (expected int16, float32 or float64)")
    if not np.isfinite(out).all():
        raise AudioError("audio contains NaN or infinite samples")
    return out


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a file, mix channels to mono, resample; returns (N,) float32.

    Raises AudioError with the file name and the reason for missing, unreadable,
    truncated or empty files.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return resample(mono, sr, sample_rate)
