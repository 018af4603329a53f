"""Numbers over seeds: mean and population std (as parse_test_res.py), the harmonic mean, means of means."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class Stat:
    """Mean and population standard deviation over seeds (numpy's default, as parse_test_res.py)."""

    mean: float
    std: float
    n: int
    seeds: dict[int, float]

    @classmethod
    def of(cls, seeds: dict[int, float]) -> Stat | None:
        if not seeds:
            return None
        values = [seeds[s] for s in sorted(seeds)]
        return cls(statistics.fmean(values), statistics.pstdev(values), len(values), dict(sorted(seeds.items())))


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2BN/(B+N) (0 when both are 0)."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


def mean_over(stats: Sequence[Stat]) -> Stat | None:
    """Mean of several means (e.g. over targets or domains); ``n`` counts seeds, not parts.

    The std and per-seed averages exist only when every part has the same seeds (otherwise NaN / empty, and n is
    the fewest seeds of a part: a spread over a subset of seeds would look more certain than it is).
    """
    if not stats:
        return None
    seed_sets = [set(s.seeds) for s in stats]
    same_seeds = all(seeds == seed_sets[0] for seeds in seed_sets)
    per_seed = ({seed: statistics.fmean(s.seeds[seed] for s in stats) for seed in sorted(seed_sets[0])}
                if same_seeds else {})
    std = statistics.pstdev(per_seed.values()) if per_seed else float("nan")
    return Stat(statistics.fmean(s.mean for s in stats), std, min(s.n for s in stats), per_seed)


def stat_fields(stat: Stat | None, prefix: str = "") -> dict[str, Any]:
    """Flat fields of a Stat; ``std`` is None (n/a) for one seed or a mean over parts with different seeds."""
    if stat is None:
        return {f"{prefix}mean": None, f"{prefix}std": None, f"{prefix}n": 0, f"{prefix}seeds": {}}
    std = None if stat.n < 2 or math.isnan(stat.std) else stat.std
    return {f"{prefix}mean": stat.mean, f"{prefix}std": std, f"{prefix}n": stat.n, f"{prefix}seeds": stat.seeds}
