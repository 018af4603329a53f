"""What passes between a trainer's steps and the parts it holds (no Dassl needed): the batch its loss receives and
the protocol of an end-of-epoch component."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class TrainBatch:
    """One training batch as the loss receives it (passed explicitly, never left on the trainer between calls)."""

    images: torch.Tensor
    #: dataset indices of the views (key cached teacher outputs); None when the loader gives none
    index: Optional[torch.Tensor] = None
    #: labels, only for trainers whose loss reads them (:meth:`PromptDistillTrainer.reads_labels`); else None
    labels: Optional[torch.Tensor] = None


class EpochPart(Protocol):
    """A component that acts at the end of every training epoch and whose state an exact resume needs (e.g.
    PromptSRC's Gaussian prompt aggregation)."""

    def end_epoch(self, learnable: nn.Module, epoch: int, max_epoch: int) -> None: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, device: torch.device) -> None: ...
