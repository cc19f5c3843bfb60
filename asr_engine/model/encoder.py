"""Conformer/CTC encoder with intermediate factorized-CTC heads and blank-triggered layer skipping."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asr_engine.kernels import REFERENCE, SkipOps, factorized_log_probs
from asr_engine.model.config import PAD_POS, ModelConfig, SkipOptions
from asr_engine.model.layers import Subsampling, make_block, sinusoids, split_layers, stack_layers
from asr_engine.model.streaming import StreamState

__all__ = ["HeadOutput", "EncoderOutput", "SkipOptions", "Encoder", "factorized_log_probs", "run_chunk"]


@dataclass(frozen=True)
class HeadOutput:
    """One CTC head's output. raw: (B, T, V), raw[..., 0] = z the non-blank logit,
    raw[..., 1:] = token logits."""

    raw: torch.Tensor

    def log_probs(self) -> torch.Tensor:  # (B, T, V)
        return factorized_log_probs(self.raw)

    def blank_prob(self) -> torch.Tensor:  # (B, T)
        return torch.sigmoid(-self.raw[..., 0])


@dataclass(frozen=True)
class EncoderOutput:
    """final: the last head (skipped frames carry the gating head's output);
    intermediate: {layer: head}; lengths: (B,) valid frames; top_mask: (B, T) frames
    that ran the top layers; unskipped: when asked for in a skipping forward pass, the
    final head with every frame through the top layers (no gradient), a teacher for training;
    hidden: when asked for (without skipping), the last layer's output after the final head's
    LayerNorm (B, T, D): for Whisper-initialized models, what Whisper's encoder outputs."""

    final: HeadOutput
    intermediate: dict[int, HeadOutput]
    lengths: torch.Tensor
    top_mask: torch.Tensor
    unskipped: HeadOutput | None = None
    hidden: torch.Tensor | None = None

    def top_fraction(self) -> torch.Tensor:
        """(B,) fraction of each utterance's frames that ran the top layers."""
        return self.top_mask.sum(1) / self.lengths.clamp(min=1)


def run_chunk(cfg: ModelConfig, state: StreamState, n_valid: torch.Tensor, skip: SkipOptions | None,
              bottom, top, ops: SkipOps = REFERENCE) -> tuple[EncoderOutput, StreamState]:
    """One streaming step around the model's two halves: bottom(caches) runs the lower layers
    -> (x, pos, valid, heads, new caches); the blank gate picks the frames to keep; top(y, pos,
    valid, caches) runs the upper layers on the compacted kept frames only -> (final raw, new
    caches). Caches are stacked per stage (StreamState.stage). If no frame is kept, the top
    layers and their caches rest."""
    S = cfg.skip_layer
    x, pos, valid, heads, new_bottom = bottom(state.stage(0, S))
    gate = heads[S]
    threshold, dilation = (1.0, 0) if skip is None else (skip.threshold, skip.dilation)
    c = ops.gate_compact(gate.raw, x, n_valid, threshold, dilation, cfg.chunk_size)
    new_top = state.stage(S, cfg.n_layers)
    if c.x.shape[1] == 0:
        final = gate.raw
    else:
        pos_c = torch.where(c.valid, pos.gather(1, c.index), torch.full_like(c.index, PAD_POS))
        y, new_top = top(c.x, pos_c, c.valid, new_top)
        final = ops.scatter_back(gate.raw, y, c)
    new = StreamState.from_stages(new_bottom, new_top, state.offset + n_valid)
    return EncoderOutput(HeadOutput(final), heads, n_valid, c.keep), new


class CTCHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return HeadOutput(self.out(self.norm(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.feat_dim))
        self.register_buffer("feat_istd", torch.ones(cfg.feat_dim))
        self.subsampling = Subsampling(cfg)
        self.layers = nn.ModuleList(make_block(cfg) for _ in range(cfg.n_layers))
        self.heads = nn.ModuleDict({str(i): CTCHead(cfg) for i in cfg.intermediate_layers})
        self.final_head = CTCHead(cfg)
        self.ops = REFERENCE  # the skipping path's ops; an inference engine may pick the Triton ones

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor,
                skip: SkipOptions | None = None, teacher: bool = False, hidden: bool = False,
                pos_offset: torch.Tensor | None = None) -> EncoderOutput:
        """feats (B, T_in, F), feat_lengths (B,) -> EncoderOutput over T encoder frames.

        With `skip`, frames the gating head calls blank (P > threshold, dilated) bypass
        layers skip_layer+1.. : they are removed from the sequence, the top layers run
        on the compacted sequence only, and the results are scattered back. With `teacher`
        too, the top layers also run on every frame, without gradient (`unskipped`).
        With `hidden` and no `skip`, the output carries the final LayerNorm's output. pos_offset (B,)
        starts each utterance's absolute positions there instead of at 0 (training: a stream's
        later utterances and the wrap at position_period).
        """
        x, lengths = self.subsampling(self.normalize(feats), feat_lengths)
        B, T, _ = x.shape
        pos = torch.arange(T, device=x.device).expand(B, T)  # (B, T)
        valid = pos < lengths[:, None]
        at = pos if pos_offset is None else pos + pos_offset[:, None]
        x = self.embed_positions(x, at).masked_fill(~valid[:, :, None], 0.0)
        heads: dict[int, HeadOutput] = {}
        windows = self.layers[0].att.windows(pos, valid)  # shared by every layer on these frames
        for i, layer in enumerate(self.layers[: self.cfg.skip_layer], start=1):
            x = layer(x, pos, valid, windows)
            if str(i) in self.heads:
                heads[i] = self.heads[str(i)](x)
        gate = heads[self.cfg.skip_layer]
        if skip is None:
            h = self.final_head.norm(self._top(x, pos, valid, windows))  # (B, T, D)
            return EncoderOutput(HeadOutput(self.final_head.out(h)), heads, lengths, valid,
                                 hidden=h if hidden else None)
        unskipped = None
        if teacher:
            with torch.no_grad():
                unskipped = HeadOutput(self.final_head(self._top(x, pos, valid, windows)).raw)
        c = self.ops.gate_compact(gate.raw, x, lengths, skip.threshold, skip.dilation, self.cfg.chunk_size)
        final = gate.raw
        if c.x.shape[1] > 0:
            pos_c = torch.where(c.valid, c.index, torch.full_like(c.index, PAD_POS))
            y = self.final_head(self._top(c.x, pos_c, c.valid)).raw
            final = self.ops.scatter_back(gate.raw, y, c)
        return EncoderOutput(HeadOutput(final), heads, lengths, c.keep, unskipped)

    def forward_chunk(self, feats: torch.Tensor, n_valid: torch.Tensor, state: StreamState,
                      skip: SkipOptions | None = None) -> tuple[EncoderOutput, StreamState]:
        """One streaming step over C encoder frames per stream (C a multiple of chunk_size).

        feats (B, stride * C + receptive_field - stride, F): the feature window whose
        subsampling yields exactly the next C frames (consecutive windows overlap by
        receptive_field - stride frames); n_valid (B,) how many of the C frames are real
        (fewer at a stream's end; 0 for a stream with nothing to do). Returns the chunk's
        EncoderOutput (lengths = n_valid) and the new state; `state` is not modified.
        Equal to `forward` over the whole stream, frame for frame, skipping included.
        """
        cfg, sub = self.cfg, self.subsampling
        C = (feats.shape[1] - sub.input_frames(0)) // sub.stride
        if C <= 0 or C % cfg.chunk_size or feats.shape[1] != sub.input_frames(C):
            raise ValueError(f"forward_chunk needs stride * C + {sub.input_frames(0)} feature "
                             f"frames with C a multiple of chunk_size={cfg.chunk_size}, got {feats.shape[1]}")
        return run_chunk(cfg, state, n_valid, skip,
                         lambda caches: self.chunk_bottom(feats, n_valid, state.offset, caches), self.chunk_top,
                         self.ops)

    def chunk_bottom(self, feats: torch.Tensor, n_valid: torch.Tensor, offset: torch.Tensor, caches: tuple):
        """The streaming step's lower half: subsampling and layers 1..skip_layer with their heads.
        caches: the stage's stacked caches (StreamState.stage) -> x (B, C, D), pos (B, C),
        valid (B, C), {layer: head}, the new stacked caches."""
        x = self.subsampling._run(self.normalize(feats))  # (B, C, D)
        B, C = x.shape[0], x.shape[1]
        local = torch.arange(C, device=x.device).expand(B, C)  # (B, C)
        valid = local < n_valid[:, None]
        pos = offset[:, None] + local  # (B, C) timeline positions
        x = self.embed_positions(x, pos).masked_fill(~valid[:, :, None], 0.0)
        kv, conv = [], []
        heads: dict[int, HeadOutput] = {}
        for i, (c_kv, c_conv) in enumerate(split_layers(*caches)):
            x, c_kv, c_conv = self.layers[i].forward_chunk(x, pos, valid, c_kv, c_conv)
            kv.append(c_kv)
            conv.append(c_conv)
            if str(i + 1) in self.heads:
                heads[i + 1] = self.heads[str(i + 1)](x)
        return x, pos, valid, heads, stack_layers(kv, conv)

    def chunk_top(self, y: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, caches: tuple):
        """The streaming step's upper half on the kept frames y (B, T', D) (valid ones first):
        the top layers and the final head. -> final raw (B, T', V), the new stacked caches."""
        kv, conv = [], []
        for i, (c_kv, c_conv) in enumerate(split_layers(*caches), start=self.cfg.skip_layer):
            y, c_kv, c_conv = self.layers[i].forward_chunk(y, pos, valid, c_kv, c_conv)
            kv.append(c_kv)
            conv.append(c_conv)
        return self.final_head(y).raw, stack_layers(kv, conv)

    def embed_positions(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) + Whisper's sinusoids at timeline positions pos (B, T) for absolute positions;
        rotary positions are applied inside attention instead."""
        if self.cfg.positions != "absolute":
            return x
        if self.cfg.position_period is not None:
            pos = pos % self.cfg.position_period
        return x + sinusoids(pos, self.cfg.d_model).to(x.dtype)

    def floor(self, feats: torch.Tensor) -> torch.Tensor:
        """Clamp log-mel features to the model's noise floor (digital silence sits at log(eps) ~ -15.9,
        far below any recorded room or line noise; the floor makes both look alike)."""
        return feats if self.cfg.feat_floor is None else feats.clamp(min=self.cfg.feat_floor)

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """Floored, mean/variance-normalized features: what the subsampling sees."""
        return (self.floor(feats) - self.feat_mean) * self.feat_istd

    def _top(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, windows=None) -> torch.Tensor:
        if windows is None:
            windows = self.layers[0].att.windows(pos, valid)
        for layer in self.layers[self.cfg.skip_layer:]:
            x = layer(x, pos, valid, windows)
        return x
