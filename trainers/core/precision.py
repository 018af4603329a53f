"""Device and precision: fp32 everywhere on CPU; fp16, bf16 or amp (fp32 weights + autocast) on GPU."""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import ContextManager

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}


def resolve_precision(prec: str, device: torch.device, what: str = "model") -> str:
    """Validate ``prec``; on CPU everything but fp32 falls back to fp32 with a warning (fp16 convs fail on CPU)."""
    prec = (prec or "fp32").lower()
    if prec not in PRECISIONS:
        raise ValueError(f"Unknown precision {prec!r} for the {what}; use one of {PRECISIONS}.")
    if device.type == "cpu" and prec != "fp32":
        warnings.warn(f"{what}: precision {prec} is not supported on CPU; using fp32.", stacklevel=2)
        return "fp32"
    return prec


def weight_dtype(prec: str) -> torch.dtype:
    """dtype of the frozen weights for a precision (amp keeps fp32 weights)."""
    return _DTYPES[prec]


def autocast(device: torch.device, prec: str) -> ContextManager:
    """Autocast context for ``amp`` (fp16) and ``bf16`` compute; a no-op otherwise."""
    if prec == "amp":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    if prec == "bf16" and device.type != "cpu":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated accelerator memory in MiB (None on CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return None
