"""CTC on every head plus distillation from the final head into the intermediate ones.

All terms are sums over an utterance averaged over the batch, so their weights are
comparable. The distillation is on the factorized distribution: a blank/non-blank
binary KL per frame, and a token KL weighted by the teacher's P(non-blank), since
the token distribution only matters where the teacher emits a token.

On skip-aware steps the model can also run its top layers on every frame, without
gradient (``EncoderOutput.unskipped``). That unskipped final head then teaches both the
intermediate heads (on a skipped frame the skipping final head is the gate head itself,
which cannot teach it) and, with weight ``skip_distill``, the skipping final head: on kept
frames this trains the top layers to give the same answer on the compacted sequence, on
skipped frames it trains the gate head to stand in for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asr_engine.model.encoder import EncoderOutput, HeadOutput

__all__ = ["LossWeights", "ctc_loss", "factorized_distillation", "feature_distillation", "total_loss"]


@dataclass(frozen=True)
class LossWeights:
    ctc: float = 1.0  # the final head's CTC; 0 leaves only the other terms (e.g. skip_distill alone: no transcripts)
    intermediate_ctc: float = 0.3
    distill_blank: float = 0.5
    distill_token: float = 0.5
    skip_distill: float = 0.0  # unskipped final head -> skipping final head (blank + token KL)
    feature: float = 0.0  # a frozen full-context teacher's last hidden layer -> the student's (squared error)


def ctc_loss(head: HeadOutput, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """head.raw (B, T, V); targets (B, S) padded; -> scalar, per-utterance sum averaged over B."""
    log_probs = head.log_probs().float().transpose(0, 1)  # (T, B, V)
    loss = F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=0,
                      reduction="sum", zero_infinity=True)
    return loss / targets.shape[0]


def factorized_distillation(teacher: HeadOutput, student: HeadOutput,
                            valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(blank KL, token KL), each summed over valid frames and averaged over the batch.

    The teacher is detached: the final head teaches, it does not learn from the student.
    """
    t, s = teacher.raw.detach().float(), student.raw.float()
    zt, zs = t[..., 0], s[..., 0]  # non-blank logits (B, T)
    lp_t_nb, lp_t_b = F.logsigmoid(zt), F.logsigmoid(-zt)
    lp_s_nb, lp_s_b = F.logsigmoid(zs), F.logsigmoid(-zs)
    p_t_nb = lp_t_nb.exp()
    kl_blank = (1 - p_t_nb) * (lp_t_b - lp_s_b) + p_t_nb * (lp_t_nb - lp_s_nb)  # (B, T)
    lt, ls = F.log_softmax(t[..., 1:], -1), F.log_softmax(s[..., 1:], -1)
    kl_token = p_t_nb * (lt.exp() * (lt - ls)).sum(-1)  # (B, T)
    B = valid.shape[0]
    return kl_blank[valid].sum() / B, kl_token[valid].sum() / B


def feature_distillation(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over D between student and teacher hidden states (B, T, D), summed over
    valid frames (B, T) and averaged over the batch, like the CTC terms."""
    err = (student.float() - teacher.detach().float()).pow(2).mean(-1)  # (B, T)
    return err[valid].sum() / valid.shape[0]


def total_loss(out: EncoderOutput, targets: torch.Tensor, target_lengths: torch.Tensor,
               weights: LossWeights = LossWeights(),
               teacher_hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Final CTC + mean intermediate CTC + distillation into every intermediate head
    (+ skip distillation when the output carries the unskipped teacher, + feature distillation
    when a teacher's hidden states (B, T, D) are given and the output carries its own)."""
    T = out.final.raw.shape[1]
    valid = torch.arange(T, device=out.lengths.device)[None, :] < out.lengths[:, None]
    teacher = out.final if out.unskipped is None else out.unskipped
    final = ctc_loss(out.final, out.lengths, targets, target_lengths)
    inter = [ctc_loss(h, out.lengths, targets, target_lengths) for h in out.intermediate.values()]
    kd = [factorized_distillation(teacher, h, valid) for h in out.intermediate.values()]
    inter_mean = torch.stack(inter).mean()
    kd_blank = torch.stack([b for b, _ in kd]).sum()
    kd_token = torch.stack([t for _, t in kd]).sum()
    loss = (weights.ctc * final + weights.intermediate_ctc * inter_mean + weights.distill_blank * kd_blank
            + weights.distill_token * kd_token)
    # detached tensors, not floats: .item() here would wait for the GPU every step; read them when shown
    parts = {"ctc": final.detach(), "inter_ctc": inter_mean.detach(), "kd_blank": kd_blank.detach(),
             "kd_token": kd_token.detach()}
    if out.unskipped is not None and weights.skip_distill > 0:
        sb, st = factorized_distillation(out.unskipped, out.final, valid)
        loss = loss + weights.skip_distill * (sb + st)
        parts["kd_skip"] = (sb + st).detach()
    if teacher_hidden is not None and out.hidden is not None and weights.feature > 0:
        fd = feature_distillation(out.hidden, teacher_hidden, valid)
        loss = loss + weights.feature * fd
        parts["feature"] = fd.detach()
    return loss, parts
