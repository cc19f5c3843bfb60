"""Audio input: any format libsndfile or FFmpeg (through PyAV) reads, the audio track of video files
included, any sample rate, mixed to 16 kHz mono float32."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
# libsndfile's (the fast path) and what FFmpeg adds: AAC/ALAC in MP4, WebM/Matroska, video files' audio
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au",
                    ".m4a", ".mp4", ".aac", ".webm", ".mkv", ".mka", ".mov", ".wma", ".amr", ".3gp")

__all__ = ["SAMPLE_RATE", "AUDIO_EXTENSIONS", "AudioError", "PAUSE_HOP", "audio_blocks", "declared_seconds",
           "load_audio", "pause_cuts", "resample", "to_float32", "wav_shortfall"]


class AudioError(ValueError):
    """An input that cannot be turned into speech samples (unreadable, empty, corrupt)."""


def check_sample_rate(sample_rate) -> None:
    """Refuse what is not an integer rate in 8000..192000 Hz (streams and arrays alike)."""
    if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
        raise AudioError(f"unsupported sample rate {sample_rate!r}: expected an integer in 8000..192000 Hz")


PAUSE_HOP = SAMPLE_RATE // 100  # pause_cuts' energy frames: every cut is a multiple of it


def pause_cuts(samples: np.ndarray, max_len: int, search: int = 3 * SAMPLE_RATE, quiet: int = SAMPLE_RATE // 5,
               hop: int = PAUSE_HOP) -> list[int]:
    """Where to cut a recording into pieces of at most `max_len` samples, each cut at a pause: the middle of
    the quietest `quiet` samples (by mean log energy over `hop`-sample frames) within the last `search`
    samples before the piece would reach max_len. -> the pieces' starts and the end: [0, c1, ..., len].
    Not a voice-activity detector: it only needs the quietest place in a window, which a dozen lines of
    numpy find (webrtcvad or Silero would add a dependency to classify frames we do not need classified)."""
    n = len(samples)
    if n <= max_len:
        return [0, n]
    frames = n // hop
    x = samples[: frames * hop].reshape(frames, hop)
    # each frame's sum of squares in float64 without a float64 copy of the recording (that and its square took
    # 0.9 GB an hour of audio, more than the recording itself; einsum casts in buffered blocks)
    energy = np.log(np.einsum("ij,ij->i", x, x, dtype=np.float64) / hop + 1e-10)
    w = max(1, quiet // hop)
    smooth = np.convolve(energy, np.ones(w) / w, mode="same")  # mean log energy of the `quiet` around each frame
    cuts, start = [0], 0
    limit, back = max_len // hop, max(w, search // hop)
    while n - start > max_len:
        lo, hi = start // hop + max(1, limit - back), start // hop + limit - w // 2
        at = (lo + int(np.argmin(smooth[lo:hi]))) * hop if hi > lo else start + max_len
        start = min(at, start + max_len)
        cuts.append(start)
    return cuts + [n]


def resample(samples: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with libsoxr (VHQ); (N,) float32 -> (M,) float32."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if sr_in == sr_out or samples.size == 0:
        return samples
    import soxr

    return soxr.resample(samples, sr_in, sr_out, quality="VHQ").astype(np.float32, copy=False)


FLOAT_PEAK = 256.0  # float samples past it are another scale's (int16's), not loud audio (+48 dB over full scale)


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
    if samples.dtype != np.int16 and out.size and (peak := float(np.abs(out).max())) > FLOAT_PEAK:
        # int16 PCM handed over as floats: the model hears it 90 dB too loud and returns nothing, silently
        raise AudioError(f"float samples reach {peak:,.0f}; float audio runs from -1 to 1 (int16 samples as floats? "
                         "pass them as int16, or divide them by 32768)")
    return out


def mono_float32(samples: np.ndarray) -> np.ndarray:
    """One channel of samples as `to_float32` makes them; any other shape is an AudioError."""
    x = to_float32(samples)
    if x.ndim != 1:
        raise AudioError(f"expected mono 1-D samples, got shape {x.shape}")
    return x


def _duration_frames(stream, sr: int) -> int:
    """Samples at `sr` the container says the track holds (0 when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return max(0, int(stream.duration * stream.time_base * sr))
    return 0


def _ffmpeg_blocks(path: Path, sndfile_error: Exception) -> Iterator:
    """The first audio stream of a file libsndfile does not read (M4A, WebM, MP4 video, ...), through
    PyAV's bundled FFmpeg decoders: first (rate, samples the container declares), then mono float32 blocks at
    that rate. PyAV is the `media` extra (100 MB of FFmpeg libraries that WAV, FLAC, Ogg and MP3 users do not
    need)."""
    try:
        import av
    except ImportError:
        raise AudioError(f"{path}: cannot decode audio ({sndfile_error}); M4A, AAC, WebM and video files need "
                         "FFmpeg's decoders: pip install 'asr-engine[media]'") from None

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: cannot decode audio (no audio track; {sndfile_error})")
            stream = container.streams.audio[0]
            sr = stream.codec_context.sample_rate or stream.rate
            if not sr:
                raise AudioError(f"{path}: cannot decode audio ({sndfile_error}; FFmpeg finds no sample rate)")
            # planar float at the track's own rate and layout, mixed to mono as the libsndfile path does
            # (the mean of the channels) frame by frame; resampling stays with libsoxr, as it comes
            planar = av.AudioResampler(format="fltp", rate=sr)
            yield int(sr), _duration_frames(stream, sr)
            for frame in container.decode(stream):
                for f in planar.resample(frame):
                    yield f.to_ndarray().mean(axis=0)
            for f in planar.resample(None):
                yield f.to_ndarray().mean(axis=0)
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({sndfile_error}; FFmpeg: {e})") from e


def wav_shortfall(path: str | Path) -> float:
    """Seconds of audio a WAV file's header promises and its data does not hold (0.0 when whole,
    or not a WAV). libsndfile reads a truncated WAV's prefix without a word; this says so."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0.0
        size = Path(path).stat().st_size
        byte_rate = 0
        while chunk := f.read(8):
            if len(chunk) < 8:
                return 0.0
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = f.read(length + (length & 1))
                byte_rate = struct.unpack("<I", fmt[8:12])[0] if len(fmt) >= 12 else 0
            elif name == b"data":
                missing = f.tell() + length - size
                if length in (0, 0xFFFFFFFF) or missing <= 0 or not byte_rate:  # streamed WAVs declare 0 or -1
                    return 0.0
                return missing / byte_rate
            else:
                f.seek(length + (length & 1), 1)
    return 0.0


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a file, mix channels to mono, resample; returns (N,) float32.

    Raises AudioError with the file name and the reason for missing, unreadable,
    truncated or empty files.
    """
    path = _checked_path(path)
    try:
        return _collected(path, _mono_blocks(path), sample_rate)
    except _SndfileFailed as e:
        return _collected(path, _ffmpeg_blocks(path, e.error), sample_rate)


def declared_seconds(path: str | Path) -> float:
    """How long a file says it is, from its header (libsndfile's), or its container (FFmpeg's, when the `media`
    extra is installed); 0.0 when it does not say or cannot be read."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate > 0 and 0 < info.frames < 2**62 else 0.0
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        pass
    try:
        import av
    except ImportError:
        return 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return 0.0
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else 0.0
    except (av.FFmpegError, ValueError, UnicodeDecodeError, OSError):
        return 0.0


def audio_blocks(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """A file's audio as load_audio reads it (the same samples, the same errors), a block of at most a few seconds
    at a time: a recording of any length in a few megabytes. A file libsndfile fails on midway, after blocks
    were given, raises AudioError (load_audio would start over with FFmpeg)."""
    path = _checked_path(path)
    given = 0  # samples
    try:
        for y in _resampled(path, _mono_blocks(path), sample_rate):
            given += len(y)
            yield y
    except _SndfileFailed as e:
        if given:
            raise AudioError(f"{path}: cannot decode audio past {given / sample_rate:.2f} s ({e.error})") from None
        yield from _resampled(path, _ffmpeg_blocks(path, e.error), sample_rate)


def _collected(path: Path, blocks: Iterator, sample_rate: int) -> np.ndarray:
    """A _mono_blocks or _ffmpeg_blocks reading, resampled into one array."""
    out = _Resampled(path, *next(blocks), sample_rate)  # the first item: the file's rate and declared length
    for block in blocks:
        out.add(block)
    return out.samples()


def _resampled(path: Path, blocks: Iterator, sample_rate: int) -> Iterator[np.ndarray]:
    """A _mono_blocks or _ffmpeg_blocks reading, resampled block by block (the non-empty ones)."""
    out = _Resampled(path, *next(blocks), sample_rate, keep=False)
    for block in blocks:
        if len(y := out.add(block)):
            yield y
    if len(y := out.finish()):
        yield y


class _SndfileFailed(Exception):
    """libsndfile could not read the file (then FFmpeg tries)."""

    def __init__(self, error: Exception):
        self.error = error


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    return path


def _mono_blocks(path: Path) -> Iterator:
    """libsndfile's reading: first (rate, frames the file declares), then mono float32 blocks at its rate (a block
    at a time: a long recording is never held at its own rate and channel count; an hour of 44.1 kHz stereo is
    1.3 GB as float32, the 16 kHz mono it becomes 230 MB). Its failures raise _SndfileFailed."""
    import soundfile as sf

    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise _SndfileFailed(e) from None
    with f:
        yield f.samplerate, f.frames if f.seekable() else 0
        frames = max(1, _BLOCK // f.channels)  # a block's samples bounded, whatever the channel count
        while True:
            try:
                block = f.read(frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, TypeError) as e:
                raise _SndfileFailed(e) from None
            if not len(block):
                return
            yield block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]


_BLOCK = 1 << 18  # samples read at a time: 6 s of 44.1 kHz mono, 3 s of stereo
FILE_RATES = (4000, 768000)  # sample rates a file may have: old 4-6 kHz recordings to 768 kHz studio masters


class _Resampled:
    """Mono blocks at a file's rate in, resampled as they come (libsoxr's stream is bit for bit its one-shot
    resampling), into one array sized from the length the file declares: no copy of the whole at the end
    (keep=False: kept nowhere, add() returns each block's samples). A declared length past what the file's
    bytes could hold (a corrupt header) is not believed; the array grows as the samples come instead."""

    def __init__(self, path: Path, sr: int, frames: int, sample_rate: int, keep: bool = True):
        import soxr

        if not FILE_RATES[0] <= sr <= FILE_RATES[1]:  # a corrupt or crafted header: 1 Hz made 16,000 samples of
            # each one (a 320 KB file took 17 GB and crashed the process in libsoxr)
            raise AudioError(f"{path}: its header says {sr} Hz, which is not an audio sample rate "
                             f"({FILE_RATES[0]:,}-{FILE_RATES[1]:,} Hz are read)")
        self.path, self.n, self.any, self.keep = path, 0, False, keep
        self.stream = None if sr == sample_rate else soxr.ResampleStream(sr, sample_rate, 1, dtype="float32",
                                                                         quality="VHQ")
        plausible = 8 * path.stat().st_size * sample_rate // SAMPLE_RATE  # 8 samples a byte: 4 kbit/s at 16 kHz
        size = min(int(frames * sample_rate / sr) + 64, plausible) if frames > 0 and keep else 0
        self.buf = np.empty(size, np.float32)

    def add(self, mono: np.ndarray, last: bool = False) -> np.ndarray:
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        self.any |= mono.size > 0
        if not np.isfinite(mono).all():
            raise AudioError(f"{self.path}: audio contains NaN or infinite samples")
        y = mono if self.stream is None else self.stream.resample_chunk(mono, last=last)
        if self.keep:
            if self.n + len(y) > len(self.buf):
                grown = np.empty(max(2 * len(self.buf), self.n + len(y)), np.float32)
                grown[: self.n] = self.buf[: self.n]
                self.buf = grown
            self.buf[self.n: self.n + len(y)] = y
        self.n += len(y)
        return y

    def finish(self) -> np.ndarray:
        """The resampler's last samples (none without one); an error if the file held no audio."""
        if not self.any:
            raise AudioError(f"{self.path}: no audio samples")
        return self.add(np.zeros(0, np.float32), last=True) if self.stream is not None else np.zeros(0, np.float32)

    def samples(self) -> np.ndarray:
        self.finish()
        # a buffer that grew past its samples (the file declared less) is not kept whole behind a view
        return self.buf[: self.n] if len(self.buf) <= self.n + self.n // 8 + 64 else self.buf[: self.n].copy()
