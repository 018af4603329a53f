"""Distillation losses on logits, with the exact normalisers of each method."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def kl_divergence(target_logits: torch.Tensor, input_logits: torch.Tensor, temperature: float = 1.0,
                  reduction: str = "batchmean") -> torch.Tensor:
    """KL(p_target || p_input) with p = softmax(logits / T), computed in fp32.

    ``reduction``: "batchmean" (sum / B, PyTorch's ``kl_div`` batchmean), "mean" (sum / (B*N), the number of logits),
    or "sum".
    """
    t = F.log_softmax(target_logits.float() / temperature, dim=-1)
    s = F.log_softmax(input_logits.float() / temperature, dim=-1)
    total = (t.exp() * (t - s)).sum()
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / target_logits.shape[0]
    if reduction == "mean":
        return total / target_logits.numel()
    raise ValueError(f"Unknown reduction {reduction!r}; use batchmean, mean or sum.")


def symmetric_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, forward_weight: float = 0.5,
                 reverse_weight: float = 0.5, temperature: float = 1.0):
    """KDPL's loss: w_f * KL(p_T || p_S) + w_r * KL(p_S || p_T), each summed over classes and divided by B.

    Returns (total, forward term, reverse term).
    """
    forward = kl_divergence(teacher_logits, student_logits, temperature, "batchmean")
    reverse = kl_divergence(student_logits, teacher_logits, temperature, "batchmean")
    return forward_weight * forward + reverse_weight * reverse, forward, reverse


def promptkd_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0,
                  weight: float = 1.0) -> torch.Tensor:
    """PromptKD's loss: weight * T^2 * KL(p_T || p_S) summed and divided by the number of logits B*N."""
    return weight * temperature ** 2 * kl_divergence(teacher_logits, student_logits, temperature, "mean")


def kd_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton's KD: T^2 * KL(p_T || p_S) averaged over the batch."""
    return temperature ** 2 * kl_divergence(teacher_logits, student_logits, temperature, "batchmean")
