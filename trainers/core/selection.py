"""Class selection for class-agnostic distillation: the K candidates the teacher finds most probable in a batch."""
from __future__ import annotations

import warnings

import torch


def select_top_classes(teacher_logits: torch.Tensor, k_max: int) -> torch.Tensor:
    """Indices of the ``k_max`` classes with the largest batch-mean teacher softmax probability (on the device).

    With batch size 1 this is per image. ``k_max`` larger than the candidate count is clamped with a warning.
    """
    num = teacher_logits.shape[-1]
    k = k_max
    if k > num:
        warnings.warn(f"K_MAX={k_max} exceeds the {num} candidate classes; using {num}.", stacklevel=2)
        k = num
    mean_prob = teacher_logits.float().softmax(dim=-1).mean(dim=0)
    return torch.topk(mean_prob, k).indices
