"""The torchvision student of data-free distillation (trainers/dfkd.py) and its loss, free of Dassl so a fork or a
script can build and train the same student without a trainer."""
from __future__ import annotations

import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .losses import kd_loss


class StudentNet(nn.Module):
    """A torchvision classifier's body with a new K-way ``head`` (so the head can get its own learning rate)."""

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_student_net(name: str, num_classes: int, weights: str = "") -> StudentNet:
    """Any torchvision classifier by name; ImageNet weights only from a local file (never downloaded)."""
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ValueError(f"Unknown torchvision classifier {name!r} (TRAINER.DFKD.STUDENT), e.g. resnet18, "
                         f"resnet50, mobilenet_v3_small, efficientnet_b0 ({exc}).") from exc
    if weights:
        if not osp.isfile(weights):
            raise FileNotFoundError(f"TRAINER.DFKD.STUDENT_PRETRAINED {weights!r} does not exist (it is never "
                                    "downloaded; e.g. torchvision's resnet18-f37072fd.pth).")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RuntimeError(f"{weights} does not fit torchvision's {name}: {exc}") from exc
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{name} has no final nn.Linear classifier to replace; pick another student.")
    path, last = linears[-1]
    parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
    setattr(parent, path.rsplit(".", 1)[-1], nn.Identity())
    return StudentNet(model, nn.Linear(last.in_features, num_classes))


def distillation_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, kd_weight: float, ce_weights: Optional[torch.Tensor | float] = None
                      ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """kd_weight * T^2 KL(p_T || p_S) + mean(ce_weights * CE(z_S, label)); terms for logging.

    ``ce_weights`` None (or 0.0) skips the CE term; decided on the host, so a step never waits for the device.
    """
    kd = kd_loss(teacher_logits, student_logits.float(), temperature)
    total = kd_weight * kd
    terms = {"loss_kd": kd.detach()}
    if ce_weights is not None and not (isinstance(ce_weights, float) and ce_weights == 0.0):
        ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
        total = total + (ce_weights * ce).mean()
        terms["loss_ce"] = ce.mean().detach()
    terms["loss"] = total.detach()
    return total, terms


__all__ = ["StudentNet", "build_student_net", "distillation_loss"]
