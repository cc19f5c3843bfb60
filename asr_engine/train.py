"""Training: CTC + intermediate CTC + factorized distillation, with skip-aware steps.

A fraction of the steps run the top layers on the compacted sequence exactly as
inference does (frames the gating head calls blank bypass them), so the model
learns to be accurate when skipping. Checkpoints are written every few minutes
and training resumes from the last one.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from asr_engine.backend import check_device
from asr_engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from asr_engine.data.loader import FeatureSet, Prefetcher, bucket_batches, collate, load_features, spec_augment
from asr_engine.decoding import greedy_search
from asr_engine.features import FbankConfig
from asr_engine.frozen_cache import CacheMask, FrozenCache, frozen_modules
from asr_engine.model.fbank import Fbank
from asr_engine.losses import LossWeights, total_loss
from asr_engine.model.config import ModelConfig
from asr_engine.model.encoder import Encoder, SkipOptions
from asr_engine.pretrained import full_context, pretrained_parameter_names
from asr_engine.text import word_error_counts
from asr_engine.manifest import read_corpus
from asr_engine.tokenizer import BPETokenizer, CharTokenizer, train_bpe

__all__ = ["TrainConfig", "train"]

# model fields fine-tuning may change: they shape streaming and skipping, not the weights
_LAYOUT_KEYS = {"chunk_size", "left_chunks", "right_context", "skip_threshold", "skip_dilation", "dropout"}


@dataclass(frozen=True)
class TrainConfig:
    train_manifest: str | list[str]
    out_dir: str
    dev_manifest: str | None = None
    model: dict = field(default_factory=dict)  # ModelConfig fields except vocab_size
    tokenizer: dict = field(default_factory=lambda: {"kind": "char"})  # or {"kind": "bpe", "vocab_size": N}
    init_from: str | None = None  # start from this checkpoint's weights and tokenizer (fine-tuning)
    # with init_from: a new tokenizer ({"kind": "bpe", "vocab_size": N}) trained on the training texts in place of
    # init_from's; the CTC heads' output layers start afresh for it, everything below them (the heads' MLPs too)
    # is init_from's. Larger word pieces spell more words whole, which greedy decoding cannot fix afterwards.
    retokenize: dict | None = None
    steps: int = 10000
    max_frames: int = 20000  # padded feature frames per batch (10 ms each)
    lr: float = 2e-3
    warmup_steps: int = 500
    weight_decay: float = 1e-3
    grad_clip: float = 5.0
    skip_train_prob: float = 0.5  # fraction of steps that run the top layers compacted
    skip_train_start: int = 1000  # the gate head needs some training before it can gate
    skip_train_threshold: float = 0.9
    loss: dict = field(default_factory=dict)  # LossWeights fields
    aux_start: int = 0  # intermediate CTC and distillation join at this step (CTC learns to align faster alone)
    bf16: bool = True
    max_duration: float = 20.0
    checkpoint_minutes: float = 10.0
    eval_every: int = 1000
    sortagrad: bool = False  # the first epoch goes from the shortest batches to the longest (curriculum)
    # Pretrained encoders (init_from an `asr-engine import-whisper` checkpoint): the imported weights
    # learn at lr * pretrained_lr_scale (0: never; adapters only) and not at all for the first
    # freeze_pretrained_steps (no gradients computed for them then; the new
    # heads and conv modules learn to read them first); loss.feature > 0 distills the frozen
    # full-context init model's last hidden layer into the streaming student on non-skipping steps.
    pretrained_lr_scale: float = 1.0
    # the other parameters (heads, conv modules, grown layers) learn at lr * new_lr_scale; 0: never (the imported
    # weights alone learn, e.g. blocks taught by their own unskipped pass through skip_distill)
    new_lr_scale: float = 1.0
    freeze_pretrained_steps: int = 0
    # models with a position_period: each utterance starts at a random position in [0, period), so
    # the model learns the wrap that long streams go through (streams start at 0 at inference)
    random_position_offset: bool = True
    teacher_from: str | None = None  # the feature-distillation teacher's checkpoint (default: init_from)
    # with loss.skip_distill > 0: a frozen copy of this checkpoint, run without skipping on the same inputs, teaches
    # the final head on every step (compacted on skipping steps, whole on the others) in place of the model's own
    # unskipped pass. A teacher that moves with the weights it teaches lets both drift together (stage 25 of
    # docs/whisper-import.md collapsed so); the fixed one also holds the whole pass where it was.
    skip_teacher_from: str | None = None
    # anchor > 0 (L2-SP, Li et al. 2018): the loss gains anchor * the sum of squared distances of the
    # imported (Whisper) weights that train from their values in anchor_from (an `asr-engine import-whisper`
    # checkpoint: Whisper as it hears real speech). Fine-tuning on synthetic speech moves the top layers away
    # from what hears real voices; pulling them back by interpolation alone (WiSE-FT) was worth 2 points of
    # real-speech WER (docs/whisper-import.md), so the pull is trained for here.
    anchor: float = 0.0
    anchor_from: str | None = None
    # > 0: the stem and layers 1..frozen_layers (>= the skip layer) stay as initialized and are computed once
    # per utterance into a cache (cache_dir, default out_dir/frozen_cache; see asr_engine.frozen_cache): steps
    # run only the layers above and the heads. No SpecAugment then (cache_mask takes its place), and no feature
    # distillation.
    frozen_layers: int = 0
    cache_dir: str | None = None
    # with frozen_layers: SpecAugment's place when training from the cache, CacheMask's fields
    # ({"n_time": 4, "time_frac": 0.05, "channel_frac": 0.1}); None: the cached outputs as they are
    cache_mask: dict | None = None
    device: str = "auto"  # "cpu", "cuda[:N]", or "auto": the GPU when there is one
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON config; ``"extends": "other.json"`` (relative to this file) starts from another
        config: keys given here replace the base's, and the ``model``, ``tokenizer`` and ``loss``
        tables are merged key by key. Manifest and output paths stay relative to the working directory."""
        return cls.from_dict(_read_config(Path(path), ()))


# the dict-valued fields (model, tokenizer, loss) merge key by key under "extends"
_MERGED_TABLES = frozenset(f.name for f in fields(TrainConfig) if f.type == "dict")


def _read_config(path: Path, seen: tuple[Path, ...]) -> dict:
    real = path.resolve()
    if real in seen:
        raise ValueError(f"{path}: configs extend each other in a cycle")
    d = json.loads(path.read_text())
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a training config is a JSON object")
    base = d.pop("extends", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise ValueError(f"{path}: 'extends' names one config file")
    merged = _read_config(path.parent / base, seen + (real,))
    for key, value in d.items():
        if key in _MERGED_TABLES and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def make_tokenizer(spec: dict, texts: list[str], out: Path):
    """A char tokenizer, or a BPE one trained on the training texts (reused on resume)."""
    kind = spec.get("kind", "char")
    unknown = set(spec) - {"kind", "vocab_size"}
    if unknown:
        raise ValueError(f"unknown tokenizer keys: {sorted(unknown)}")
    if kind == "char":
        return CharTokenizer()
    if kind != "bpe":
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    if (out / "tokenizer.model").exists():
        return BPETokenizer(out / "tokenizer.model")
    return train_bpe(texts, int(spec.get("vocab_size", 256)), out / "tokenizer")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 5% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def feature_stats(fs: FeatureSet, model: Encoder, n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and inverse std of the (floored) features of the first n utterances."""
    x = model.floor(torch.cat([f.float() for f in fs.feats[:n]]))
    return x.mean(0), 1.0 / x.std(0).clamp(min=1e-3)


def evaluate(model: Encoder, fs: FeatureSet, tokenizer, skip: SkipOptions | None,
             max_frames: int = 40000) -> dict:
    """Greedy WER and fraction of frames through the top layers over a feature set."""
    model.eval()
    device = model.feat_mean.device
    errs = words = 0
    top = frames = 0
    with torch.no_grad():
        for idx in bucket_batches([f.shape[0] for f in fs.feats], max_frames, 0, shuffle=False):
            x, xl, _, _ = collate(fs, idx)
            out = model(x.to(device), xl.to(device), skip, host_lengths=xl.tolist())
            lp = out.final.log_probs().float().cpu()
            for j, i in enumerate(idx):
                hyp = tokenizer.decode(list(greedy_search(lp[j, : out.lengths[j]]).tokens))
                e, n = word_error_counts(fs.texts[i], hyp)
                errs, words = errs + e, words + n
            top += int(out.top_mask.sum())
            frames += int(out.lengths.sum())
    model.train()
    return {"wer": errs / max(1, words), "top_fraction": top / max(1, frames)}


def resolve_device(name: str) -> torch.device:
    """The training device: "auto" is the GPU when there is one, else the CPU; cpu, cuda or cuda:N as
    `check_device` takes them (a name that is no device, or a GPU this machine lacks, is refused)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(check_device(name, "torch"))
    except ValueError as e:
        raise ValueError(str(e).replace("cuda or cuda:N", "cuda, cuda:N or auto")) from None


def _save(model, tokenizer, features: FbankConfig, opt, cfg: TrainConfig, step: int, info: dict) -> None:
    out = Path(cfg.out_dir)
    save_checkpoint(Checkpoint(model, tokenizer, features, info={**info, "step": step}), out / "last")
    torch.save({"optimizer": opt.state_dict(), "step": step, "rng": torch.get_rng_state(),
                "train_seconds": info.get("train_seconds", 0.0)},
               out / "train_state.pt")


def _optimizer(model: Encoder, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: imported pretrained weights and the rest (new heads, conv modules);
    frozen parameters (frozen_layers) in neither."""
    pretrained = pretrained_parameter_names(model.cfg)
    groups = {"pretrained": [], "new": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups["pretrained" if name in pretrained else "new"].append(p)
    return torch.optim.AdamW([{"params": ps, "name": n} for n, ps in groups.items() if ps],
                             lr=cfg.lr, weight_decay=cfg.weight_decay)


def _group_scale(group: str, step: int, cfg: TrainConfig) -> float:
    if group != "pretrained":
        return cfg.new_lr_scale
    return 0.0 if step < cfg.freeze_pretrained_steps else cfg.pretrained_lr_scale


def _position_offsets(mcfg: ModelConfig, cfg: TrainConfig, batch: int, gen: torch.Generator) -> torch.Tensor | None:
    if mcfg.position_period is None or not cfg.random_position_offset:
        return None
    return torch.randint(0, mcfg.position_period, (batch,), generator=gen)


def _train_mode(model: Encoder, cfg: TrainConfig) -> None:
    """Training mode, except frozen layers (no dropout: they compute what their cache holds)."""
    model.train()
    for module in frozen_modules(model, cfg.frozen_layers) if cfg.frozen_layers else []:
        module.eval()


def _anchor(model: Encoder, cfg: TrainConfig, device: torch.device) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, its anchor value) for each imported weight that can train, when cfg.anchor > 0."""
    if cfg.anchor <= 0:
        return []
    if cfg.anchor_from is None:
        raise ValueError("anchor > 0 needs anchor_from: the checkpoint whose imported weights anchor the model "
                         "(asr-engine import-whisper makes one)")
    ref = load_checkpoint(cfg.anchor_from).model.state_dict()
    names = pretrained_parameter_names(model.cfg)
    pairs = [(p, ref[name].to(device, torch.float32)) for name, p in model.named_parameters()
             if name in names and p.requires_grad and name in ref and ref[name].shape == p.shape]
    if not pairs:
        raise ValueError(f"anchor_from {cfg.anchor_from}: none of the model's imported weights that train are in it")
    return pairs


def anchor_penalty(anchor: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> torch.Tensor:
    """The sum of squared distances of the anchored weights from their anchors (those that train this step)."""
    live = [((p.float() - a) ** 2).sum() for p, a in anchor if p.requires_grad]
    return torch.stack(live).sum() if live else anchor[0][1].new_zeros(())


def _from_init(model: Encoder, changes: dict) -> Encoder:
    """init_from's model with cfg.model's changes: the streaming layout (no weights), head MLPs added to heads
    without them (their output layers start at zero), or layers added on top of a Whisper-layout model
    (n_layers larger; conv_layers may give the new layers conv modules). Added layers start as the identity
    (attention, conv and FFN output projections at zero), so the grown model computes what init_from did."""
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    changed = {k: v for k, v in changes.items() if getattr(model.cfg, k) != v}
    old = model.cfg
    grow = changed.get("n_layers", old.n_layers) - old.n_layers
    if grow:
        if grow < 0 or old.block != "whisper":
            raise ValueError(f"init_from: n_layers may only grow, and only in the whisper block layout "
                             f"({old.block}, {old.n_layers} layers, got {changed['n_layers']})")
        convs = changed.get("conv_layers", old.conv_layers)
        same = range(1, old.n_layers + 1)
        if convs is not None and [i for i in same if i in convs] != [i for i in same if old.has_conv(i)]:
            raise ValueError(f"init_from: conv_layers may only add conv modules to the new layers, got {convs}")
        changed["pretrained_layers"] = old.n_layers if old.pretrained_layers is None else old.pretrained_layers
    growing = {"n_layers", "conv_layers", "pretrained_layers"} if grow else set()
    if set(changed) - _LAYOUT_KEYS - growing - {"head_hidden"} or changed.get("head_hidden", 1) == 0:
        raise ValueError(f"init_from: the model section may only change {sorted(_LAYOUT_KEYS)}, grow n_layers "
                         "or add head_hidden to heads without it (the rest must match the checkpoint's "
                         f"or be left out), got {sorted(changed)}")
    if not changed:
        return model
    state = model.state_dict()  # the layout carries no weights: rebuild, copy them over
    model = Encoder(replace(old, **changed))
    missing, unexpected = model.load_state_dict(state, strict=False)
    new_layer = tuple(f"layers.{i}." for i in range(old.n_layers, model.cfg.n_layers))
    if unexpected or any(".mlp." not in k and not k.startswith(new_layer) for k in missing):
        raise ValueError(f"init_from: weights do not fit: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for layer in model.layers[old.n_layers:]:
            for out in (layer.att.proj, layer.ff.net[4]):
                out.weight.zero_()
                out.bias.zero_()
    return model


def _new_vocabulary(model: Encoder, vocab_size: int) -> Encoder:
    """The model with new CTC output layers (PyTorch's default initialization) for a vocabulary of vocab_size."""
    state = {k: v for k, v in model.state_dict().items() if not _is_output_layer(k)}
    new = Encoder(replace(model.cfg, vocab_size=vocab_size))
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or not all(_is_output_layer(k) for k in missing):
        raise ValueError(f"retokenize: weights do not fit: missing {missing}, unexpected {unexpected}")
    return new


def _is_output_layer(name: str) -> bool:
    return name.startswith(("final_head.out.", "heads.")) and ".out." in name


def _frozen_copy(source: Encoder, cfg: ModelConfig) -> Encoder:
    """source's weights in the layout cfg (streaming, dropout), frozen, in eval mode."""
    copy = Encoder(cfg)
    copy.load_state_dict(source.state_dict())
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy.eval()


def _teacher(init: Encoder) -> Encoder:
    """A frozen copy of the init model that attends over the whole utterance (no chunks, no skipping)."""
    return _frozen_copy(init, full_context(init.cfg, 1 << 20))


def _skip_teacher(source: Encoder, model: Encoder) -> Encoder:
    """A frozen copy of source in the model's layout (its streaming layout and dropout): skip_teacher_from."""
    if source.cfg.n_layers != model.cfg.n_layers or source.cfg.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"skip_teacher_from: the teacher must have the model's layers and vocabulary "
                         f"({source.cfg.n_layers} layers and {source.cfg.vocab_size} tokens against "
                         f"{model.cfg.n_layers} and {model.cfg.vocab_size})")
    return _frozen_copy(source, model.cfg)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train until cfg.steps; returns the folder of the last checkpoint."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    manifests = [cfg.train_manifest] if isinstance(cfg.train_manifest, str) else list(cfg.train_manifest)
    init = load_checkpoint(cfg.init_from) if cfg.init_from else None
    utts = [u for m in manifests for u in read_corpus(m)]
    tokenizer = init.tokenizer if init else make_tokenizer(cfg.tokenizer, [u.text for u in utts], out)
    if cfg.retokenize:
        if init is None:
            raise ValueError("retokenize replaces init_from's tokenizer; without init_from, 'tokenizer' says which")
        tokenizer = make_tokenizer(cfg.retokenize, [u.text for u in utts], out)
    features = init.features if init else FbankConfig()
    fbank = Fbank(features).to(device)
    train_fs = load_features(utts, tokenizer, fbank, cfg.max_duration, progress)
    if not len(train_fs):
        raise ValueError(f"no usable utterances in {manifests}")
    dev_fs = load_features(cfg.dev_manifest, tokenizer, fbank, cfg.max_duration) if cfg.dev_manifest else None
    if init:
        model = _from_init(init.model, cfg.model)
        if cfg.retokenize:
            model = _new_vocabulary(model, len(tokenizer.vocab))
    else:
        model = Encoder(ModelConfig(vocab_size=len(tokenizer.vocab), **cfg.model))
    model.to(device)
    weights = LossWeights(**cfg.loss)
    cache = None
    try:
        cache_mask = CacheMask(**cfg.cache_mask) if cfg.cache_mask is not None else None
    except TypeError as e:
        raise ValueError(f"cache_mask takes n_time, time_frac and channel_frac: {e}") from None
    if cache_mask is not None and not cfg.frozen_layers:
        raise ValueError("cache_mask masks the frozen layers' cached outputs: it needs frozen_layers (SpecAugment "
                         "masks the features otherwise)")
    if cfg.frozen_layers:
        if weights.feature > 0:
            raise ValueError("frozen_layers: loss.feature needs the whole forward pass; set it to 0")
        for module in frozen_modules(model, cfg.frozen_layers):
            module.requires_grad_(False)
        cache = FrozenCache.open(cfg.cache_dir or out / "frozen_cache", model, train_fs, cfg.frozen_layers,
                                 cfg.seed, str(cfg.init_from), cfg.bf16, progress=progress)
    opt = _optimizer(model, cfg)
    anchor = _anchor(model, cfg, device)
    teacher = None
    if weights.feature > 0:
        if cfg.teacher_from is None and init is None:
            raise ValueError("loss.feature needs a teacher: init_from or teacher_from")
        teacher = _teacher(load_checkpoint(cfg.teacher_from).model if cfg.teacher_from else init.model).to(device)
    skip_teacher = None
    if cfg.skip_teacher_from is not None:
        if weights.skip_distill <= 0:
            raise ValueError("skip_teacher_from teaches through loss.skip_distill: give it a weight > 0")
        skip_teacher = _skip_teacher(load_checkpoint(cfg.skip_teacher_from).model, model).to(device)
    step = 0
    prior_seconds = 0.0
    if resume and (out / "train_state.pt").exists():
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(out / "last" / "model.safetensors"), device=str(device)))
        state = torch.load(out / "train_state.pt", weights_only=True, map_location=device)
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        prior_seconds = float(state.get("train_seconds", 0.0))
        torch.set_rng_state(state["rng"].cpu())
    elif init is None:
        mean, istd = (t.to(device) for t in feature_stats(train_fs, model))
        model.feat_mean.copy_(mean)
        model.feat_istd.copy_(istd)
    no_aux = LossWeights(ctc=weights.ctc, intermediate_ctc=0.0, distill_blank=0.0, distill_token=0.0)
    info = {"train_manifest": manifests, "init_from": cfg.init_from, "utterances": len(train_fs),
            "hours": sum(f.shape[0] for f in train_fs.feats) / 360000}
    lengths = [f.shape[0] for f in train_fs.feats]
    gen = torch.Generator().manual_seed(cfg.seed + step)
    rng = random.Random(cfg.seed + step)
    last_ckpt = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step")
    _train_mode(model, cfg)
    epoch = step // max(1, len(bucket_batches(lengths, cfg.max_frames, 0)))
    audio_s, t0 = 0.0, time.monotonic()
    while step < cfg.steps:
        batches = bucket_batches(lengths, cfg.max_frames, cfg.seed + epoch)
        if cfg.sortagrad and epoch == 0:
            batches.sort(key=lambda b: max(lengths[i] for i in b))
            batches = batches[step:]  # on resume, the rest of the sorted epoch
        batches = Prefetcher(train_fs, batches[: cfg.steps - step], pin=device.type == "cuda")
        for idx, x_host, xl_host, y, yl in batches:
            x_clean, xl = x_host.to(device, non_blocking=True), xl_host.to(device, non_blocking=True)
            y, yl = y.to(device, non_blocking=True), yl.to(device, non_blocking=True)
            x = spec_augment(x_clean, xl_host, model.feat_mean, gen) if cache is None else x_clean
            skip = None
            if step >= cfg.skip_train_start and rng.random() < cfg.skip_train_prob:
                skip = SkipOptions(cfg.skip_train_threshold, model.cfg.skip_dilation)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg) * _group_scale(g["name"], step, cfg)
                frozen = _group_scale(g["name"], step, cfg) == 0.0
                if g["params"][0].requires_grad == frozen:  # frozen weights: no gradients computed at all
                    for p in g["params"]:
                        p.requires_grad_(not frozen)
            step_weights = weights if step >= cfg.aux_start else no_aux
            t_hidden = None
            offsets = _position_offsets(model.cfg, cfg, len(idx), gen)
            teach_skip = skip is not None and step_weights.skip_distill > 0 and skip_teacher is None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                if cache is not None:
                    out_ = cache.forward(model, idx, skip, teacher=teach_skip, mask=cache_mask, gen=gen,
                                         teacher_model=skip_teacher)
                else:
                    host = xl_host.tolist()  # the attention plans are made on the host: no device read
                    if teacher is not None and skip is None:
                        with torch.no_grad():  # the teacher hears the features before SpecAugment
                            t_hidden = teacher(x_clean, xl, hidden=True, host_lengths=host).hidden
                    pos = None if offsets is None else offsets.to(device)
                    out_ = model(x, xl, skip, teacher=teach_skip, hidden=t_hidden is not None, pos_offset=pos,
                                 host_lengths=host)
                    if skip_teacher is not None:
                        with torch.no_grad():
                            out_ = replace(out_, unskipped=skip_teacher(x, xl, pos_offset=pos,
                                                                        host_lengths=host).final)
            loss, parts = total_loss(out_, y, yl, step_weights, t_hidden)
            if anchor:
                penalty = anchor_penalty(anchor)
                loss = loss + cfg.anchor * penalty
                parts["anchor"] = penalty.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            audio_s += float(xl_host.sum()) / 100
            if bar is not None:
                bar.update(1)
            if bar is not None and (step % 10 == 0 or step == cfg.steps):  # reading the numbers syncs a GPU
                bar.set_postfix(loss=f"{loss.item():.1f}", ctc=f"{float(parts['ctc']):.1f}",
                                tok=f"{float(parts['ctc']) / float(yl.float().mean()):.2f}",
                                top=f"{float(out_.top_fraction().mean()):.2f}",
                                speed=f"{audio_s / 3600 / max(1e-9, time.monotonic() - t0) * 3600:.0f}x",
                                **({"anchor": f"{float(parts['anchor']):.3g}"} if anchor else {}))
            if dev_fs is not None and step % cfg.eval_every == 0:
                res = evaluate(model, dev_fs, tokenizer, None)
                res_skip = evaluate(model, dev_fs, tokenizer, SkipOptions.resolve(model.cfg))
                _train_mode(model, cfg)
                msg = {"step": step, "dev": res, "dev_skip": res_skip}
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(msg) + "\n")
                info["dev"] = msg
            if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
                info["train_seconds"] = round(prior_seconds + time.monotonic() - t0, 1)
                _save(model, tokenizer, features, opt, cfg, step, info)
                last_ckpt = time.monotonic()
        epoch += 1
    if bar is not None:
        bar.close()
    info["train_seconds"] = round(prior_seconds + time.monotonic() - t0, 1)
    if dev_fs is not None:
        info["dev_final"] = {"step": step, "dev": evaluate(model, dev_fs, tokenizer, None),
                             "dev_skip": evaluate(model, dev_fs, tokenizer, SkipOptions.resolve(model.cfg))}
    _save(model, tokenizer, features, opt, cfg, step, info)
    report = {"steps": step, **info}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return out / "last"
