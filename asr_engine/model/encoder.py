"""Conformer/CTC encoder with intermediate factorized-CTC heads and blank-triggered layer skipping."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from asr_engine.kernels import REFERENCE, Compacted, Gated, SkipOps, factorized_log_probs, host_sizes
from asr_engine.model.config import PAD_POS, ModelConfig, SkipOptions
from asr_engine.model.layers import (Frames, Plan, Subsampling, kept_windows, make_block, make_plan, sinusoids,
                                     split_layers, stack_layers, windows_from_rows)
from asr_engine.model.streaming import StreamState

__all__ = ["HeadOutput", "EncoderOutput", "SkipOptions", "Encoder", "factorized_log_probs", "start_chunk",
           "finish_chunk"]


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
    LayerNorm (B, T, D): for Whisper-initialized models, what Whisper's encoder outputs;
    top_out: when asked for, the last layer's output before any LayerNorm (B, T, D), zero on the
    frames that skipped the top layers (a second pass reads it)."""

    final: HeadOutput
    intermediate: dict[int, HeadOutput]
    lengths: torch.Tensor
    top_mask: torch.Tensor
    unskipped: HeadOutput | None = None
    hidden: torch.Tensor | None = None
    top_out: torch.Tensor | None = None

    def top_fraction(self) -> torch.Tensor:
        """(B,) fraction of each utterance's frames that ran the top layers."""
        return self.top_mask.sum(1) / self.lengths.clamp(min=1)


@dataclass(frozen=True)
class ChunkStart:
    """A streaming step's lower half and its gates, all on the device: what its upper half needs.
    x (B, N, D) the skip layer's output on frames (the C real frames, then the lookahead copies);
    heads {layer: head on the real frames}; gate_raw (B, N, V); new_bottom the lower stage's new
    caches; n_out (B,) the valid output frames; gated the gates of the real frames and of the copies
    (none without skipping; the host reads their sizes, `host_sizes(*gated)`, before `finish_chunk`)."""

    x: torch.Tensor
    frames: Frames
    heads: dict[int, HeadOutput]
    gate_raw: torch.Tensor
    new_bottom: tuple
    n_out: torch.Tensor
    gated: tuple[Gated, ...]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of it, in a fixed order (`from_tensors` rebuilds it): a captured graph's outputs."""
        return [self.x, self.frames.pos, self.frames.valid, *(h.raw for _, h in sorted(self.heads.items())),
                self.gate_raw, *self.new_bottom, self.n_out,
                *(getattr(g, f.name) for g in self.gated for f in fields(g))]

    def from_tensors(self, ts: list[torch.Tensor]) -> "ChunkStart":
        """This start's structure over other tensors (as `tensors` lists them)."""
        it = iter(ts)
        x, frames = next(it), Frames(next(it), next(it), self.frames.n_real)
        heads = {k: HeadOutput(next(it)) for k in sorted(self.heads)}
        gate_raw, new_bottom, n_out = next(it), tuple(next(it) for _ in self.new_bottom), next(it)
        gated = tuple(Gated(*(next(it) for _ in fields(Gated))) for _ in self.gated)
        return ChunkStart(x, frames, heads, gate_raw, new_bottom, n_out, gated)


def start_chunk(cfg: ModelConfig, state: StreamState, n_valid: torch.Tensor, skip: SkipOptions | None,
                bottom, ops: SkipOps = REFERENCE) -> ChunkStart:
    """One streaming step around the model's two halves, up to its host read (`finish_chunk` does the
    rest): bottom(caches) runs the lower layers -> (x, frames, heads, gate raw, new caches) on the
    step's real frames and lookahead copies; with `skip` the blank gates pick the frames to keep, and
    the host reads how many (`host_sizes(*start.gated)`); top(y, frames, caches) then runs the upper
    layers on the compacted kept frames only -> (final raw of the real ones, their last-layer output,
    new caches). Without `skip` the top layers run on the step's frames as they are (nothing is gated,
    and the host reads nothing mid-step). Caches are stacked per stage (StreamState.stage). If no frame
    is kept, the top layers and their caches rest. n_valid (B,) counts the valid frames of the step's
    C + right_context; C of them are output."""
    x, frames, heads, gate_raw, new_bottom = bottom(state.stage(0, cfg.skip_layer))
    n_out = n_valid.clamp(max=frames.n_real)
    gated = () if skip is None else gates(ops, gate_raw, frames, n_out, skip, cfg)
    return ChunkStart(x, frames, heads, gate_raw, new_bottom, n_out, gated)


def finish_chunk(cfg: ModelConfig, start: ChunkStart, state: StreamState, skip: SkipOptions | None, top,
                 ops: SkipOps = REFERENCE, hidden: bool = False,
                 sizes: list[int] = ()) -> tuple[EncoderOutput, StreamState]:
    """A streaming step after its host read (see `start_chunk`). sizes, with `skip`: the compactions'
    row counts, each at least what the host read of the gates (`host_sizes`); larger ones pad the
    compaction with invalid rows and change no output, only the contents of cache slots flagged
    invalid (a captured graph takes a few fixed sizes). With `hidden`, the output carries the last
    layer's output of the real frames (top_out)."""
    x, frames, gate_raw, n_out = start.x, start.frames, start.gate_raw, start.n_out
    n = frames.n_real
    new_top = state.stage(cfg.skip_layer, cfg.n_layers)
    if skip is None:  # every valid frame runs the top layers in place: no gate, no compaction, no host read
        y, y_out, new_top = top(x, frames, new_top)
        keep = frames.valid[:, :n]  # a step's valid frames come first: these are the first n_out
        final = torch.where(keep[:, :, None], y, gate_raw[:, :n])  # the frames after them, as compacted steps
        top_out = y_out if hidden else None
    else:
        c, c2 = gather_both(ops, x, n, start.gated, list(sizes))
        keep, final = c.keep, gate_raw[:, :n]
        top_out = x.new_zeros(x.shape[0], n, x.shape[2]) if hidden else None  # (B, C, D)
        if c.x.shape[1] > 0:  # lookahead copies only serve kept real frames
            y, y_out, new_top = top(*kept_frames(c, c2, frames), new_top)
            final = ops.scatter_back(final, y, c)
            if hidden:  # y_out is a view when lookahead copies follow
                top_out = ops.scatter_back(top_out, y_out.contiguous(), c)
    new = StreamState.from_stages(start.new_bottom, new_top, state.offset + n_out)
    return EncoderOutput(HeadOutput(final), start.heads, n_out, keep, top_out=top_out), new


def gates(ops: SkipOps, gate_raw: torch.Tensor, frames: Frames, lengths: torch.Tensor, skip: SkipOptions,
          cfg: ModelConfig) -> tuple[Gated, ...]:
    """The blank gate on the real frames (dilation within chunks) and, when there are lookahead copies,
    on them (dilation within each chunk's copies), on the device: nothing is read yet. lengths (B,)
    the valid real frames."""
    n = frames.n_real
    g = ops.gate_scan(gate_raw[:, :n], lengths, skip.threshold, skip.dilation, cfg.chunk_size)
    if gate_raw.shape[1] == n:
        return (g,)
    # each chunk's copies follow the chunk before's (right_context <= chunk_size): valid ones first
    return g, ops.gate_scan(gate_raw[:, n:], frames.valid[:, n:].sum(1), skip.threshold, skip.dilation,
                            cfg.right_context)


def gather_both(ops: SkipOps, x: torch.Tensor, n: int, gated: tuple[Gated, ...],
                sizes: list[int]) -> tuple[Compacted, Compacted | None]:
    """x (B, N, D) (n real frames, then the copies) compacted by the gates, sized by the host's read of
    `host_sizes(*gated)` -> kept real frames, kept copies (None without)."""
    if len(gated) == 1:
        return ops.gather(x, gated[0], sizes[0]), None
    return ops.gather(x[:, :n], gated[0], sizes[0]), ops.gather(x[:, n:], gated[1], sizes[1])


def kept_frames(c: Compacted, c2: Compacted | None, frames: Frames) -> tuple[torch.Tensor, Frames]:
    """The kept real frames then the kept copies, as the top layers' input and frames."""
    pos = frames.pos
    pos_c = torch.where(c.valid, pos[:, : frames.n_real].gather(1, c.index), torch.full_like(c.index, PAD_POS))
    if c2 is None:
        return c.x, Frames(pos_c, c.valid, c.x.shape[1])
    pos_a = torch.where(c2.valid, pos[:, frames.n_real:].gather(1, c2.index), torch.full_like(c2.index, PAD_POS))
    return (torch.cat([c.x, c2.x], 1),
            Frames(torch.cat([pos_c, pos_a], 1), torch.cat([c.valid, c2.valid], 1), c.x.shape[1]))


class CTCHead(nn.Module):
    """LayerNorm -> (+ residual GELU MLP, with cfg.head_hidden) -> linear to the vocabulary."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.mlp = None
        if cfg.head_hidden:
            self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.head_hidden), nn.GELU(),
                                     nn.Linear(cfg.head_hidden, cfg.d_model))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return HeadOutput(self.logits(self.norm(x)))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The normalized input h (B, T, D) -> raw outputs (B, T, V)."""
        return self.out(h if self.mlp is None else h + self.mlp(h))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.feat_dim))
        self.register_buffer("feat_istd", torch.ones(cfg.feat_dim))
        self.subsampling = Subsampling(cfg)
        self.layers = nn.ModuleList(make_block(cfg, i) for i in range(1, cfg.n_layers + 1))
        self.heads = nn.ModuleDict({str(i): CTCHead(cfg) for i in cfg.intermediate_layers})
        self.final_head = CTCHead(cfg)
        self.ops = REFERENCE  # the skipping path's ops; an inference engine may pick the Triton ones

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor,
                skip: SkipOptions | None = None, teacher: bool = False, hidden: bool = False,
                pos_offset: torch.Tensor | None = None, host_lengths: list[int] | None = None) -> EncoderOutput:
        """feats (B, T_in, F), feat_lengths (B,) -> EncoderOutput over T encoder frames.

        With `skip`, frames the gating head calls blank (P > threshold, dilated) bypass
        layers skip_layer+1.. : they are removed from the sequence, the top layers run
        on the compacted sequence only, and the results are scattered back. With `teacher`
        too, the top layers also run on every frame, without gradient (`unskipped`).
        With `hidden`, the output carries the last layer's output (top_out; zero on skipped frames) and,
        without `skip`, the final LayerNorm's output (hidden). pos_offset (B,)
        starts each utterance's absolute positions there instead of at 0 (training: a stream's
        later utterances and the wrap at position_period). host_lengths: feat_lengths as the host
        knows them, from which the attention plan is made; without them they are read from the device
        (on a GPU a sync: the engine, training and the benches pass them).
        """
        x, frames, lengths = self.embed(feats, feat_lengths, pos_offset)
        if host_lengths is None:
            host_lengths = feat_lengths.tolist()
        elif len(host_lengths) != feats.shape[0]:
            raise ValueError(f"{len(host_lengths)} host lengths for a batch of {feats.shape[0]}")
        plan = make_plan(self.cfg, frames, [self.cfg.output_length(n) for n in host_lengths])  # shared by every layer
        x, heads, gate_raw = self._bottom(x, plan)
        return self.forward_top(x, plan, lengths, heads, gate_raw, skip, teacher, hidden)

    def embed(self, feats: torch.Tensor, feat_lengths: torch.Tensor,
              pos_offset: torch.Tensor | None = None) -> tuple[torch.Tensor, Frames, torch.Tensor]:
        """The stem and positions: feats (B, T_in, F) -> the first layer's input (B, N, D) on its frames
        (T real, then the lookahead copies) and the (B,) valid real frames."""
        x, lengths = self.subsampling(self.normalize(feats), feat_lengths)
        B, T, _ = x.shape
        pos = torch.arange(T, device=x.device).expand(B, T)  # (B, T)
        valid = pos < lengths[:, None]
        at = pos if pos_offset is None else pos + pos_offset[:, None]
        x = self.embed_positions(x, at).masked_fill(~valid[:, :, None], 0.0)
        x, frames = self.with_lookahead(x, Frames(pos, valid, T), -(-T // self.cfg.chunk_size))
        return x, frames, lengths

    def forward_top(self, x: torch.Tensor, plan: Plan, lengths: torch.Tensor, heads: dict[int, HeadOutput],
                    gate_raw: torch.Tensor, skip: SkipOptions | None = None, teacher: bool = False,
                    hidden: bool = False, frozen: tuple[int, torch.Tensor] | None = None) -> EncoderOutput:
        """`forward` from the skip layer's output x on plan's frames, its heads and the gate's raw output.
        frozen (k, x_k): layers skip_layer+1..k are frozen and x_k (B, N, D) is their output on these
        frames (training from cached outputs): they run, without gradient, only on the compacted
        frames of a skipping pass."""
        T = plan.frames.n_real
        if skip is None:
            y = self._top(x, plan, frozen)[:, :T]  # (B, T, D)
            h = self.final_head.norm(y)
            return EncoderOutput(HeadOutput(self.final_head.logits(h)), heads, lengths, plan.frames.valid[:, :T],
                                 hidden=h if hidden else None, top_out=y if hidden else None)
        unskipped = None
        if teacher:
            with torch.no_grad():
                unskipped = HeadOutput(self.final_head(self._top(x, plan, frozen)[:, :T]).raw)
        gated = gates(self.ops, gate_raw, plan.frames, lengths, skip, self.cfg)
        # the kept frames' attention plan is computed from the gates too: one host read for both
        slot2 = gated[1].slot if len(gated) > 1 else None
        rows = kept_windows(plan.owner, T, gated[0].slot, slot2, gated[0].longest, self.cfg.left_chunks)
        read = host_sizes(*gated, extra=rows)
        c, c2 = gather_both(self.ops, x, T, gated, read[: len(gated)])
        final = gate_raw[:, :T]
        top_out = x.new_zeros(x.shape[0], T, x.shape[2]) if hidden else None  # (B, T, D)
        if c.x.shape[1] > 0:
            y, kept = kept_frames(c, c2, plan.frames)
            windows = windows_from_rows(read[len(gated):], y.shape[1])
            kept_plan = replace(make_plan(self.cfg, kept), windows=windows)
            y = self._top(y, kept_plan, None if frozen is None else (frozen[0], None))
            final = self.ops.scatter_back(final, self.final_head(y[:, : kept.n_real]).raw, c)
            if hidden:
                top_out = self.ops.scatter_back(top_out, y[:, : kept.n_real].contiguous(), c)
        return EncoderOutput(HeadOutput(final), heads, lengths, c.keep, unskipped, top_out=top_out)

    def with_lookahead(self, x: torch.Tensor, frames: Frames, n_chunks: int, source: torch.Tensor | None = None,
                       source_frames: Frames | None = None) -> tuple[torch.Tensor, Frames]:
        """Append the lookahead copies of `n_chunks` chunks to real frames x (B, T, D) (frames.n_real = T):
        chunk j's copies are columns (j + 1) * chunk_size + r, r < right_context, of `source` (default
        x itself; a streaming step's source also holds the right context after its chunks)."""
        R, T = self.cfg.right_context, frames.n_real
        if R == 0:
            return x, frames
        if source is None:
            source, source_frames = x, frames
        at = ((torch.arange(n_chunks, device=x.device) + 1) * self.cfg.chunk_size)[:, None]
        at = (at + torch.arange(R, device=x.device)).flatten()  # (n_chunks * R,) columns of source
        inside = at < source.shape[1]
        at = at.clamp(max=max(source.shape[1] - 1, 0))
        valid = source_frames.valid[:, at] & inside
        copies = source[:, at].masked_fill(~valid[:, :, None], 0.0)
        return (torch.cat([x, copies], 1),
                Frames(torch.cat([frames.pos, source_frames.pos[:, at]], 1), torch.cat([frames.valid, valid], 1), T))

    def _bottom(self, x: torch.Tensor, plan: Plan) -> tuple[torch.Tensor, dict[int, HeadOutput], torch.Tensor]:
        """Layers 1..skip_layer -> their output, {layer: head on the real frames}, the gating head's raw
        output on every frame (lookahead copies included)."""
        heads: dict[int, HeadOutput] = {}
        n = plan.frames.n_real
        for i, layer in enumerate(self.layers[: self.cfg.skip_layer], start=1):
            x = layer(x, plan)
            if str(i) in self.heads:
                heads[i] = self.head_after(i, x, n)
        return x, heads, self.split_gate(heads, n)

    def head_after(self, layer: int, x: torch.Tensor, n: int) -> HeadOutput:
        """The head after `layer` on that layer's output x (B, N, D): the gate's on every frame (the
        lookahead copies are gated too), any other's on the n real frames."""
        return self.heads[str(layer)](x if layer == self.cfg.skip_layer else x[:, :n])

    def split_gate(self, heads: dict[int, HeadOutput], n: int) -> torch.Tensor:
        """Keep the gate head's output on the n real frames in `heads`; -> its raw output on every frame."""
        gate_raw = heads[self.cfg.skip_layer].raw
        heads[self.cfg.skip_layer] = HeadOutput(gate_raw[:, :n])
        return gate_raw

    def forward_chunk(self, feats: torch.Tensor, n_valid: torch.Tensor, state: StreamState,
                      skip: SkipOptions | None = None, hidden: bool = False) -> tuple[EncoderOutput, StreamState]:
        """One streaming step over C encoder frames per stream (C a multiple of chunk_size).

        feats (B, input_frames(C + right_context), F): the feature window whose subsampling yields
        exactly the next C frames and the right context after them (consecutive windows start
        stride * C feature frames apart); n_valid (B,) how many of those C + right_context frames
        are real (fewer at a stream's end; 0 for a stream with nothing to do). Returns the chunk's
        EncoderOutput (lengths = min(n_valid, C)) and the new state; `state` is not modified.
        Equal to `forward` over the whole stream, frame for frame, skipping included. With `hidden`,
        the output carries the last layer's output (top_out), as `forward`'s does.
        """
        start = self.step_start(feats, n_valid, state, skip)
        sizes = host_sizes(*start.gated) if start.gated else []  # the step's one host read, with skipping
        return self.step_finish(start, state, skip, hidden, sizes)

    def step_start(self, feats: torch.Tensor, n_valid: torch.Tensor, state: StreamState,
                   skip: SkipOptions | None = None) -> ChunkStart:
        """`forward_chunk` up to its host read (see `start_chunk`); nothing here reads the device."""
        cfg, sub = self.cfg, self.subsampling
        C = (feats.shape[1] - sub.input_frames(0)) // sub.stride - cfg.right_context
        if C <= 0 or C % cfg.chunk_size or feats.shape[1] != cfg.input_frames(C + cfg.right_context):
            raise ValueError(f"forward_chunk needs stride * (C + {cfg.right_context}) + {sub.input_frames(0)} "
                             f"feature frames with C a multiple of chunk_size={cfg.chunk_size}, "
                             f"got {feats.shape[1]}")
        return start_chunk(cfg, state, n_valid, skip,
                           lambda caches: self.chunk_bottom(feats, n_valid, state.offset, caches), self.ops)

    def step_finish(self, start: ChunkStart, state: StreamState, skip: SkipOptions | None = None,
                    hidden: bool = False, sizes: list[int] = ()) -> tuple[EncoderOutput, StreamState]:
        """`forward_chunk` after its host read (see `finish_chunk`); nothing here reads the device."""
        return finish_chunk(self.cfg, start, state, skip, self.chunk_top, self.ops, hidden, sizes)

    def chunk_bottom(self, feats: torch.Tensor, n_valid: torch.Tensor, offset: torch.Tensor, caches: tuple):
        """The streaming step's lower half: subsampling and layers 1..skip_layer with their heads.
        caches: the stage's stacked caches (StreamState.stage) -> x (B, N, D) on frames (the C real
        frames, then the lookahead copies), the frames, {layer: head on the real frames}, the gating
        head's raw output on all N, the new stacked caches."""
        x = self.subsampling._run(self.normalize(feats))  # (B, C + R, D)
        B, C = x.shape[0], x.shape[1] - self.cfg.right_context
        local = torch.arange(x.shape[1], device=x.device).expand(B, -1)  # (B, C + R)
        valid = local < n_valid[:, None]
        pos = offset[:, None] + local  # (B, C + R) timeline positions
        x = self.embed_positions(x, pos).masked_fill(~valid[:, :, None], 0.0)
        x, frames = self.with_lookahead(x[:, :C], Frames(pos[:, :C], valid[:, :C], C), C // self.cfg.chunk_size,
                                        x, Frames(pos, valid, C))
        plan = make_plan(self.cfg, frames)
        kv, conv = [], []
        heads: dict[int, HeadOutput] = {}
        for i, (c_kv, c_conv) in enumerate(split_layers(*caches)):
            x, c_kv, c_conv = self.layers[i].forward_chunk(x, plan, c_kv, c_conv)
            kv.append(c_kv)
            conv.append(c_conv)
            if str(i + 1) in self.heads:
                heads[i + 1] = self.head_after(i + 1, x, C)
        gate_raw = self.split_gate(heads, C)
        return x, frames, heads, gate_raw, stack_layers(kv, conv)

    def chunk_top(self, y: torch.Tensor, frames: Frames, caches: tuple):
        """The streaming step's upper half on the kept frames y (B, N', D) (kept real frames, valid
        ones first, then kept lookahead copies): the top layers and the final head. -> final raw of
        the real frames (B, frames.n_real, V), their last-layer output (B, frames.n_real, D), the new
        stacked caches."""
        plan = make_plan(self.cfg, frames)
        kv, conv = [], []
        for i, (c_kv, c_conv) in enumerate(split_layers(*caches), start=self.cfg.skip_layer):
            y, c_kv, c_conv = self.layers[i].forward_chunk(y, plan, c_kv, c_conv)
            kv.append(c_kv)
            conv.append(c_conv)
        y = y[:, : frames.n_real]
        return self.final_head(y).raw, y, stack_layers(kv, conv)

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

    def _top(self, x: torch.Tensor, plan: Plan, frozen: tuple[int, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Layers skip_layer+1..n_layers on x. frozen (k, x_k): layers up to k are frozen; x_k is their
        output (None: computed here without gradient)."""
        start = self.cfg.skip_layer
        if frozen is not None:
            k, x_k = frozen
            if x_k is None:
                with torch.no_grad():
                    for layer in self.layers[start:k]:
                        x = layer(x, plan)
                x_k = x
            x, start = x_k, k
        for layer in self.layers[start:]:
            x = layer(x, plan)
        return x
