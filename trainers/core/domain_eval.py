"""Per-domain accuracy of a multi-domain test set (Dassl's evaluator reports only the pooled value), free of Dassl."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Sequence

import torch


def benchmark_domains(cfg, dataset: Any = None) -> List[str]:
    """Every domain name of the benchmark (the style dictionary must not name any): the dataset's list plus the
    configured source/target domains."""
    names = list(getattr(dataset, "domains", []) or [])
    return names + [d for d in list(cfg.DATASET.SOURCE_DOMAINS) + list(cfg.DATASET.TARGET_DOMAINS) if d not in names]


class DomainAccuracy:
    """Top-1 and mean per-class accuracy per test domain (Dassl's evaluator gives only the pooled value)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.reset()

    def reset(self) -> None:
        self.counts: Dict[int, Dict[int, List[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))

    def update(self, logits: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> None:
        pred = logits.argmax(-1).cpu()
        for p, y, d in zip(pred.tolist(), labels.cpu().tolist(), domains.cpu().tolist()):
            cell = self.counts[d][y]
            cell[0] += int(p == y)
            cell[1] += 1

    def name(self, d: int) -> str:
        return self.names[d] if 0 <= d < len(self.names) else str(d)

    def top1(self) -> Dict[str, float]:
        return {self.name(d): 100.0 * sum(c[0] for c in per.values()) / sum(c[1] for c in per.values())
                for d, per in sorted(self.counts.items())}

    def mean_per_class(self) -> Dict[str, float]:
        return {self.name(d): 100.0 * sum(c[0] / c[1] for c in per.values()) / len(per)
                for d, per in sorted(self.counts.items())}


__all__ = ["DomainAccuracy", "benchmark_domains"]
