"""The GILR language model.

Each layer: a gated linear recurrence, g_t = sigmoid(U x_t), i_t = tanh(V x_t),
h_t = g_t * h_{t-1} + (1 - g_t) * i_t, then a projection back to the residual stream; then a
feed-forward block. Pre-norm residual layers, tied input/output embeddings.

Over a whole sequence the recurrence is one `linear_scan` (a = g, b = (1 - g) * i): the Triton
parallel scan on CUDA, the blocked torch reference on the CPU. In decoding, `step` advances any
number of hypotheses by one token each, each from a parent state picked by index (a beam's
reorder), through `gilr_step` (one fused Triton kernel per layer on CUDA).

Tokens: the acoustic model's ids. Id 0, the CTC blank, never occurs in text, so it serves as
the sentence boundary: a sentence is scored as [0, t1, ..., tn] -> [t1, ..., tn, 0].
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from asr_engine.lm.config import (BOUNDARY, FORMAT_VERSION, LMConfig, default_lm_dir, lm_fusion_defaults,
                                  read_lm_config, resolve_lm_dir, vocab_fingerprint)
from asr_engine.lm.scan import gilr_step, linear_scan

__all__ = ["GILRLanguageModel", "LMConfig", "default_lm_dir", "lm_fusion_defaults", "load_lm", "resolve_lm_dir",
           "save_lm", "vocab_fingerprint"]

class GILRLayer(nn.Module):
    def __init__(self, d: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.gates = nn.Linear(d, 2 * d)  # U and V
        self.out = nn.Linear(d, d)
        self.ff_norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, v = self.gates(self.norm(x)).chunk(2, dim=-1)
        g = torch.sigmoid(u)
        return g, (1 - g) * torch.tanh(v)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> (y (B, T, d), last state (B, d))."""
        a, b = self._gates(x)
        h = linear_scan(a, b, h0)
        x = x + self.drop(self.out(h))
        x = x + self.drop(self.ff(self.ff_norm(x)))
        return x, h[:, -1]

    def step(self, x: torch.Tensor, h_src: torch.Tensor, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token for each of N hypotheses: x (N, d); hypothesis n continues state h_src[src[n]] (M, d)."""
        h = gilr_step(self.gates(self.norm(x)), h_src, src)
        x = x + self.out(h)
        return x + self.ff(self.ff_norm(x)), h


class GILRLanguageModel(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
        self.layers = nn.ModuleList(GILRLayer(cfg.d_model, cfg.ff_mult, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) @ self.embed.weight.t()  # tied

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> (logits (B, T, V), state (L, B, d) after the last token)."""
        x = self.embed(tokens)
        last = []
        for i, layer in enumerate(self.layers):
            x, h = layer(x, None if state is None else state[i])
            last.append(h)
        return self._logits(x), torch.stack(last)

    def initial_state(self, n: int, device=None) -> torch.Tensor:
        """The state before any token: zeros (L, n, d)."""
        return torch.zeros(self.cfg.n_layers, n, self.cfg.d_model, device=device)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: torch.Tensor,
             src: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance N hypotheses by one token each: tokens (N,); hypothesis n continues the state
        state[:, src[n]] (state (L, M, d); src None: M = N in order) ->
        (log-probs of the next token (N, V), new state (L, N, d))."""
        if src is None:
            src = torch.arange(tokens.shape[0], device=tokens.device)
        x = self.embed(tokens)
        new = []
        for i, layer in enumerate(self.layers):
            x, h = layer.step(x, state[i], src)
            new.append(h)
        return F.log_softmax(self._logits(x).float(), dim=-1), torch.stack(new)

    def sentence_loss(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed negative log-likelihood of B sentences (tokens (B, T) padded, lengths (B,)), each
        framed by the boundary on both sides; returns (sum of NLL, number of predicted tokens)."""
        B, T = tokens.shape
        inp = torch.cat([torch.full((B, 1), BOUNDARY, dtype=tokens.dtype, device=tokens.device), tokens], 1)
        tgt = torch.cat([tokens, torch.zeros(B, 1, dtype=tokens.dtype, device=tokens.device)], 1)
        pos = torch.arange(T + 1, device=tokens.device)[None, :]
        tgt = torch.where(pos == lengths[:, None], BOUNDARY, tgt)  # </s> right after each sentence
        mask = pos <= lengths[:, None]
        logits, _ = self(inp)
        nll = F.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none")
        return (nll * mask).sum(), int(mask.sum())


def save_lm(model: GILRLanguageModel, out_dir: str | Path, info: dict | None = None, half: bool = False,
            fusion: dict | None = None) -> Path:
    """A folder with lm.safetensors (fp16 with `half`) and lm.json (config, provenance, and the
    shallow-fusion weights tuned for it, {"weight", "length_bonus"}, when known)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.detach().half() if half else v.detach()).contiguous().cpu()
               for k, v in model.state_dict().items()}, str(out / "lm.safetensors"))
    meta = {"format_version": FORMAT_VERSION, "model": model.cfg.to_dict(), "info": info or {}}
    if fusion:
        meta["fusion"] = fusion
    (out / "lm.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_lm(path: str | Path, device: str | torch.device = "cpu", tokenizer=None) -> GILRLanguageModel:
    """Load an LM folder ('default': the bundled one); with `tokenizer`, refuse an LM trained on
    another vocabulary. Weights stored in fp16 load into an fp32 model."""
    path = resolve_lm_dir(path)
    if not (path / "lm.safetensors").is_file():
        raise FileNotFoundError(f"{path}: not an LM folder (lm.json and lm.safetensors)")
    model = GILRLanguageModel(read_lm_config(path, tokenizer))
    model.load_state_dict(load_file(str(path / "lm.safetensors")))
    return model.to(device).eval()
