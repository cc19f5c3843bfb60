"""Conformer building blocks with chunked causal attention.

Every layer takes a `Plan` of its frames (`Frames`: `pos` (B, N), the original
encoder-frame index of each column, and `valid` (B, N), real frames first, then the
lookahead copies of the right context). On a full sequence the real frames' pos is
0..T-1; on a compacted sequence (frames kept by layer skipping) it holds the surviving
frames' indices, so the chunk mask and the relative positions are those of the
original timeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
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


@dataclass(frozen=True)
class Frames:
    """The frames a stack of layers runs on. Columns [0, n_real) are real frames in timeline
    order (valid ones first in each row); columns [n_real, N) are lookahead copies (the model's
    right context): for each chunk in turn, copies of the next chunk's first frames (valid ones
    first), which only that chunk's frames see and which no later step keeps.
    pos (B, N) timeline positions, valid (B, N)."""

    pos: torch.Tensor
    valid: torch.Tensor
    n_real: int

    def owner(self, chunk: int) -> torch.Tensor:
        """(B, N) the chunk whose step computes each frame (a copy belongs to the chunk before its
        position's); padding gets a chunk after every real one."""
        ahead = (torch.arange(self.pos.shape[1], device=self.pos.device) >= self.n_real).long()
        return torch.where(self.valid, self.pos // chunk - ahead, torch.full_like(self.pos, PAD_POS // chunk))

    def ahead(self) -> torch.Tensor:
        """(N,) bool: the lookahead columns."""
        return torch.arange(self.pos.shape[1], device=self.pos.device) >= self.n_real


@dataclass(frozen=True)
class Plan:
    """What every layer of a stack shares about its frames, computed once: each frame's owner chunk,
    the attention's query blocks with their key ranges (`windows`; None in a streaming step, whose
    queries all attend at once), and the depthwise conv's input taps for the lookahead copies."""

    frames: Frames
    owner: torch.Tensor
    windows: list[tuple[int, int, int, int, int, int]] | None
    conv_index: torch.Tensor | None


def make_plan(cfg: ModelConfig, frames: Frames, lengths: list[int] | None = None) -> Plan:
    """The plan of frames; with `lengths` (each row's valid real frames, as the host knows them; the
    frames must then be `Encoder.embed`'s), the attention windows of a whole-utterance pass, made on
    the host (`host_windows`); without, none (a streaming step, or a compaction's frames, whose
    windows come from the gates: `kept_windows`)."""
    owner = frames.owner(cfg.chunk_size)
    found = None
    if lengths is not None:
        found = host_windows(lengths, frames.n_real, cfg.chunk_size, cfg.right_context, cfg.left_chunks)
    return Plan(frames, owner, found, lookahead_conv_index(owner, frames.n_real, cfg.conv_kernel))


ATTENTION_BLOCK = 256  # queries per attention block in a whole-utterance pass: memory O(T * window)


def host_windows(lengths: list[int], n_real: int, chunk: int, right: int, left: int | None,
                 block: int = ATTENTION_BLOCK) -> list[tuple[int, int, int, int, int, int]]:
    """(a, b, s, e, s2, e2) for each block of queries [a, b) of a whole-utterance pass that holds a
    valid one: the smallest ranges of real keys [s, e) and of lookahead keys [s2, e2) that cover its
    valid queries' chunks and left context. Made on the host from the rows' valid frame counts alone,
    which the host knows: no device read (on a GPU each read is a sync that stalls the launch queue).
    The frames: n_real real ones (row r's first lengths[r] valid, chunk p // chunk), then each
    chunk's `right` lookahead copies (copy k of chunk j valid where frame (j + 1) * chunk + k is: so
    each row's valid copies come first)."""
    n_chunks = -(-n_real // chunk)
    N = n_real + n_chunks * right
    if N == 0 or not lengths:
        return []
    t = np.asarray(lengths, np.int64)[:, None]  # (B, 1)
    ahead = np.clip(t - (np.arange(n_chunks) + 1) * chunk, 0, right).sum(1, keepdims=True)  # valid copies
    a = np.arange(0, N, block)[None, :]  # (1, n) each block's first query
    b = np.minimum(a + block, N)
    hi = np.minimum(b, np.minimum(t, n_real))  # real queries [a, hi)
    has = a < hi
    lo2, hi2 = np.maximum(a - n_real, 0), np.minimum(b - n_real, ahead)  # copies [lo2, hi2) among the copies
    has2 = lo2 < hi2
    big = np.iinfo(np.int64).max // 4
    c_min = np.minimum(np.where(has, a // chunk, big), np.where(has2, lo2 // max(right, 1), big))
    c_max = np.maximum(np.where(has, (hi - 1) // chunk, -1), np.where(has2, (hi2 - 1) // max(right, 1), -1))
    s = np.zeros_like(c_min) if left is None else np.clip((c_min - left) * chunk, 0, t)
    e = np.minimum(t, (c_max + 1) * chunk)
    if right:
        s2, e2 = n_real + np.minimum(ahead, c_min * right), n_real + np.minimum(ahead, (c_max + 1) * right)
    else:
        s2 = e2 = np.full_like(c_min, N)
    part = has | has2  # rows with a valid query in the block: the others count not
    rows = [part.any(0), np.where(part, s, big).min(0), np.where(part, e, 0).max(0),
            np.where(part, s2, big).min(0), np.where(part, e2, 0).max(0)]
    return windows_from_rows([int(v) for row in rows for v in row], N, block)


def kept_windows(owner: torch.Tensor, n_real: int, slot: torch.Tensor, slot2: torch.Tensor | None,
                 longest: torch.Tensor, left: int | None, block: int = ATTENTION_BLOCK) -> torch.Tensor:
    """The attention windows of a skipping pass's kept frames, on the device, from the gates alone:
    before the host knows how many frames the compaction keeps, so that their sizes and these come
    back in one read (`windows_from_rows`): the windows of the compacted frames (the kept real
    frames, valid ones first, then the kept copies).

    owner (B, N) the uncompacted frames' chunks (n_real real frames, then the copies), from a
    whole-utterance pass (positions 0..n_real-1: a valid frame's chunk is below n_real); slot (B,
    n_real) and slot2 (B, N - n_real) or None each frame's row in its compaction, -1 if skipped (the
    gates'); longest (1,) the most real frames a row keeps: where the kept copies start.
    -> (5, n) long rows (any valid query, s, e, s2, e2) for the n blocks of the largest compaction
    that could be. About 40 small ops: on a GPU a host read costs more (it empties the launch queue)."""
    B, N = owner.shape
    n = -(-N // block)
    if N == 0:
        return owner.new_zeros(5, 0)
    col = slot if slot2 is None else torch.cat([slot, torch.where(slot2 < 0, slot2, slot2 + longest)], 1)
    kept = col >= 0  # (B, N) each kept frame's column in the compaction
    blk = torch.where(kept, col // block, n)  # its query block; skipped frames go to block n, dropped
    c_min = owner.new_full((B, n + 1), PAD_POS).scatter_reduce(1, blk, owner, "amin")[:, :n]  # (B, n)
    c_max = owner.new_full((B, n + 1), -1).scatter_reduce(1, blk, owner, "amax")[:, :n]
    has = c_max >= 0  # the row has a kept frame in the block
    # kept frames before each chunk, real ones and copies: counted at owner + 1, summed up to each column
    W = n_real + 2  # columns 0..n_real (owners + 1) and a last one for padding's owner
    at = (owner + 1).clamp(max=W - 1) + (torch.arange(N, device=owner.device) >= n_real).long() * W
    before = owner.new_zeros(B, 2 * W).scatter_add_(1, at, kept.long()).view(B, 2, W).cumsum(2)
    before[:, 1].add_(longest)  # the kept copies' columns start after the longest row of real frames
    far = n_real if left is None else left  # without a left limit every real frame before is seen
    first, last = (c_min - far).clamp(0, W - 1), (c_max + 1).clamp(0, W - 1)
    index = torch.stack([torch.cat([first, last], 1), torch.cat([c_min.clamp(0, W - 1), last], 1)], 1)
    bounds = before.gather(2, index).view(B, 4, n)  # s, e, s2, e2 per row and block
    mins = torch.where(has[:, None], bounds, N).amin(0)  # (4, n): rows without a kept frame there count not
    maxs = torch.where(has[:, None], bounds, 0).amax(0)
    return torch.stack([has.any(0).long(), mins[0], maxs[1], mins[2], maxs[3]])


def windows_from_rows(values: list[int], n: int,
                      block: int = ATTENTION_BLOCK) -> list[tuple[int, int, int, int, int, int]]:
    """The rows (any valid query, s, e, s2, e2) of the blocks of `block` queries over n frames, as
    read from the device (a (5, blocks) tensor, flattened) -> the windows (a, b, s, e, s2, e2) of the
    blocks that hold a valid query."""
    k = len(values) // 5
    rows = [values[i * k: (i + 1) * k] for i in range(5)]
    return [(i * block, min((i + 1) * block, n), s, e, s2, e2)
            for i, (any_valid, s, e, s2, e2) in enumerate(zip(*rows)) if any_valid and i * block < n]


def lookahead_conv_index(owner: torch.Tensor, n_real: int, kernel: int) -> torch.Tensor | None:
    """(B, N - n_real, kernel) where each lookahead copy's causal depthwise conv reads its inputs, as
    columns of [K-1 frames before these (zeros at a stream's start, the conv cache in a step), the
    frames]: the copies of the same chunk before it, then the real frames up to its chunk's end.
    None without lookahead columns."""
    B, N = owner.shape
    if N == n_real:
        return None
    real, ahead = owner[:, :n_real].contiguous(), owner[:, n_real:].contiguous()
    q = torch.arange(N - n_real, device=owner.device)
    # counted by comparison, not searchsorted: ONNX has no searchsorted (sizes here are a step's frames,
    # or (T/2) x T flags in a whole-utterance pass)
    rank = q - (ahead[:, None, :] < ahead[:, :, None]).sum(-1)  # (B, T2) copies of the same chunk before it
    seen = (real[:, None, :] <= ahead[:, :, None]).sum(-1)  # (B, T2) real frames up to the end of its chunk
    back = torch.arange(kernel - 1, -1, -1, device=owner.device)  # tap k reads `back[k]` frames before
    from_ahead = (kernel - 1) + n_real + q[None, :, None] - back
    from_real = (kernel - 1) + seen[..., None] - (back - rank[..., None])
    index = torch.where(back <= rank[..., None], from_ahead, from_real)
    return index.clamp(0, kernel - 2 + N)


class ChunkedAttention(nn.Module):
    """Multi-head self-attention where a frame sees its own chunk, `left_chunks` before it and its
    chunk's lookahead copies.

    Queries are processed in blocks so memory is O(T * window), not O(T^2); each block
    rotates its queries and keys relative to the block's first query, so positions never
    grow with the stream length.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.h, self.e = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.chunk, self.left = cfg.chunk_size, cfg.left_chunks
        self.dropout = cfg.dropout
        self.rotary = cfg.positions == "rotary"  # absolute positions are added to the input instead
        self.register_buffer(
            "inv_freq", 1.0 / 10000 ** (torch.arange(0, self.e, 2).float() / self.e), persistent=False)

    def forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """x (B, N, D) on the plan's frames."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.h, self.e).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, E)
        pos, valid, owner, ahead = plan.frames.pos, plan.frames.valid, plan.owner, plan.frames.ahead()
        out = x.new_zeros(B, self.h, N, self.e)
        for a, b, s, e, s2, e2 in plan.windows:
            keys = slice(s, e) if s2 == e2 else torch.cat([torch.arange(s, e, device=x.device),
                                                           torch.arange(s2, e2, device=x.device)])
            out[:, :, a:b] = self._attend_block(q[:, :, a:b], k[:, :, keys], v[:, :, keys], owner[:, a:b],
                                                owner[:, keys], ahead[keys], pos[:, a:b], pos[:, keys],
                                                valid[:, a:b], valid[:, keys])
        return self.proj(out.transpose(1, 2).reshape(B, N, D))

    def forward_chunk(self, x: torch.Tensor, plan: Plan, cache: "KVCache") -> tuple[torch.Tensor, "KVCache"]:
        """One streaming step. x (B, N, D) the step's frames (plan.frames: real ones, then lookahead
        copies); cache holds up to W earlier real frames' un-rotated keys/values.
        -> (B, N, D) and the cache of the W most recent valid real frames."""
        B, N, D = x.shape
        f, n = plan.frames, plan.frames.n_real
        q, k, v = self.qkv(x).view(B, N, 3, self.h, self.e).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, E)
        k_all, v_all = torch.cat([cache.k, k], 2), torch.cat([cache.v, v], 2)  # (B, H, W + N, E)
        pk, vk = torch.cat([cache.pos, f.pos], 1), torch.cat([cache.valid, f.valid], 1)  # (B, W + N)
        W = cache.pos.shape[1]
        ck = torch.cat([torch.where(cache.valid, cache.pos // self.chunk,
                                    torch.full_like(cache.pos, PAD_POS // self.chunk)), plan.owner], 1)
        ak = torch.cat([torch.zeros(W, dtype=torch.bool, device=x.device), f.ahead()])
        out = self._attend_block(q, k_all, v_all, plan.owner, ck, ak, f.pos, pk, f.valid, vk)  # (B, H, N, E)
        keep = _last_valid(vk[:, : W + n], W)  # (B, W) indices of the newest valid real keys
        new = KVCache(k_all.gather(2, keep[:, None, :, None].expand(-1, self.h, -1, self.e)),
                      v_all.gather(2, keep[:, None, :, None].expand(-1, self.h, -1, self.e)),
                      pk.gather(1, keep), vk.gather(1, keep))
        return self.proj(out.transpose(1, 2).reshape(B, N, D)), new

    def _attend_block(self, q, k, v, cq, ck, ak, pq, pk, vq, vk) -> torch.Tensor:
        """Queries of chunks cq (B, Q) on keys of chunks ck (B, K), ak (K,) the lookahead keys: a query
        sees real keys of its chunk and `left` before, and lookahead keys of its own chunk."""
        allowed = ck[:, None, :] <= cq[:, :, None]  # (B, Q, K)
        if self.left is not None:
            allowed = allowed & (ck[:, None, :] >= cq[:, :, None] - self.left)
        allowed = ((ak & (ck[:, None, :] == cq[:, :, None])) | (~ak & allowed)) & vk[:, None, :]  # no bool Where in ORT
        allowed = allowed | ~vq[:, :, None]  # padding queries attend anywhere; their output is discarded
        if self.rotary:  # relative to the block's first valid query: rotary angles stay small
            base = torch.where(vq, pq, torch.full_like(pq, PAD_POS)).amin(1, keepdim=True)
            base = torch.where(base == PAD_POS, torch.zeros_like(base), base)
            pk = torch.where(vk, pk - base, torch.zeros_like(pk))
            pq = torch.where(vq, pq - base, torch.zeros_like(pq))
            q, k = rotary(q, pq, self.inv_freq), rotary(k, pk, self.inv_freq)
        # an additive mask rather than a boolean one: the ONNX exporter turns a boolean mask into Where and IsNaN
        # over every head's scores (11% of a full-context step on ONNX Runtime; the stages run about 10%
        # faster with this). Every row has an allowed key (a valid query sees itself), so no row is all -inf.
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias[:, None], dropout_p=self.dropout if self.training else 0.0)


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

    def forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm_in(x)), dim=-1)  # (B, N, D)
        n = plan.frames.n_real
        out = self.dw(F.pad(y[:, :n].transpose(1, 2), (self.left_pad, 0))).transpose(1, 2)  # causal: past only
        if plan.conv_index is not None:
            out = torch.cat([out, self._taps(torch.cat([y.new_zeros(y.shape[0], self.left_pad, y.shape[2]), y], 1),
                                             plan.conv_index)], 1)
        return self.drop(self.pw2(F.silu(self.norm(out))))

    def forward_chunk(self, x: torch.Tensor, plan: Plan, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, D) the step's frames (real ones, valid first, then lookahead copies); cache (B, K-1, D)
        the last K-1 valid real frames' conv inputs (zeros at the stream start, like the causal
        padding). -> (B, N, D), new cache."""
        y = F.glu(self.pw1(self.norm_in(x)), dim=-1)  # (B, N, D)
        n = plan.frames.n_real
        full = torch.cat([cache, y], 1)  # (B, K-1+N, D)
        out = self.dw(full[:, : self.left_pad + n].transpose(1, 2)).transpose(1, 2)  # (B, n, D)
        if plan.conv_index is not None:
            out = torch.cat([out, self._taps(full, plan.conv_index)], 1)
        held = torch.cat([torch.ones_like(cache[..., 0], dtype=torch.bool), plan.frames.valid[:, :n]], 1)
        keep = _last_valid(held, cache.shape[1])  # (B, K-1)
        new = full.gather(1, keep[:, :, None].expand(-1, -1, full.shape[2]))
        return self.drop(self.pw2(F.silu(self.norm(out)))), new

    def _taps(self, buf: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The depthwise conv at gathered inputs: buf (B, M, D), index (B, T, K) -> (B, T, D)."""
        B, T, K = index.shape
        taps = buf.gather(1, index.reshape(B, T * K, 1).expand(-1, -1, buf.shape[2])).view(B, T, K, -1)
        return torch.einsum("btkd,dk->btd", taps, self.dw.weight[:, 0]) + self.dw.bias


def _conv(module: ConvModule | None, x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """x plus the conv module's output (x itself for a layer without one)."""
    return x if module is None else x + module(x, plan)


def _conv_chunk(module: ConvModule | None, x: torch.Tensor, plan: Plan,
                cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The streaming form of _conv; a layer without a conv module passes its (unused) cache through."""
    if module is None:
        return x, cache
    c, cache = module.forward_chunk(x, plan, cache)
    return x + c, cache


class ConformerBlock(nn.Module):
    """Macaron FFN / attention / conv / FFN, pre-norm, residual."""

    def __init__(self, cfg: ModelConfig, conv: bool = True):
        super().__init__()
        self.ff1, self.ff2 = FeedForward(cfg), FeedForward(cfg)
        self.norm_att = nn.LayerNorm(cfg.d_model)
        self.att = ChunkedAttention(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg) if conv else None
        self.norm_out = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.att(self.norm_att(x), plan))
        x = _conv(self.conv, x, plan)
        x = self.norm_out(x + 0.5 * self.ff2(x))
        return x.masked_fill(~plan.frames.valid[:, :, None], 0.0)  # padding never feeds later frames

    def forward_chunk(self, x: torch.Tensor, plan: Plan, kv: KVCache,
                      conv: torch.Tensor) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        """The streaming form of forward: x (B, N, D) the step's frames -> (B, N, D) and new caches."""
        x = x + 0.5 * self.ff1(x)
        a, kv = self.att.forward_chunk(self.norm_att(x), plan, kv)
        x, conv = _conv_chunk(self.conv, x + self.drop(a), plan, conv)
        x = self.norm_out(x + 0.5 * self.ff2(x))
        return x.masked_fill(~plan.frames.valid[:, :, None], 0.0), kv, conv


class WhisperBlock(nn.Module):
    """Whisper's pre-LN block with a Conformer conv module between attention and FFN:
    x + att(LN x), + conv(x), + FFN(LN x). The conv module's output projection starts at
    zero, so a block with imported Whisper weights computes Whisper's block exactly."""

    def __init__(self, cfg: ModelConfig, conv: bool = True):
        super().__init__()
        self.norm_att = nn.LayerNorm(cfg.d_model)
        self.att = ChunkedAttention(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg) if conv else None
        if self.conv is not None:
            nn.init.zeros_(self.conv.pw2.weight)
            nn.init.zeros_(self.conv.pw2.bias)
        self.ff = FeedForward(cfg)

    def forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        x = x + self.drop(self.att(self.norm_att(x), plan))
        x = _conv(self.conv, x, plan)
        x = x + self.ff(x)
        return x.masked_fill(~plan.frames.valid[:, :, None], 0.0)

    def forward_chunk(self, x: torch.Tensor, plan: Plan, kv: KVCache,
                      conv: torch.Tensor) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        a, kv = self.att.forward_chunk(self.norm_att(x), plan, kv)
        x, conv = _conv_chunk(self.conv, x + self.drop(a), plan, conv)
        x = x + self.ff(x)
        return x.masked_fill(~plan.frames.valid[:, :, None], 0.0), kv, conv


def make_block(cfg: ModelConfig, layer: int) -> nn.Module:
    """Layer `layer` (1-based) of the stack."""
    return (WhisperBlock if cfg.block == "whisper" else ConformerBlock)(cfg, conv=cfg.has_conv(layer))
