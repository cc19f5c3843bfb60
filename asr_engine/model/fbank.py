"""80-dim log-mel filterbanks in plain torch: Kaldi's (`kind="kaldi"`) or Whisper's (`kind="whisper"`).

Conventions (Kaldi `compute-fbank-feats` defaults, dither 0): 25 ms Povey window,
10 ms shift, snip_edges (frame i covers samples [160 i, 160 i + 400)), DC removal,
pre-emphasis 0.97, 512-point power spectrum, 80 triangular mel filters from 20 Hz
to Nyquist on Kaldi's mel scale, natural log floored at float epsilon, samples
scaled to the int16 range.

Whisper's front end (`kind="whisper"`): 25 ms periodic Hann window, 400-point power
spectrum, 80 Slaney mel filters from 0 to 8 kHz, log10 floored at 1e-10, samples in
[-1, 1]. Whisper centres its frames (reflect padding) and clamps each utterance at its
maximum minus 8; neither can stream, so here frame i covers samples [160 i, 160 i + 400)
as in Kaldi, and the model's fixed `feat_floor` replaces the clamp. `whisper_log_mel`
is Whisper's own front end, exactly, for the pretrained teacher and the parity check.

The DFT is a matmul with a fixed basis so the module exports to ONNX as is.
Frames depend only on absolute sample positions (see `asr_engine.features.FbankStream`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asr_engine.features import FbankConfig

__all__ = ["Fbank", "kaldi_mel_banks", "whisper_log_mel", "whisper_mel_banks"]


def _mel(f: torch.Tensor | float) -> torch.Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)


def kaldi_mel_banks(cfg: FbankConfig) -> torch.Tensor:
    """(F, M) float64 weights from the power spectrum's first F = N/2 bins to M mel bins."""
    n_fft_bins = cfg.padded_window_size // 2
    nyquist = cfg.sample_rate / 2
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_lo, mel_hi = _mel(cfg.low_freq), _mel(high)
    delta = (mel_hi - mel_lo) / (cfg.num_mel_bins + 1)
    m = torch.arange(cfg.num_mel_bins, dtype=torch.float64)
    left, center, right = mel_lo + m * delta, mel_lo + (m + 1) * delta, mel_lo + (m + 2) * delta
    bin_mel = _mel(torch.arange(n_fft_bins, dtype=torch.float64) * cfg.sample_rate / cfg.padded_window_size)
    up = (bin_mel[:, None] - left) / (center - left)
    down = (right - bin_mel[:, None]) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)  # (F, M)


def _slaney_mel(f: torch.Tensor) -> torch.Tensor:
    """Hz -> Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa and Whisper use."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    return torch.where(f >= min_log_hz, min_log_hz / f_sp + torch.log(f.clamp(min=1e-10) / min_log_hz) / logstep,
                       f / f_sp)


def _slaney_hz(m: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep, min_log_mel = math.log(6.4) / 27.0, min_log_hz / f_sp
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


def whisper_mel_banks(n_fft: int = 400, n_mels: int = 80, sample_rate: int = 16000) -> torch.Tensor:
    """(n_fft/2 + 1, M) float64: librosa.filters.mel(sr, n_fft, n_mels) (Slaney scale and area
    normalization, 0 Hz to Nyquist), the filters Whisper ships in mel_filters.npz."""
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = _slaney_mel(torch.tensor(0.0, dtype=torch.float64)), _slaney_mel(
        torch.tensor(sample_rate / 2, dtype=torch.float64))
    mel_f = _slaney_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))  # (M + 2,)
    fdiff = mel_f.diff()
    ramps = mel_f[:, None] - fft_freqs[None, :]  # (M + 2, K)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)  # (M, K)
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.T.contiguous()


def whisper_log_mel(audio: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
    """Whisper's own front end: 16 kHz audio (N,) -> (T, 80) log10 mel, T = N // 160, clamped at
    its maximum minus 8, not yet scaled by (x + 4) / 4 (the encoder's normalization does that).

    Centred frames with reflect padding, as `whisper.log_mel_spectrogram`; with n_frames, the
    audio is first zero-padded or cut to n_frames * 160 samples (Whisper pads to 3000 frames)."""
    x = audio.to(torch.float32)
    if n_frames is not None:
        x = torch.nn.functional.pad(x, (0, max(0, n_frames * 160 - x.numel())))[: n_frames * 160]
    window = torch.hann_window(400, periodic=True, dtype=torch.float32, device=x.device)
    spec = torch.stft(x, 400, 160, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[:, :-1].abs() ** 2  # (K, T)
    mel = whisper_mel_banks().to(x.device, torch.float32).T @ power  # (M, T)
    log = torch.clamp(mel, min=1e-10).log10()
    return torch.maximum(log, log.max() - 8.0).T  # (T, M)


class Fbank(nn.Module):
    """waveform (B, N) float in [-1, 1] -> log-mel (B, T, M), T = num_frames(N)."""

    def __init__(self, cfg: FbankConfig = FbankConfig()):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "whisper":
            self._init_whisper()
            return
        n, w = cfg.padded_window_size, cfg.window_size
        t = torch.arange(w, dtype=torch.float64)
        window = (0.5 - 0.5 * torch.cos(2 * math.pi * t / (w - 1))) ** 0.85  # Povey
        # DC removal, pre-emphasis and the window are linear: fold them into the DFT basis.
        dc = torch.eye(w, dtype=torch.float64) - 1.0 / w
        pre = torch.eye(w, dtype=torch.float64)
        pre[1:, :-1] -= cfg.preemphasis * torch.eye(w - 1, dtype=torch.float64)
        pre[0, 0] -= cfg.preemphasis
        k = torch.arange(n // 2 + 1, dtype=torch.float64)
        angle = 2 * math.pi * t[:, None] * k[None, :] / n  # (W, K)
        frame_op = (window[:, None] * pre @ dc).T  # (W, W): x -> window * preemph(x - mean)
        self.register_buffer("dft_cos", (frame_op @ torch.cos(angle)).float(), persistent=False)
        self.register_buffer("dft_sin", (frame_op @ torch.sin(angle)).float(), persistent=False)
        banks = torch.cat([kaldi_mel_banks(cfg), torch.zeros(1, cfg.num_mel_bins, dtype=torch.float64)])
        self.register_buffer("mel_banks", banks.float(), persistent=False)  # (K, M), Nyquist bin zero

    def _init_whisper(self) -> None:
        w = self.cfg.window_size
        t = torch.arange(w, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * t / w)  # periodic Hann, as torch.hann_window
        angle = 2 * math.pi * t[:, None] * torch.arange(w // 2 + 1, dtype=torch.float64)[None, :] / w
        self.register_buffer("dft_cos", (window[:, None] * torch.cos(angle)).float(), persistent=False)
        self.register_buffer("dft_sin", (window[:, None] * torch.sin(angle)).float(), persistent=False)
        self.register_buffer("mel_banks", whisper_mel_banks(w).float(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        whisper = cfg.kind == "whisper"
        x = waveform if whisper else waveform * 32768.0
        n_frames = torch.div(x.shape[-1] - cfg.window_size, cfg.window_shift, rounding_mode="floor") + 1
        starts = torch.arange(n_frames, device=x.device) * cfg.window_shift  # (T,)
        index = starts[:, None] + torch.arange(cfg.window_size, device=x.device)  # (T, W)
        frames = x[:, index]  # (B, T, W); a gather rather than unfold, so ONNX export keeps T dynamic
        re = frames @ self.dft_cos  # (B, T, K)
        im = frames @ self.dft_sin
        power = re * re + im * im
        mel = power @ self.mel_banks  # (B, T, M)
        if whisper:
            return torch.log10(torch.clamp(mel, min=1e-10))
        return torch.log(torch.clamp(mel, min=torch.finfo(torch.float32).eps))
