import numpy as np
import pytest
import torch

from asr_engine.features import FbankConfig, FbankStream, frames_of, num_frames
from asr_engine.model.fbank import Fbank


def _speechlike(n=16000 * 2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = 0.2 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(3 * t))) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


def test_matches_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")
    x = _speechlike()
    ours = Fbank()(torch.from_numpy(x)[None])[0]
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (x * 32768).tolist())
    fb.input_finished()
    ref = torch.tensor(np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]))
    assert ours.shape == ref.shape == (num_frames(len(x)), 80)
    torch.testing.assert_close(ours, ref, atol=2e-2, rtol=1e-3)
    assert (ours - ref).abs().mean() < 1e-3


def test_matches_torchaudio_kaldi_fbank():
    try:
        import torchaudio.compliance.kaldi as kaldi
    except Exception as e:  # the registry's torchaudio is CUDA-only and may not load here
        pytest.skip(f"torchaudio does not import: {e}")
    x = _speechlike()
    ref = kaldi.fbank(torch.from_numpy(x)[None] * 32768, num_mel_bins=80, dither=0.0)
    torch.testing.assert_close(Fbank()(torch.from_numpy(x)[None])[0], ref, atol=2e-2, rtol=1e-3)


@pytest.mark.parametrize("pieces", [1, 7, 160, 1000])
def test_streaming_equals_whole(pieces):
    x = _speechlike(16000 + 123)
    fbank = Fbank()
    whole = fbank(torch.from_numpy(x)[None])[0]
    stream = FbankStream(lambda w: fbank(torch.from_numpy(w)).numpy(), FbankConfig())
    parts = [stream.accept(c) for c in np.array_split(x, pieces)]
    torch.testing.assert_close(torch.from_numpy(np.concatenate(parts)), whole, atol=1e-4, rtol=1e-6)


def test_short_input_gives_no_frames():
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(560) == 2
    s = FbankStream(lambda w: Fbank()(torch.from_numpy(w)).numpy(), FbankConfig())
    assert s.accept(np.zeros(100, np.float32)).shape == (0, 80)
    assert s.accept(np.zeros(300, np.float32)).shape == (1, 80)


@pytest.mark.parametrize("kind", ["kaldi", "whisper"])
def test_several_streams_frames_in_one_call_equal_each_alone(kind):
    """Streams fed pieces of different sizes (some too short for a frame), their frames made in one
    front-end call a round (rows padded with zeros): each stream's frames are those it makes alone."""
    cfg = FbankConfig(kind=kind)
    fbank = Fbank(cfg)
    calls = []

    def counted(w):
        calls.append(w.shape)
        return fbank(torch.from_numpy(w)).numpy()

    audios = [_speechlike(n) for n in (16000 + 123, 9000, 250, 12000)]
    together = [FbankStream(counted, cfg) for _ in audios]
    alone = [FbankStream(lambda w: fbank(torch.from_numpy(w)).numpy(), cfg) for _ in audios]
    got, want = [[] for _ in audios], [[] for _ in audios]
    sizes = [901, 1000, 399, 3001]  # stream 3 ends early: empty pieces after
    for r in range(8):
        pieces = [x[r * sizes[i]: (r + 1) * sizes[i]] for i, x in enumerate(audios)]
        calls.clear()
        new = frames_of(counted, cfg, [s.take(p) for s, p in zip(together, pieces)])
        assert len(calls) <= 1
        for i, (s, p) in enumerate(zip(alone, pieces)):
            got[i].append(new[i])
            want[i].append(s.accept(p))
            assert new[i].shape == want[i][-1].shape and new[i].dtype == np.float32
    assert sum(len(f) for f in got[2]) == 0 and all(sum(len(f) for f in g) > 10 for g in (got[0], got[1], got[3]))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.concatenate(g), np.concatenate(w), atol=1e-5, rtol=1e-6)
    assert frames_of(counted, cfg, [np.zeros(10, np.float32)])[0].shape == (0, 80)
