"""A protocol's result (:class:`Table`) and what every protocol does with runs: index them per seed, read their
accuracies, state their information regime and where their values came from."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tools.results.layout import Run, Scan

_REGIME_KEYS = ("labels", "images", "class_names", "teacher", "student")


@dataclass
class Table:
    """One protocol's result: flat rows (CSV/JSON, full precision), a markdown rendering and its warnings."""

    protocol: str
    rows: list[dict[str, Any]]
    markdown: str
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def noted(cls, protocol: str, rows: list[dict[str, Any]], markdown: str, warnings: list[str]) -> Table:
        """The table with its warnings listed under the markdown, so that a pasted table keeps its caveats."""
        notes = "".join(f"\n- {w}" for w in warnings)
        return cls(protocol, rows, markdown + (f"\n\n**Warnings**{notes}" if warnings else ""), list(warnings))


GroupKey = tuple[str, str, Any]


def index_runs(runs: Iterable[Run], key: Callable[[Run], tuple], scan: Scan | None) -> dict[tuple, dict[int, Run]]:
    """key(run) -> seed -> run; a second run for the same key and seed keeps results.json over a log."""
    out: dict[tuple, dict[int, Run]] = defaultdict(dict)
    for run in runs:
        slot = out[key(run)]
        old = slot.get(run.seed)
        if old is not None:
            keep = run if (run.source == "results.json" and old.source != "results.json") else old
            if scan is not None:
                scan.warnings.append(f"duplicate result for seed {run.seed}: {old.path} and {run.path}; "
                                     f"using {keep.path}")
            slot[run.seed] = keep
        else:
            slot[run.seed] = run
    return out


def accuracies(runs: dict[int, Run]) -> dict[int, float]:
    """seed -> accuracy of the runs that have one."""
    return {seed: float(run.accuracy) for seed, run in runs.items() if run.accuracy is not None}


def regime_text(runs: Iterable[Run]) -> str:
    """The information regime(s) stated in results.json, e.g. "labels=none; images=16-shot base; ..."."""
    texts: list[str] = []
    for run in runs:
        regime = run.regime
        if not regime:
            continue
        keys = [k for k in _REGIME_KEYS if k in regime] + [k for k in regime if k not in _REGIME_KEYS]
        text = "; ".join(f"{k}={regime[k]}" for k in keys)
        if text not in texts:
            texts.append(text)
    return " | ".join(texts)


def sources_text(runs: Iterable[Run]) -> str:
    """Where a cell's values came from ("log", "results.json" or both), so one-decimal log values show."""
    return ",".join(sorted({r.source if r.source == "results.json" else "log" for r in runs}))
