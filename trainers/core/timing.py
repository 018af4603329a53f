"""Timing of a region of every step (e.g. the teacher forward) without a host sync per step."""
from __future__ import annotations

import time
from typing import Any, List, Tuple

import torch


class RegionTimer:
    """Total time spent inside ``with timer:`` blocks, without a host sync per block (CUDA events, read once)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: List[Tuple[Any, Any]] = []
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> "RegionTimer":
        if self.cuda:
            self.events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self.events[-1][0].record()
        else:
            self._start = time.time()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.events[-1][1].record()
        else:
            self.seconds += time.time() - self._start

    def total(self) -> float:
        if self.events:
            torch.cuda.synchronize()
            self.seconds += sum(a.elapsed_time(b) for a, b in self.events) / 1000.0
            self.events.clear()
        return self.seconds
