"""Distillation losses: the teacher's temperature-softened distribution as a soft target
(Hinton et al. 2015), DistilBERT's cosine loss between hidden states, and MiniLM's KL between attention
distributions. Each returns a sum over rows, so the objectives can divide by the global batch's count."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ over rows of KL(softmax(teacher/T) ‖ softmax(student/T)) × T²: the T² keeps the gradient's
    scale independent of T, as Hinton et al. prescribe. Rows are the last dimension's distributions."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(student.flatten(0, -2), teacher.flatten(0, -2), log_target=True,
                    reduction="sum") * temperature ** 2


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Σ over token vectors of 1 − cos(student, teacher): DistilBERT's L_cos, aligning directions."""
    return (1 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)).sum()


def attention_kl(student_weights: torch.Tensor, teacher_weights: torch.Tensor,
                 query_mask: torch.Tensor) -> torch.Tensor:
    """Σ over real query tokens of the mean over heads of KL(teacher's row ‖ student's row): each row an
    attention distribution over the keys (MiniLM's self-attention distillation, Wang et al. 2020). Weights are
    (batch, heads, seq, seq) with the same heads in the same order; `query_mask` (batch, seq) marks real tokens.
    Masked keys have weight 0 in both, so they add nothing (0 · log 0 counts as 0)."""
    teacher, student = teacher_weights.float(), student_weights.float()
    rows = torch.xlogy(teacher, teacher) - teacher * student.clamp_min(torch.finfo(student.dtype).tiny).log()
    per_query = rows.sum(-1).mean(1)  # (batch, seq): over the keys, then the heads
    return per_query[query_mask.bool()].sum()
