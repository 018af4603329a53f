"""Make unmodified Dassl 0.6.3 run on current torch, fixing only what is broken (detect, don't assume).

1. ``_BaseWarmupScheduler.__init__`` passes ``verbose`` positionally to ``LRScheduler.__init__``, which torch >= 2.7
   no longer accepts -> every config with a warm-up epoch crashes at construction.
2. The warm-up scheduler's ``state_dict`` pickles its successor scheduler object, which ``torch.load`` with the
   default ``weights_only=True`` (torch >= 2.6) refuses -> resume and ``--eval-only`` fail. We store the successor's
   own state dict instead, so checkpoints hold only tensors, numbers and containers.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List

from torch.optim import lr_scheduler as torch_sched

_APPLIED: List[str] = []


def _warmup_init(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
    self.successor = successor
    self.warmup_epoch = warmup_epoch
    torch_sched.LRScheduler.__init__(self, optimizer, last_epoch)


def _warmup_state_dict(self) -> Dict[str, Any]:
    state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
    state["successor"] = self.successor.state_dict()
    return state


def _warmup_load_state_dict(self, state_dict: Dict[str, Any]) -> None:
    state = dict(state_dict)
    successor = state.pop("successor", None)
    self.__dict__.update(state)
    if isinstance(successor, dict):
        self.successor.load_state_dict(successor)
    elif successor is not None:  # a checkpoint written before this fix, loaded with weights_only=False
        self.successor.load_state_dict(successor.state_dict())


def apply_dassl_compat() -> List[str]:
    """Patch Dassl where needed; returns the names of the fixes applied (empty on an already-compatible stack)."""
    from dassl.optim import lr_scheduler as dassl_sched

    base = dassl_sched._BaseWarmupScheduler
    if "verbose" not in inspect.signature(torch_sched.LRScheduler.__init__).parameters \
            and base.__init__ is not _warmup_init:
        base.__init__ = _warmup_init
        _APPLIED.append("warmup-scheduler-init")
    if "state_dict" not in base.__dict__:  # inherited: pickles the successor object
        base.state_dict = _warmup_state_dict
        base.load_state_dict = _warmup_load_state_dict
        _APPLIED.append("warmup-scheduler-state")
    return list(_APPLIED)


def applied_fixes() -> List[str]:
    return list(_APPLIED)
