"""Factorized-CTC output (reference implementation in plain torch).

A head's raw output is [z, v_1..v_{V-1}]: z the non-blank logit, v the token logits.
log P(blank) = logsigmoid(-z); log P(k) = logsigmoid(z) + log_softmax(v)_k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def factorized_log_probs(raw: torch.Tensor) -> torch.Tensor:
    """raw (..., V) -> log-probs (..., V) with the blank at index 0."""
    z, v = raw[..., :1], raw[..., 1:]
    return torch.cat([F.logsigmoid(-z), F.logsigmoid(z) + F.log_softmax(v, dim=-1)], dim=-1)
