"""How many training images per class a run really had (no Dassl import).

Dassl's few-shot sampler keeps every image of a class shorter than ``NUM_SHOTS``, so "16 shots" can mean 8.
``results.json`` records the truth as ``shots_used``; the results tables flag runs with fewer than asked.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Optional

__all__ = ["shots_used_record"]


def shots_used_record(dm: Any) -> Optional[Dict[str, int]]:
    """``{"min": a, "max": b}`` images per class of the Dassl DataManager's ``dataset.train_x``; None without one.

    Our datasets measure it when they sample (``dataset.shots_used``, with a warning naming the short classes);
    a CoOp fork's own datasets do not, so the per-class counts of ``train_x`` are taken instead.
    """
    dataset = getattr(dm, "dataset", None)
    record = getattr(dataset, "shots_used", None)
    if isinstance(record, dict) and {"min", "max"} <= set(record):
        return {"min": int(record["min"]), "max": int(record["max"])}
    train = getattr(dataset, "train_x", None)
    if not train:
        return None
    counts = Counter(int(d.label) for d in train)
    return {"min": min(counts.values()), "max": max(counts.values())}
