"""Model configuration: the checkpoint carries it, and loading rebuilds the model from it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace


PAD_POS = 1 << 40  # the timeline position of padding frames: it sorts after every real frame
STEMS = ("conv2d", "whisper")
BLOCKS = ("conformer", "whisper")
POSITIONS = ("rotary", "absolute")
CONTEXTS = ("streaming", "full")
# a whole file's attention chunk (encoder frames; 10.24 s of Whisper-stem frames): each frame sees its own
# chunk and the one before, the way WeNet's U2 models decode files with full attention. Chosen, with one
# chunk of left context and no lookahead, on held-out speech (docs/whisper-import.md "Full context for files").
FULL_CONTEXT_CHUNK = 512


@dataclass(frozen=True)
class ModelConfig:
    """Conformer/CTC encoder dimensions and its streaming and skipping layout.

    Frames below are encoder frames (after subsampling): with subsampling 4 and a
    10 ms feature shift, one frame is 40 ms, so chunk_size=16 is 640 ms.

    Two layouts share the code. The default (stem "conv2d", block "conformer", rotary
    positions) is the macaron Conformer trained here from scratch. stem "whisper",
    block "whisper", positions "absolute" express OpenAI Whisper's encoder (two conv1d
    layers, 20 ms frames, sinusoids added to the input, pre-LN attention and GELU FFN)
    with a Conformer conv module in every block whose output projection starts at zero:
    imported weights compute Whisper's encoder exactly (see asr_engine.pretrained).
    """

    vocab_size: int
    feat_dim: int = 80
    feat_floor: float | None = None  # log-mel values are clamped from below to this (a noise floor)
    d_model: int = 144
    n_heads: int = 4
    ff_mult: int = 4
    n_layers: int = 8
    conv_kernel: int = 15
    subsampling: int = 4  # 4 or 8 (stem "conv2d"); 2 (stem "whisper")
    stem: str = "conv2d"  # "conv2d": conv2d subsampling; "whisper": conv1d k3 + conv1d k3 stride 2, GELU
    block: str = "conformer"  # "conformer": macaron FFNs + final LayerNorm, SiLU; "whisper": attention,
    # conv module, one GELU FFN, each pre-LN with a residual
    positions: str = "rotary"  # "rotary" in attention; "absolute": Whisper's sinusoids added after the stem
    position_period: int | None = None  # absolute positions repeat after this many frames (Whisper: 1500,
    # the 30 s it was trained on; beyond them its encoder breaks down), so streams of any length stay in range
    subsampling_norm: bool = False  # LayerNorm on the subsampling output (trains out of the CTC plateau sooner)
    dropout: float = 0.1
    chunk_size: int = 16  # attention chunk, in encoder frames
    left_chunks: int | None = 4  # chunks of left context; None = unlimited
    right_context: int = 0  # lookahead frames per chunk (Emformer-style: the first right_context frames of the
    # next chunk are computed again with each chunk, as keys for its frames only; <= chunk_size)
    intermediate_layers: tuple[int, ...] = (4,)  # CTC heads after these layers (1-based)
    head_hidden: int = 0  # width of a residual GELU MLP inside every CTC head (0: LayerNorm + linear only); its
    # output layer starts at zero, so adding it to a trained model changes none of its outputs
    conv_layers: tuple[int, ...] | None = None  # layers (1-based) with a conv module; None: every layer (a
    # Whisper layer frozen as imported has none: its conv module would stay at zero and compute nothing)
    skip_layer: int = 4  # the head after this layer gates layers skip_layer+1..n_layers
    skip_threshold: float = 0.95  # default P(blank) above which a frame skips the top layers
    skip_dilation: int = 1  # frames next to a kept frame are kept too
    pretrained_layers: int | None = None  # layers 1..k hold imported (Whisper) weights; None: all of them.
    # Layers above k were added to an import (TrainConfig: init_from with a larger n_layers) and learn as new

    def __post_init__(self) -> None:
        object.__setattr__(self, "intermediate_layers", tuple(self.intermediate_layers))
        if self.conv_layers is not None:
            object.__setattr__(self, "conv_layers", tuple(sorted(set(self.conv_layers))))
            if any(not 1 <= i <= self.n_layers for i in self.conv_layers):
                raise ValueError(f"conv_layers must be within 1..n_layers ({self.n_layers}), got {self.conv_layers}")
        for key, allowed in (("stem", STEMS), ("block", BLOCKS), ("positions", POSITIONS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        rates = (2,) if self.stem == "whisper" else (4, 8)
        if self.subsampling not in rates:
            raise ValueError(f"stem {self.stem!r} subsamples by {' or '.join(map(str, rates))}, "
                             f"got {self.subsampling}")
        if self.position_period is not None and self.position_period < 1:
            raise ValueError("position_period must be >= 1 or None")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model / n_heads must be an even integer (rotary embedding)")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if not 0 <= self.right_context <= self.chunk_size:
            raise ValueError(f"right_context must be within 0..chunk_size ({self.chunk_size}), "
                             f"got {self.right_context}")
        if self.left_chunks is not None and self.left_chunks < 0:
            raise ValueError("left_chunks must be >= 0 or None")
        if self.skip_layer not in self.intermediate_layers:
            raise ValueError(f"skip_layer {self.skip_layer} needs a head: add it to intermediate_layers")
        if any(not 1 <= i <= self.skip_layer for i in self.intermediate_layers):
            raise ValueError("intermediate heads must sit at or below skip_layer, within 1..n_layers")
        if self.pretrained_layers is not None and not 1 <= self.pretrained_layers <= self.n_layers:
            raise ValueError(f"pretrained_layers must be within 1..n_layers ({self.n_layers}), "
                             f"got {self.pretrained_layers}")
        if self.head_hidden < 0:
            raise ValueError("head_hidden must be >= 0")
        if not 1 <= self.skip_layer < self.n_layers:
            raise ValueError("skip_layer must leave at least one top layer")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["intermediate_layers"] = list(self.intermediate_layers)
        if self.conv_layers is not None:
            d["conv_layers"] = list(self.conv_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def has_conv(self, layer: int) -> bool:
        """Whether layer (1-based) has a conv module."""
        return self.conv_layers is None or layer in self.conv_layers

    @property
    def stem_kernels(self) -> list[tuple[int, int]]:
        """(kernel, stride) along time of the stem's convolutions, bottom first."""
        if self.stem == "whisper":
            return [(3, 1), (3, 2)]
        return [(3, 2)] * {4: 2, 8: 3}[self.subsampling]

    @property
    def stride(self) -> int:
        """Feature frames per encoder frame."""
        return math.prod(st for _, st in self.stem_kernels)

    @property
    def receptive_field(self) -> int:
        """Feature frames behind one encoder frame (fewer give none)."""
        ks = self.stem_kernels
        return 1 + sum((k - 1) * math.prod(st for _, st in ks[:i]) for i, (k, _) in enumerate(ks))

    def input_frames(self, n_out: int) -> int:
        """Feature frames that yield exactly n_out encoder frames (windows for n_out overlap by input_frames(0))."""
        return self.stride * n_out + self.receptive_field - self.stride

    def output_length(self, n_in: int) -> int:
        """Encoder frames from n_in feature frames."""
        for k, st in self.stem_kernels:
            n_in = (n_in - k) // st + 1
        return max(n_in, 0)

    def with_context(self, context: str) -> "ModelConfig":
        """The layout to decode with: "streaming", the model's own chunks (as live audio is decoded);
        "full", whole files: chunks of FULL_CONTEXT_CHUNK frames, one chunk of left context, no
        lookahead (the same weights; for models that recommend it in their decoding.json)."""
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        if context == "streaming":
            return self
        return replace(self, chunk_size=FULL_CONTEXT_CHUNK, left_chunks=1, right_context=0)

    @property
    def frame_shift_s(self) -> float:
        """Seconds per encoder frame (10 ms features times subsampling)."""
        return 0.01 * self.subsampling


@dataclass(frozen=True)
class SkipOptions:
    threshold: float
    dilation: int = 1

    @staticmethod
    def resolve(cfg: ModelConfig, threshold: float | None = None,
                dilation: int | None = None) -> "SkipOptions | None":
        """Options given by a user (None: the model's defaults); None when threshold >= 1.0 (no skipping)."""
        threshold = cfg.skip_threshold if threshold is None else threshold
        dilation = cfg.skip_dilation if dilation is None else dilation
        return None if threshold >= 1.0 else SkipOptions(threshold, dilation)
