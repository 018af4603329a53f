"""Device and precision, one place for what each precision means on each device.

=========  ==========================================  ============================================
precision  GPU                                         CPU
=========  ==========================================  ============================================
fp32       fp32 weights, no autocast                   the same
fp16       fp16 weights, no autocast (the reference)   falls back to fp32 (slow/missing fp16 kernels)
bf16       bf16 weights + bf16 autocast                the same, where this torch build runs bf16
amp        fp32 weights + fp16 autocast + GradScaler   fp32 weights + bf16 autocast, no GradScaler
=========  ==========================================  ============================================

A bf16/amp request the device cannot run is checked with a tiny forward + backward when it is resolved and falls back
to fp32 with a warning. Each module enters its own :func:`autocast`, which also switches an enclosing autocast off for
fp32/fp16 modules: a teacher keeps its precision inside the student's step. Losses are computed in fp32 (see
:mod:`~trainers.core.losses`).
"""
from __future__ import annotations

import functools
import warnings
from typing import ContextManager, Optional

import torch
from torch import nn
from torch.nn import functional as F

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}


def resolve_precision(prec: str, device: torch.device, what: str = "model") -> str:
    """Validate ``prec`` and return what runs on ``device``: the request itself, or fp32 with a warning saying why
    (fp16 on CPU; bf16 / bf16 autocast where this torch build cannot run them)."""
    prec = (prec or "fp32").lower()
    if prec not in PRECISIONS:
        raise ValueError(f"Unknown precision {prec!r} for the {what}; use one of {PRECISIONS}.")
    if prec == "fp32":
        return prec
    if device.type == "cpu" and prec == "fp16":
        warnings.warn(f"{what}: fp16 is not used on CPU (PyTorch's CPU fp16 kernels are slow or missing); using "
                      "fp32. bf16 and amp (bf16 autocast) run on CPU.", stacklevel=2)
        return "fp32"
    problem = _unsupported(device.type, prec)
    if problem:
        warnings.warn(f"{what}: precision {prec} does not run on {device.type} with this PyTorch build ({problem}); "
                      "using fp32.", stacklevel=2)
        return "fp32"
    return prec


@functools.lru_cache(maxsize=None)
def _unsupported(device_type: str, prec: str) -> str:
    """'' when a tiny conv + layer norm + linear + softmax forward and backward runs in ``prec`` on the device, else
    the error (checked once per device type and precision)."""
    dtype = autocast_dtype(torch.device(device_type), prec)
    weights = _DTYPES[prec]
    try:  # fixed values, no random init: resolving a precision must not move the seeded random stream
        conv = torch.linspace(-1, 1, 4 * 3 * 2 * 2, device=device_type).view(4, 3, 2, 2).to(weights)
        linear = torch.linspace(-1, 1, 3 * 4, device=device_type).view(3, 4).to(weights).requires_grad_()
        x = torch.linspace(0, 1, 2 * 3 * 3 * 3, device=device_type).view(2, 3, 3, 3).to(weights)
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            h = F.conv2d(x, conv).flatten(2).mean(-1)
            out = F.linear(F.layer_norm(h, (4,)), linear)
            if out.dtype != (dtype or weights):
                return f"the output was {out.dtype}, not {dtype or weights}"
            loss = out.float().softmax(-1)[:, 0].sum()
        loss.backward()
        if linear.grad is None or not bool(torch.isfinite(linear.grad.float()).all()):
            return "no finite gradient"
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ""


def weight_dtype(prec: str) -> torch.dtype:
    """dtype of the frozen weights for a precision (amp keeps fp32 weights)."""
    return _DTYPES[prec]


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def cast_to_precision(module: nn.Module, prec: str) -> nn.Module:
    """Cast a module's weights to ``prec``'s weight dtype (fp16 / bf16; fp32 and amp keep fp32), normalisation layers
    excepted: they stay fp32, as in CLIP's own fp16 conversion (its LayerNorm computes on an fp32 copy of the input,
    and the norm kernels take fp32 parameters with a low-precision input, not the reverse)."""
    if prec in ("fp16", "bf16"):
        module.to(weight_dtype(prec))
        for sub in module.modules():
            if isinstance(sub, _NORMS):
                sub.float()
    return module


def autocast_dtype(device: torch.device, prec: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in for ``prec`` on ``device`` (None = no autocast): amp is fp16 on GPUs and bf16
    on CPU (CPU autocast in fp16 gains nothing over fp32); bf16 is bf16 everywhere."""
    if prec == "amp":
        return torch.bfloat16 if device.type == "cpu" else torch.float16
    if prec == "bf16":
        return torch.bfloat16
    return None


def compute_dtype(device: torch.device, prec: str) -> torch.dtype:
    """The dtype the matrix products of a ``prec`` module run in on ``device`` (what its outputs depend on)."""
    return autocast_dtype(device, prec) or weight_dtype(prec)


def autocast(device: torch.device, prec: str) -> ContextManager:
    """Autocast for ``amp`` and ``bf16``; for fp32 and fp16 autocast is switched *off*, so a module keeps its own
    precision inside an enclosing autocast (e.g. an fp32 teacher called from an amp student's step)."""
    dtype = autocast_dtype(device, prec)
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(device: torch.device) -> ContextManager:
    """No autocast: for the few products that must stay fp32 inside a mixed-precision step (e.g. teacher logits)."""
    return torch.autocast(device_type=device.type, enabled=False)


def needs_grad_scaler(device: torch.device, prec: str) -> bool:
    """A GradScaler is for fp16 autocast only (amp on a GPU): bf16 has fp32's exponent range, and fp16 weights
    (the reference's fp16) train without one, as in CoOp."""
    return prec == "amp" and autocast_dtype(device, prec) == torch.float16


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated accelerator memory in MiB (None on CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return None
