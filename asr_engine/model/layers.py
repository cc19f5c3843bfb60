"""Conformer building blocks with chunked causal attention.

Every layer takes `pos` (B, T), the original encoder-frame index of each row, and
`valid` (B, T). On a full sequence pos is 0..T-1; on a compacted sequence (frames
kept by layer skipping) it holds the surviving frames' indices, so the chunk mask
and the relative positions are those of the original timeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import nn

from asr_engine.model.config import PAD_POS, ModelConfig


class Subsampling(nn.Module):
    """The stem, no time padding: (B, T, F) -> (B, T', D).

    stem "conv2d": conv2d subsampling (x4 or x8) and a linear layer; stem "whisper": Whisper's
    conv1d (kernel 3) + GELU, conv1d (kernel 3, stride 2) + GELU (x2, 20 ms frames). Whisper pads
    each conv by one frame on both sides; here output frame t sees input frames [2t, 2t + 5),
    so a stream's windows never depend on frames that have not arrived.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.d_model
        self.cfg, self.kernels = cfg, cfg.stem_kernels
        if cfg.stem == "whisper":
            self.convs = nn.Sequential(nn.Conv1d(cfg.feat_dim, c, 3), nn.GELU(), nn.Conv1d(c, c, 3, 2), nn.GELU())
            self.out: nn.Module | None = None
        else:
            convs: list[nn.Module] = []
            f = cfg.feat_dim
            for i in range(len(self.kernels)):
                convs += [nn.Conv2d(1 if i == 0 else c, c, 3, 2), nn.ReLU()]
                f = (f - 3) // 2 + 1
            self.convs = nn.Sequential(*convs)
            self.out = nn.Linear(c * f, cfg.d_model)
        self.stride, self.receptive_field = cfg.stride, cfg.receptive_field
        self.piece = 1024  # output frames per conv pass: bounds memory on long inputs
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.subsampling_norm else nn.Identity()

    def input_frames(self, n_out: int) -> int:
        """Input frames that yield exactly n_out output frames (see ModelConfig.input_frames)."""
        return self.cfg.input_frames(n_out)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for k, st in self.kernels:
            lengths = torch.div(lengths - k, st, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_out = self.cfg.output_length(x.shape[1])  # plain ints: no tensor, no device read
        if t_out <= self.piece:
            return self._run(x), self.output_lengths(lengths)
        # output frame t sees input frames [stride * t, stride * t + receptive_field): exact in pieces
        parts = [self._run(x[:, a * self.stride: a * self.stride + self.input_frames(min(self.piece, t_out - a))])
                 for a in range(0, t_out, self.piece)]
        return torch.cat(parts, dim=1), self.output_lengths(lengths)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.out is None:  # conv1d stem
            return self.norm(self.convs(x.transpose(1, 2)).transpose(1, 2))  # (B, T', D)
        x = self.convs(x[:, None])  # (B, C, T', F')
        B, C, T, Fq = x.shape
        return self.norm(self.out(x.permute(0, 2, 1, 3).reshape(B, T, C * Fq)))  # (B, T', D)


def sinusoids(pos: torch.Tensor, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's absolute position embedding at positions pos (B, T) -> (B, T, D): sines of
    the first D/2 timescales, then cosines. Defined for any position (Whisper's table stops at 1500)."""
    half = channels // 2
    inv = torch.exp(-math.log(max_timescale) / (half - 1) * torch.arange(half, device=pos.device,
                                                                          dtype=torch.float32))
    t = pos.to(torch.float32)[..., None] * inv  # (B, T, D/2)
    return torch.cat([t.sin(), t.cos()], dim=-1)


def rotary(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, E) by positions (B, T); only position differences matter downstream."""
    angle = pos[:, None, :, None].to(inv_freq.dtype) * inv_freq  # (B, 1, T, E/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class ChunkedAttention(nn.Module):
    """Multi-head self-attention where a frame sees its own chunk and `left_chunks` before it.

    Queries are processed in blocks so memory is O(T * window), not O(T^2); each block
    rotates its queries and keys relative to the block's first key, so positions never
    grow with the stream length.
    """

    def __init__(self, cfg: ModelConfig, block: int = 256):
        super().__init__()
        self.h, self.e = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.chunk, self.left = cfg.chunk_size, cfg.left_chunks
        self.dropout = cfg.dropout
        self.block = block
        self.rotary = cfg.positions == "rotary"  # absolute positions are added to the input instead
        self.register_buffer(
            "inv_freq", 1.0 / 10000 ** (torch.arange(0, self.e, 2).float() / self.e), persistent=False)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
                windows: list[tuple[int, int, int, int]] | None = None) -> torch.Tensor:
        """x (B, T, D), pos/valid (B, T); windows: `self.windows(pos, valid)` if already computed
        (every layer of a stack shares them)."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.h, self.e).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, E)
        chunk = self._chunk_index(pos, valid)  # (B, T)
        out = x.new_zeros(B, self.h, T, self.e)
        for a, b, s, e in self.windows(pos, valid) if windows is None else windows:
            out[:, :, a:b] = self._attend_block(q[:, :, a:b], k[:, :, s:e], v[:, :, s:e],
                                                chunk[:, a:b], chunk[:, s:e], pos[:, a:b], pos[:, s:e],
                                                valid[:, a:b], valid[:, s:e])
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    def windows(self, pos: torch.Tensor, valid: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """(a, b, s, e) for each block of queries [a, b) that holds a valid one: the smallest
        range of keys [s, e) that covers its valid queries' chunks and left context. Every
        block is computed at once and read back in one host transfer (on a GPU each read
        is a sync that stalls the launch queue)."""
        B, T = pos.shape
        if T == 0:
            return []
        chunk = self._chunk_index(pos, valid)  # (B, T), sorted per row: padding last
        n = -(-T // self.block)
        pad = n * self.block - T
        vq = F.pad(valid, (0, pad)).view(B, n, self.block)
        cq = F.pad(chunk, (0, pad)).view(B, n, self.block)
        c_max = torch.where(vq, cq, torch.full_like(cq, -1)).amax(2)  # (B, n)
        c_min = torch.where(vq, cq, torch.full_like(cq, PAD_POS)).amin(2)
        end = torch.searchsorted(chunk, c_max, right=True).amax(0)  # (n,)
        if self.left is None:
            start = torch.zeros_like(end)
        else:
            start = torch.searchsorted(chunk, c_min - self.left).amin(0)
        rows = torch.stack([vq.any(2).any(0).long(), start, end]).tolist()  # the one host read
        return [(i * self.block, min((i + 1) * self.block, T), s, e)
                for i, (any_valid, s, e) in enumerate(zip(*rows)) if any_valid]

    def forward_chunk(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
                      cache: "KVCache") -> tuple[torch.Tensor, "KVCache"]:
        """One streaming step. x (B, C, D) new frames (valid ones first in each row), pos (B, C)
        their timeline positions; cache holds up to W earlier frames' un-rotated keys/values.
        -> (B, C, D) and the cache of the W most recent valid frames."""
        B, C, D = x.shape
        q, k, v = self.qkv(x).view(B, C, 3, self.h, self.e).permute(2, 0, 3, 1, 4)  # 3 x (B, H, C, E)
        k_all, v_all = torch.cat([cache.k, k], 2), torch.cat([cache.v, v], 2)  # (B, H, W + C, E)
        pk, vk = torch.cat([cache.pos, pos], 1), torch.cat([cache.valid, valid], 1)  # (B, W + C)
        ck, cq = self._chunk_index(pk, vk), self._chunk_index(pos, valid)
        out = self._attend_block(q, k_all, v_all, cq, ck, pos, pk, valid, vk)  # (B, H, C, E)
        keep = _last_valid(vk, cache.pos.shape[1])  # (B, W) indices of the newest valid keys
        new = KVCache(k_all.gather(2, keep[:, None, :, None].expand(-1, self.h, -1, self.e)),
                      v_all.gather(2, keep[:, None, :, None].expand(-1, self.h, -1, self.e)),
                      pk.gather(1, keep), vk.gather(1, keep))
        return self.proj(out.transpose(1, 2).reshape(B, C, D)), new

    def _chunk_index(self, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T) chunk of each frame; padding gets a chunk after every real one."""
        return torch.where(valid, pos, torch.full_like(pos, PAD_POS)) // self.chunk

    def _attend_block(self, q, k, v, cq, ck, pq, pk, vq, vk) -> torch.Tensor:
        allowed = (ck[:, None, :] <= cq[:, :, None]) & vk[:, None, :]  # (B, Q, W)
        if self.left is not None:
            allowed = allowed & (ck[:, None, :] >= cq[:, :, None] - self.left)
        allowed = allowed | ~vq[:, :, None]  # padding queries attend anywhere; their output is discarded
        # relative to the row's first query (valid rows come first): rotary angles stay small
        base = torch.where(vq[:, :1], pq[:, :1], torch.zeros_like(pq[:, :1]))
        pk = torch.where(vk, pk - base, torch.zeros_like(pk))
        pq = torch.where(vq, pq - base, torch.zeros_like(pq))
        if self.rotary:
            q, k = rotary(q, pq, self.inv_freq), rotary(k, pk, self.inv_freq)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed[:, None], dropout_p=self.dropout if self.training else 0.0)


@dataclass(frozen=True)
class KVCache:
    """One attention layer's cache of W frames: k, v (B, H, W, E) before rotary, pos (B, W)
    timeline positions, valid (B, W)."""

    k: torch.Tensor
    v: torch.Tensor
    pos: torch.Tensor
    valid: torch.Tensor


def split_layers(k, v, kv_pos, kv_valid, conv) -> list[tuple[KVCache, torch.Tensor]]:
    """A stage's stacked caches (B, L_stage, ...; StreamState.stage) -> per layer (attention cache, conv cache)."""
    return [(KVCache(k[:, i], v[:, i], kv_pos[:, i], kv_valid[:, i]), conv[:, i]) for i in range(k.shape[1])]


def stack_layers(kv: list[KVCache], conv: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Per-layer caches -> the stage's stacked tensors, in CACHE_FIELDS order."""
    return (torch.stack([c.k for c in kv], 1), torch.stack([c.v for c in kv], 1),
            torch.stack([c.pos for c in kv], 1), torch.stack([c.valid for c in kv], 1), torch.stack(conv, 1))


def _last_valid(valid: torch.Tensor, w: int) -> torch.Tensor:
    """valid (B, N) -> (B, w) indices of each row's last w valid entries, in order (if a row has
    fewer, its latest invalid entries fill in front, still flagged invalid by the gather)."""
    n = valid.shape[1]
    score = torch.arange(n, device=valid.device) + valid.long() * n  # distinct: valid entries rank above
    top = score.topk(w, dim=1).indices  # (B, w), highest score first
    return top.flip(1)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        act = nn.GELU() if cfg.block == "whisper" else nn.SiLU()
        self.net = nn.Sequential(
            nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model), act,
            nn.Dropout(cfg.dropout), nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise -> GLU -> causal depthwise conv -> LayerNorm -> SiLU -> pointwise."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.norm_in = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, cfg.conv_kernel, groups=d)
        self.norm = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.left_pad = cfg.conv_kernel - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm_in(x)), dim=-1)  # (B, T, D)
        y = F.pad(y.transpose(1, 2), (self.left_pad, 0))  # causal: only past frames
        y = self.dw(y).transpose(1, 2)
        return self.drop(self.pw2(F.silu(self.norm(y))))

    def forward_chunk(self, x: torch.Tensor, valid: torch.Tensor,
                      cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, D) with valid frames first; cache (B, K-1, D) the last K-1 valid frames' conv
        inputs (zeros at the stream start, like the causal padding). -> (B, C, D), new cache."""
        y = F.glu(self.pw1(self.norm_in(x)), dim=-1)  # (B, C, D)
        full = torch.cat([cache, y], 1)  # (B, K-1+C, D)
        out = self.dw(full.transpose(1, 2)).transpose(1, 2)  # (B, C, D)
        held = torch.cat([torch.ones_like(cache[..., 0], dtype=torch.bool), valid], 1)
        keep = _last_valid(held, cache.shape[1])  # (B, K-1)
        new = full.gather(1, keep[:, :, None].expand(-1, -1, full.shape[2]))
        return self.drop(self.pw2(F.silu(self.norm(out)))), new


class ConformerBlock(nn.Module):
    """Macaron FFN / attention / conv / FFN, pre-norm, residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ff1, self.ff2 = FeedForward(cfg), FeedForward(cfg)
        self.norm_att = nn.LayerNorm(cfg.d_model)
        self.att = ChunkedAttention(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg)
        self.norm_out = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, windows=None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.att(self.norm_att(x), pos, valid, windows))
        x = x + self.conv(x)
        x = self.norm_out(x + 0.5 * self.ff2(x))
        return x.masked_fill(~valid[:, :, None], 0.0)  # padding never feeds later frames

    def forward_chunk(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, kv: KVCache,
                      conv: torch.Tensor) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        """The streaming form of forward: x (B, C, D) new frames -> (B, C, D) and new caches."""
        x = x + 0.5 * self.ff1(x)
        a, kv = self.att.forward_chunk(self.norm_att(x), pos, valid, kv)
        x = x + self.drop(a)
        c, conv = self.conv.forward_chunk(x, valid, conv)
        x = x + c
        x = self.norm_out(x + 0.5 * self.ff2(x))
        return x.masked_fill(~valid[:, :, None], 0.0), kv, conv


class WhisperBlock(nn.Module):
    """Whisper's pre-LN block with a Conformer conv module between attention and FFN:
    x + att(LN x), + conv(x), + FFN(LN x). The conv module's output projection starts at
    zero, so a block with imported Whisper weights computes Whisper's block exactly."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_att = nn.LayerNorm(cfg.d_model)
        self.att = ChunkedAttention(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg)
        nn.init.zeros_(self.conv.pw2.weight)
        nn.init.zeros_(self.conv.pw2.bias)
        self.ff = FeedForward(cfg)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, windows=None) -> torch.Tensor:
        x = x + self.drop(self.att(self.norm_att(x), pos, valid, windows))
        x = x + self.conv(x)
        x = x + self.ff(x)
        return x.masked_fill(~valid[:, :, None], 0.0)

    def forward_chunk(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, kv: KVCache,
                      conv: torch.Tensor) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        a, kv = self.att.forward_chunk(self.norm_att(x), pos, valid, kv)
        x = x + self.drop(a)
        c, conv = self.conv.forward_chunk(x, valid, conv)
        x = x + c
        x = x + self.ff(x)
        return x.masked_fill(~valid[:, :, None], 0.0), kv, conv


def make_block(cfg: ModelConfig) -> nn.Module:
    return WhisperBlock(cfg) if cfg.block == "whisper" else ConformerBlock(cfg)
