"""80-dim log-mel filterbank with Kaldi's conventions, in plain torch.

Conventions (Kaldi `compute-fbank-feats` defaults, dither 0): 25 ms Povey window,
10 ms shift, snip_edges (frame i covers samples [160 i, 160 i + 400)), DC removal,
pre-emphasis 0.97, 512-point power spectrum, 80 triangular mel filters from 20 Hz
to Nyquist on Kaldi's mel scale, natural log floored at float epsilon, samples
scaled to the int16 range.

The DFT is a matmul with a fixed basis so the module exports to ONNX as is.
Because frames depend only on absolute sample positions, `FbankStream` yields the
same frames whether audio arrives whole or in pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FbankConfig", "Fbank", "FbankStream", "num_frames"]


@dataclass(frozen=True)
class FbankConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist, as in Kaldi

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def padded_window_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()


def num_frames(num_samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    if num_samples < cfg.window_size:
        return 0
    return 1 + (num_samples - cfg.window_size) // cfg.window_shift


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


class Fbank(nn.Module):
    """waveform (B, N) float in [-1, 1] -> log-mel (B, T, M), T = num_frames(N)."""

    def __init__(self, cfg: FbankConfig = FbankConfig()):
        super().__init__()
        self.cfg = cfg
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

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = waveform * 32768.0
        n_frames = torch.div(x.shape[-1] - cfg.window_size, cfg.window_shift, rounding_mode="floor") + 1
        starts = torch.arange(n_frames, device=x.device) * cfg.window_shift  # (T,)
        index = starts[:, None] + torch.arange(cfg.window_size, device=x.device)  # (T, W)
        frames = x[:, index]  # (B, T, W); a gather rather than unfold, so ONNX export keeps T dynamic
        re = frames @ self.dft_cos  # (B, T, K)
        im = frames @ self.dft_sin
        power = re * re + im * im
        mel = power @ self.mel_banks  # (B, T, M)
        return torch.log(torch.clamp(mel, min=torch.finfo(torch.float32).eps))


class FbankStream:
    """Incremental fbank: feed samples in any pieces, get each frame exactly once."""

    def __init__(self, fbank: Fbank):
        self.fbank = fbank
        self._pending = torch.zeros(0)

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        """samples (N,) float -> new frames (T, M); keeps the unused tail for the next call."""
        cfg = self.fbank.cfg
        buf = torch.cat([self._pending, samples.to(torch.float32)])
        n = num_frames(buf.numel(), cfg)
        if n == 0:
            self._pending = buf
            return torch.zeros(0, cfg.num_mel_bins)
        used = n * cfg.window_shift
        self._pending = buf[used:]
        with torch.no_grad():
            return self.fbank(buf[None, : (n - 1) * cfg.window_shift + cfg.window_size])[0]
