"""Where a run sits: the seed-directory layouts of the protocols, and the Run / Scan records built from them.

Runs are grouped by directory names (TAG, CFG, shots), never by values inside files, so existing output trees of
the reference repositories aggregate too (protocols.md §6, kdpl.md §8). A protocol with a layout of its own adds a
matcher with :func:`register_layout` from its module; nothing here needs editing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SEED_RE = re.compile(r"^seed_?(\d+)$")
_SHOTS_DIR_RE = re.compile(r"^shots_(\d+)$")
_CFG_SHOTS_RE = re.compile(r"^(.+)_(\d+)shots$")
B2N_PHASES = ("train_base", "test_base", "test_new")

# part(i) -> the i-th path component from the end (i < 0), "" past the start; returns the Run fields but the seed
LayoutMatcher = Callable[[Callable[[int], str]], "dict[str, Any] | None"]
_EXTRA_MATCHERS: list[LayoutMatcher] = []


@dataclass
class Run:
    """One seed directory: where it sits in the layout and what it scored."""

    path: Path
    layout: str  # b2n | per_dataset | xd_eval | kdpl_cross_train | kdpl_cross_test | dfkd
    dataset: str  # dataset key (directory name, normalised through tools.datasets_table)
    tag: str  # TRAINER or TRAINER-CA
    cfg: str
    shots: int | None  # None for DFKD (no shots in its path)
    seed: int
    phase: str = ""  # train_base | test_base | test_new for b2n
    accuracy: float | None = None
    source: str = ""  # "results.json" or the log file name the value came from
    info: dict[str, Any] = field(default_factory=dict)  # the parsed results.json, if any

    @property
    def regime(self) -> dict[str, Any] | None:
        regime = self.info.get("regime")
        return regime if isinstance(regime, dict) else None

    @property
    def domains(self) -> dict[str, float]:
        domains = self.info.get("domains")
        if not isinstance(domains, dict):
            return {}
        return {str(k): float(v) for k, v in domains.items()}  # validated by load_results_json


@dataclass
class Scan:
    """All runs found under a root, plus what could not be used (reported, never silently dropped)."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    incomplete: list[Path] = field(default_factory=list)
    unrecognised: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: dict[Path, str] = field(default_factory=dict)  # incomplete run dir -> why it has no usable result


def register_layout(matcher: LayoutMatcher) -> LayoutMatcher:
    """Add a layout for a new protocol; it is tried before the built-in ones (which end in catch-all patterns).

    ``matcher(part)`` gets ``part(i)``, the i-th path component from the end (``part(-1)`` is the seed directory),
    and returns the Run fields ``layout, dataset, tag, cfg, shots`` (and optionally ``phase``), or None.
    """
    _EXTRA_MATCHERS.append(matcher)
    return matcher


def unregister_layout(matcher: LayoutMatcher) -> None:
    """Remove a matcher added by :func:`register_layout` (tests register temporary layouts)."""
    _EXTRA_MATCHERS.remove(matcher)


def classify(path: Path) -> dict[str, Any] | None:
    """Place a seed directory in one of the known layouts from its trailing path components.

    Matching from the end (not relative to the root) lets users point the tool at ``output``,
    ``output/base2new`` or a single seed directory alike.
    """
    parts = path.parts
    seed_match = SEED_RE.match(parts[-1]) if parts else None
    if seed_match is None:
        return None

    def part(i: int) -> str:
        return parts[i] if len(parts) >= -i else ""

    base = {"seed": int(seed_match.group(1))}
    for matcher in _EXTRA_MATCHERS:
        found = matcher(part)
        if found is not None:
            return {**base, **found}
    shots_dir = _SHOTS_DIR_RE.match(part(-4))
    if part(-6) in B2N_PHASES and shots_dir:
        return {**base, "layout": "b2n", "phase": part(-6), "dataset": part(-5), "shots": int(shots_dir.group(1)),
                "tag": part(-3), "cfg": part(-2)}
    if part(-6) in ("train", "test") and shots_dir:
        return {**base, "layout": f"kdpl_cross_{part(-6)}", "dataset": part(-5), "shots": int(shots_dir.group(1)),
                "tag": part(-3), "cfg": part(-2)}
    cfg_shots = _CFG_SHOTS_RE.match(part(-3))
    if part(-5) == "evaluation" and cfg_shots:
        return {**base, "layout": "xd_eval", "dataset": part(-2), "tag": part(-4), "cfg": cfg_shots.group(1),
                "shots": int(cfg_shots.group(2))}
    if part(-5) == "dfkd":
        return {**base, "layout": "dfkd", "dataset": part(-4), "tag": part(-3), "cfg": part(-2), "shots": None}
    cfg_shots_here = _CFG_SHOTS_RE.match(part(-2))
    if cfg_shots_here and part(-4):
        return {**base, "layout": "per_dataset", "dataset": part(-4), "tag": part(-3),
                "cfg": cfg_shots_here.group(1), "shots": int(cfg_shots_here.group(2))}
    if cfg_shots and part(-5):  # CoOp few-shot: DATASET/CoOp/CFG_Kshots/nctx*_csc*_ctp*/seedS
        return {**base, "layout": "per_dataset", "dataset": part(-5), "tag": part(-4),
                "cfg": f"{cfg_shots.group(1)}/{part(-2)}", "shots": int(cfg_shots.group(2))}
    return None
