"""Training above frozen layers from their cached outputs.

When the stem and layers 1..k of a model stay as imported (a pretrained encoder that already
hears real voices), their outputs do not change during training: computing them once per
utterance and reading them back makes each step run only what learns (layers k+1.. and the
heads). The cache holds, per utterance, the outputs of every layer with a CTC head at or
below the skip layer and of layer k, on the utterance's real frames followed by its
lookahead copies, in the streaming layout of the model (chunks, left context, right
context), as float16 rows of one memory-mapped array per layer. Each utterance gets one
absolute-position offset, drawn when the cache is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from asr_engine.data.loader import FeatureSet, bucket_batches, collate, time_spans
from asr_engine.model.encoder import Encoder, EncoderOutput, SkipOptions
from asr_engine.model.layers import Frames, make_plan

__all__ = ["CacheMask", "FrozenCache", "frozen_digest", "frozen_modules", "mask_cached"]


@dataclass(frozen=True)
class CacheMask:
    """SpecAugment for training from the cache (its input masks cannot apply: the features are behind the frozen
    layers): n_time spans of up to time_frac of each utterance's frames, and a channel_frac share of each
    utterance's channels, replaced in every cached layer's output by that layer's mean over the batch's frames."""
    n_time: int = 4
    time_frac: float = 0.05
    channel_frac: float = 0.0

    def __post_init__(self):
        if self.n_time < 0 or not 0.0 <= self.time_frac < 1.0 or not 0.0 <= self.channel_frac < 1.0:
            raise ValueError(f"cache_mask: n_time >= 0, time_frac and channel_frac in [0, 1), got {self}")


def mask_cached(xs: dict[int, torch.Tensor], frames: Frames, lengths: torch.Tensor, mask: CacheMask,
                gen: torch.Generator) -> dict[int, torch.Tensor]:
    """`mask` applied to cached outputs {layer: (B, N, D)} laid out as `FrozenCache.batch` returns them: a masked
    time span covers the frames' rows and their lookahead copies alike (rows are matched by frames.pos), and all
    layers lose the same frames. The spans are drawn on the CPU from `gen`."""
    B = frames.pos.shape[0]
    t0, tw = time_spans(lengths.cpu(), mask.n_time, mask.time_frac, gen)
    pos = frames.pos.cpu()[..., None]  # (B, N, 1)
    rows = ((pos >= t0[:, None]) & (pos < (t0 + tw)[:, None])).any(-1)  # (B, N)
    valid = frames.valid[..., None].float()
    out = {}
    for layer, x in xs.items():
        hit = rows[..., None]
        if mask.channel_frac > 0:
            hit = hit | (torch.rand(B, 1, x.shape[-1], generator=gen) < mask.channel_frac)
        fill = (x * valid).sum((0, 1)) / valid.sum().clamp(min=1)
        out[layer] = torch.where(hit.to(x.device), fill.to(x.dtype), x)
    return out


def frozen_modules(model: Encoder, k: int) -> list[torch.nn.Module]:
    """The modules a cache at layer k stands for: the stem and layers 1..k."""
    return [model.subsampling, *model.layers[:k]]


def frozen_digest(model: Encoder, k: int) -> str:
    """A fingerprint of what a cache at layer k depends on among the weights: the feature normalization, the
    stem and layers 1..k. Two checkpoints that share them (a heads-only stage and its start) share a cache."""
    h = hashlib.sha256()
    named = [("feat_mean", model.feat_mean), ("feat_istd", model.feat_istd)]
    for i, module in enumerate(frozen_modules(model, k)):
        named += [(f"{i}.{n}", t) for n, t in module.state_dict().items()]
    for name, t in named:
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FrozenCache:
    """Outputs of the frozen layers of `model` for every utterance of a feature set (see the module doc)."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        self.k = meta["k"]
        self.layers = meta["layers"]
        self.starts, self.lengths = meta["starts"], meta["lengths"]
        self.offsets = torch.tensor(meta["offsets"])
        self.arrays = {i: np.load(path / f"layer{i}.npy", mmap_mode="r") for i in self.layers}

    @staticmethod
    def key(model: Encoder, fs: FeatureSet, k: int, seed: int) -> dict:
        """What a cache depends on besides the weights: the layout, the layer and the utterances."""
        cfg = model.cfg
        return {"k": k, "chunk_size": cfg.chunk_size, "left_chunks": cfg.left_chunks,
                "right_context": cfg.right_context, "seed": seed, "utterances": len(fs),
                "feature_frames": sum(int(f.shape[0]) for f in fs.feats)}

    @classmethod
    def open(cls, path: str | Path, model: Encoder, fs: FeatureSet, k: int, seed: int, source: str,
             bf16: bool = True, max_frames: int = 20000, progress: bool = False) -> "FrozenCache":
        """The cache at `path` if it was built for this model layout and corpus from the same frozen weights
        (`frozen_digest`; `source`, the checkpoint they came from, is recorded); else build it there (a
        half-built one is rebuilt). A cache from before the digest was recorded is kept when its source is
        this `source`, and the digest is added to it."""
        path = Path(path)
        key = cls.key(model, fs, k, seed)
        digest = frozen_digest(model, k)
        meta_file = path / "meta.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            if {name: meta.get(name) for name in key} == key:
                if meta.get("weights") == digest:
                    return cls(path, meta)
                if "weights" not in meta and meta.get("source") == source:
                    meta["weights"] = digest
                    meta_file.write_text(json.dumps(meta))
                    return cls(path, meta)
        return cls.build(path, model, fs, k, seed, {**key, "source": source, "weights": digest}, bf16, max_frames,
                         progress)

    @classmethod
    def build(cls, path: Path, model: Encoder, fs: FeatureSet, k: int, seed: int, key: dict, bf16: bool,
              max_frames: int, progress: bool) -> "FrozenCache":
        cfg = model.cfg
        if not cfg.skip_layer <= k < cfg.n_layers:
            raise ValueError(f"frozen_layers must be within skip_layer ({cfg.skip_layer})..n_layers - 1 "
                             f"({cfg.n_layers - 1}), got {k}")
        path.mkdir(parents=True, exist_ok=True)
        (path / "meta.json").unlink(missing_ok=True)  # written last: its presence marks a complete cache
        layers = sorted(set(cfg.intermediate_layers) | {k})
        lengths = [cfg.output_length(int(f.shape[0])) for f in fs.feats]
        rows = [n + -(-n // cfg.chunk_size) * cfg.right_context for n in lengths]
        starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64).tolist()
        arrays = {i: np.lib.format.open_memmap(path / f"layer{i}.npy", mode="w+", dtype=np.float16,
                                               shape=(int(sum(rows)), cfg.d_model)) for i in layers}
        gen = torch.Generator().manual_seed(seed)
        period = cfg.position_period
        offsets = (torch.randint(0, period, (len(fs),), generator=gen) if period else
                   torch.zeros(len(fs), dtype=torch.long))
        device = model.feat_mean.device
        batches = bucket_batches([int(f.shape[0]) for f in fs.feats], max_frames, 0, shuffle=False)
        if progress:
            from tqdm import tqdm
            batches = tqdm(batches, desc=f"frozen cache (layers 1..{k})", unit="batch")
        was_training = model.training
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for idx in batches:
                x, xl, _, _ = collate(fs, idx)
                x, frames, _ = model.embed(x.to(device), xl.to(device), offsets[idx].to(device))
                plan = make_plan(cfg, frames, lengths=[cfg.output_length(n) for n in xl.tolist()])
                T = frames.n_real
                for i, layer in enumerate(model.layers[:k], start=1):
                    x = layer(x, plan)
                    if i not in arrays:
                        continue
                    out = x.float().cpu().numpy().astype(np.float16)
                    for b, u in enumerate(idx):
                        n, s = lengths[u], starts[u]
                        arrays[i][s: s + n] = out[b, :n]
                        arrays[i][s + n: s + rows[u]] = out[b, T: T + rows[u] - n]
        model.train(was_training)
        for a in arrays.values():
            a.flush()
        meta = {**key, "layers": layers, "starts": starts, "lengths": lengths, "offsets": offsets.tolist()}
        (path / "meta.json").write_text(json.dumps(meta))
        return cls(path, meta)

    def batch(self, model: Encoder, idx: list[int]) -> tuple[dict[int, torch.Tensor], Frames, torch.Tensor]:
        """The cached outputs of utterances idx, padded like `Encoder.embed` pads a batch:
        {layer: (B, N, D) float32 on the model's device}, the frames, the (B,) lengths."""
        cfg, device = model.cfg, model.feat_mean.device
        lengths = [self.lengths[i] for i in idx]
        T, R = max(lengths), cfg.right_context
        n_chunks = -(-T // cfg.chunk_size)
        xs = {}
        for layer, arr in self.arrays.items():
            out = np.zeros((len(idx), T + n_chunks * R, cfg.d_model), dtype=np.float16)
            for b, (u, n) in enumerate(zip(idx, lengths)):
                s, m = self.starts[u], -(-n // cfg.chunk_size) * R
                out[b, :n] = arr[s: s + n]
                out[b, T: T + m] = arr[s + n: s + n + m]
            xs[layer] = torch.from_numpy(out).to(device).float()
        lens = torch.tensor(lengths, device=device)
        pos = torch.arange(T, device=device).expand(len(idx), T)
        _, frames = model.with_lookahead(torch.zeros(len(idx), T, 1, device=device),
                                         Frames(pos, pos < lens[:, None], T), n_chunks)
        return xs, frames, lens

    def forward(self, model: Encoder, idx: list[int], skip: SkipOptions | None = None,
                teacher: bool = False, mask: CacheMask | None = None,
                gen: torch.Generator | None = None, teacher_model: Encoder | None = None) -> EncoderOutput:
        """`model(...)` on utterances idx with the frozen layers' outputs read from the cache: the
        heads at or below the skip layer on their cached inputs, then `Encoder.forward_top`; with
        `mask`, the cached outputs masked first (`mask_cached`, spans drawn from `gen`). With `teacher_model`
        (a frozen model of the same layout), its pass without skipping on the same inputs is the output's
        `unskipped`."""
        xs, frames, lengths = self.batch(model, idx)
        if mask is not None:
            xs = mask_cached(xs, frames, lengths, mask, gen if gen is not None else torch.Generator())
        plan = make_plan(model.cfg, frames, lengths=[self.lengths[i] for i in idx])
        heads = {i: model.head_after(i, xs[i], frames.n_real) for i in model.cfg.intermediate_layers}
        gate_raw = model.split_gate(heads, frames.n_real)
        out = model.forward_top(xs[model.cfg.skip_layer], plan, lengths, heads, gate_raw, skip, teacher,
                                frozen=(self.k, xs[self.k]))
        if teacher_model is None:
            return out
        with torch.no_grad():  # the same cached (and masked) inputs, every frame through the teacher's top layers;
            # without skipping its final head needs neither its intermediate heads nor its gate
            t_out = teacher_model.forward_top(xs[model.cfg.skip_layer], plan, lengths, {}, gate_raw,
                                              frozen=(self.k, xs[self.k]))
        return replace(out, unskipped=t_out.final)
