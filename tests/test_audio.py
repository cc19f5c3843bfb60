import numpy as np
import pytest
import soundfile as sf

from asr_engine.audio import AudioError, load_audio, pause_cuts, resample, to_float32

from conftest import tone


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resamples_to_16k(tmp_path, sr):
    path = tmp_path / "a.wav"
    sf.write(path, tone(1.0, sr, freq=300.0), sr)
    x = load_audio(path)
    assert x.dtype == np.float32 and abs(len(x) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(x[1000:15000]))
    assert abs(np.argmax(spectrum) * 16000 / 14000 - 300) < 3  # the tone survives at its frequency


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_reads_compressed_and_multichannel(tmp_path, fmt):
    path = tmp_path / f"a.{fmt}"
    sf.write(path, tone(0.5, 16000, channels=2), 16000)
    x = load_audio(path)
    assert x.ndim == 1 and abs(len(x) - 8000) <= 1


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(tmp_path / "zero.wav")


def test_truncated_file(tmp_path):
    path = tmp_path / "t.flac"
    sf.write(path, tone(2.0), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    try:
        x = load_audio(path)  # libsndfile may return the decodable prefix...
        assert 0 < len(x) < 32000
    except AudioError as e:  # ...or refuse the file; either way no crash and a clear message
        assert "t.flac" in str(e)


def test_to_float32_checks():
    assert to_float32(np.array([16384], dtype=np.int16))[0] == 0.5
    with pytest.raises(AudioError, match="NaN"):
        to_float32(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match="dtype"):
        to_float32(np.array([1], dtype=np.int32))
    assert resample(np.zeros(0, dtype=np.float32), 8000).size == 0


def write_with_ffmpeg(path, container: str, codec: str, samples: np.ndarray, sr: int, video: bool = False):
    """Encode (N, 2) float audio with PyAV (FFmpeg), in a video file when `video`."""
    av = pytest.importorskip("av")  # the `media` extra

    with av.open(str(path), "w", format=container) as out:
        if video:
            v = out.add_stream("mpeg4" if container == "mp4" else "libvpx", rate=10)
            v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = out.add_stream(codec, rate=sr)
        a.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T, dtype=np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = sr, 0
        for packet in a.encode(frame):
            out.mux(packet)
        if video:
            for _ in range(5):
                for packet in v.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                    out.mux(packet)
            for packet in v.encode():
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)


@pytest.mark.parametrize("name,container,codec,sr,video", [
    ("a.m4a", "mp4", "aac", 44100, False), ("a.webm", "webm", "libopus", 48000, False),
    ("v.mp4", "mp4", "aac", 44100, True), ("v.webm", "webm", "libopus", 48000, True)])
def test_reads_what_ffmpeg_reads_video_files_audio_included(tmp_path, name, container, codec, sr, video):
    x = tone(1.0, sr, freq=440.0, channels=2)
    x[:, 1] *= 0.5  # channels differ: the mix is their mean, as for WAV
    write_with_ffmpeg(tmp_path / name, container, codec, x, sr, video)
    y = load_audio(tmp_path / name)
    assert abs(len(y) - 16000) < 800  # codec priming and padding add a few ms
    peak = float(np.abs(y[2000:-2000]).max())
    assert peak == pytest.approx(0.3 * 0.75, rel=0.08)
    spectrum = np.abs(np.fft.rfft(y[:16000] if len(y) >= 16000 else np.pad(y, (0, 16000 - len(y)))))
    assert abs(int(spectrum.argmax()) - 440) <= 2  # still a 440 Hz tone after the codec
    (tmp_path / "silent.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    with pytest.raises(AudioError, match="silent.mp4"):
        load_audio(tmp_path / "silent.mp4")


def test_a_truncated_wav_is_measured(tmp_path):
    from asr_engine.audio import wav_shortfall

    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(2.0), 16000, subtype="PCM_16")
    assert wav_shortfall(whole) == 0.0
    cut = tmp_path / "cut.wav"
    data = whole.read_bytes()
    cut.write_bytes(data[: 44 + 16000 * 2 // 2])  # the header and 0.5 s of its 2 s
    assert wav_shortfall(cut) == pytest.approx(1.5, abs=0.01)
    assert 0 < len(load_audio(cut)) < 16000  # still decoded as far as it goes
    flac = tmp_path / "a.flac"
    sf.write(flac, tone(1.0), 16000)
    assert wav_shortfall(flac) == 0.0


def test_pause_cuts_cut_long_recordings_at_their_quietest_places():
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(35 * 16000)).astype(np.float32)
    for pause in (9.5, 19.0, 27.0):  # quiet quarter seconds, one before each 10 s boundary
        speech[int(pause * 16000): int(pause * 16000) + 4000] *= 1e-3
    cuts = pause_cuts(speech, 10 * 16000)
    assert cuts[0] == 0 and cuts[-1] == len(speech) and len(cuts) == 5
    assert all(0 < b - a <= 10 * 16000 for a, b in zip(cuts[:-1], cuts[1:]))
    for cut, pause in zip(cuts[1:-1], (9.5, 19.0, 27.0)):  # inside each pause
        assert pause * 16000 < cut < pause * 16000 + 4000
    assert pause_cuts(speech[:16000], 10 * 16000) == [0, 16000]  # short: one piece
    assert pause_cuts(np.zeros(0, np.float32), 16000) == [0, 0]
    flat = pause_cuts(np.zeros(50 * 16000, np.float32), 10 * 16000)  # no pause stands out: still pieces
    assert all(0 < b - a <= 10 * 16000 for a, b in zip(flat[:-1], flat[1:])) and flat[-1] == 50 * 16000


def test_a_file_is_read_a_block_at_a_time_and_resampled_as_a_whole(tmp_path, monkeypatch):
    """load_audio reads a block at a time (a long 44.1 kHz stereo file is never held at its own rate and
    channels) and resamples block by block into one array: bit for bit what the whole file resampled at once
    gives; a file that declares fewer samples than it holds still comes back whole."""
    import soxr

    import asr_engine.audio as audio

    rng = np.random.default_rng(0)
    t = np.arange(44100 * 3) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), 0.3 * rng.standard_normal(len(t))], 1) * 0.5
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="PCM_16")
    whole, _ = sf.read(path, dtype="float32")
    expected = soxr.resample(whole.mean(axis=1), 44100, 16000, quality="VHQ")
    monkeypatch.setattr(audio, "_BLOCK", 1000)  # 266 blocks of 500 stereo frames
    got = load_audio(path)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    short = audio._Resampled(path, 16000, 5, 16000)  # declares 5 samples, holds 4,000
    short.add(np.ones(1000, np.float32))
    short.add(np.full(3000, 0.5, np.float32))
    x = short.samples()
    assert len(x) == 4000 and x[:1000].sum() == 1000 and x[1000:].sum() == 1500


@pytest.mark.parametrize("rate, ok", [(1, False), (100, False), (3999, False), (4000, True), (768000, True),
                                      (1_000_000, False)])
def test_a_header_with_no_audio_rate_is_refused(tmp_path, rate, ok):
    """A WAV whose header says 1 Hz made 16,000 samples of each one: a 320 KB file took 17 GB and crashed
    `transcribe` inside libsoxr. Rates no audio file has are refused in one line; 4 kHz to 768 kHz are read."""
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, np.zeros(8000, np.int16), rate, subtype="PCM_16")
    if ok:
        assert len(load_audio(path)) == round(8000 * 16000 / rate)
    else:
        with pytest.raises(AudioError, match=f"its header says {rate} Hz, which is not an audio sample rate"):
            load_audio(path)


@pytest.mark.parametrize("name", ["stereo.wav", "a.flac", "a.m4a"])
def test_audio_blocks_give_load_audios_samples_a_block_at_a_time(tmp_path, monkeypatch, name):
    """audio_blocks (how a long file is transcribed in constant memory) yields exactly load_audio's samples, in
    blocks of bounded size, through libsndfile or FFmpeg; bad files raise load_audio's errors."""
    import asr_engine.audio as audio
    from asr_engine.audio import audio_blocks, declared_seconds

    x = tone(3.0, 44100, freq=300.0, channels=2)
    x[:, 1] *= 0.5
    path = tmp_path / name
    if name.endswith(".m4a"):
        pytest.importorskip("av")
        write_with_ffmpeg(path, "mp4", "aac", x, 44100)
    else:
        sf.write(path, x, 44100)
    monkeypatch.setattr(audio, "_BLOCK", 3000)
    blocks = list(audio_blocks(path))
    assert len(blocks) > 10 and max(len(b) for b in blocks) <= 3000 * 16000 // 44100 // 2 + 2048
    assert np.array_equal(np.concatenate(blocks), load_audio(path))
    assert declared_seconds(path) == pytest.approx(3.0, abs=0.03)  # the header's, or the container's (FFmpeg)
    assert declared_seconds(tmp_path / "missing.wav") == 0.0 and declared_seconds(__file__) == 0.0
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    for bad, said in (("missing.wav", "no such file"), ("junk.wav", "cannot decode"), ("zero.wav", "no audio")):
        with pytest.raises(AudioError, match=said):
            list(audio_blocks(tmp_path / bad))
