"""Aggregate CoOp-family output trees into base/new/HM, cross-dataset, DG, few-shot and DFKD tables.

Usage (from the repository root)::

    python -m tools.results output                       # every protocol found under output/
    python -m tools.results output/base2new --protocol base2new --out-dir tables/
    python -m tools.results output --test-log            # parse_test_res.py's --test-log behaviour

Why this exists instead of Dassl's ``parse_test_res.py``: the reference parsers wait for ``Finished training``
while Dassl >= 0.6.1 prints ``Finish training`` (so they find nothing), they read one-decimal log lines, they
report no harmonic mean, and they cannot pair ``test_base``/``test_new`` runs (protocols.md §7-8).

Each run directory (``seedN`` or PromptKD's ``seed_N``) is read from ``results.json`` first (full precision,
information regime) and from its log second. Runs are grouped by the directory names (TAG, CFG, shots), never
by values inside files, so existing output trees of the reference repositories aggregate too. Layouts read
(protocols.md §6, kdpl.md §8):

* base-to-new: ``base2new/{train_base,test_base,test_new}/DATASET/shots_K/TAG/CFG/seedS``
* cross-dataset / DG: ``DATASET/TAG/CFG_Kshots/seedS`` (source) and ``evaluation/TAG/CFG_Kshots/DATASET/seedS``
* reference KDPL cross layout: ``cross_domain_and_datasets/{train,test}/DATASET/shots_K/TAG/CFG/seedS``
* few-shot: ``DATASET/TAG/CFG_Kshots/seedS`` (and CoOp's ``.../CFG_Kshots/nctx*_csc*_ctp*/seedS``)
* PromptKD per-target cross-dataset: ``DATASET/TAG/CFG_0shots/seedS``
* DFKD: ``dfkd/DATASET/TAG/CFG/seedS`` with per-domain accuracies in ``results.json`` (``domains``)

No silently wrong number (checks in ``tools/results_check.py``). A table combines several values per seed; a seed
enters a group's means, std, HM and Average only when it has all of them ("complete seed"), and every other seed is
named in a warning with the path of each missing or unreadable run:

* base2new: a base accuracy (``test_base``, else the final test of ``train_base``) **and** ``test_new``;
* xd / dg: every target any seed of the group has, plus the ImageNet source when any seed has one;
* dfkd: every domain any seed of the group reports (a seed read from its log has no domains);
* fewshot: one run per cell, so nothing to pair; an Average over datasets measured on different seeds is warned.

``n`` is always the number of seeds (never targets or domains); with one seed no std is shown (``std`` empty in
CSV/JSON). A results.json that is invalid JSON, lacks a numeric 0-100 ``accuracy`` or has wrong types is named with
the reason; its run falls back to the one-decimal log value with a warning saying so, or, without a finished log, is
unreadable. A training run whose ``shots_used.min`` is below the shots asked is marked † and warned. Warnings go to
stderr, under each markdown table and into the JSON output.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tools.datasets_table import (
    DG_TARGETS,
    XD_SOURCE,
    XD_TARGETS,
    order_key,
    short_name,
    to_key,
)
from tools.results_check import (
    complete_seeds,
    describe_missing,
    fewest_shots,
    load_results_json,
    mixed_seeds_warning,
    seed_path,
)

PROTOCOLS: tuple[str, ...] = ("base2new", "xd", "dg", "fewshot", "dfkd")

ACCURACY_RE = re.compile(r"\* accuracy: ([\.\deE+-]+)%")
END_SIGNALS: tuple[str, ...] = ("Finish training", "Finished training")  # Dassl >= 0.6.1, older Dassl
RESULT_SIGNAL = "=> result"
_EPOCH_RE = re.compile(r"epoch \[\d+/\d+\]")
_SEED_RE = re.compile(r"^seed_?(\d+)$")
_SHOTS_DIR_RE = re.compile(r"^shots_(\d+)$")
_CFG_SHOTS_RE = re.compile(r"^(.+)_(\d+)shots$")
_B2N_PHASES = ("train_base", "test_base", "test_new")
_B2N_EXPECTED_SUBSAMPLE = {"train_base": "base", "test_base": "base", "test_new": "new"}
_REGIME_KEYS = ("labels", "images", "class_names", "teacher", "student")

EXPECTED_LAYOUTS = {
    "base2new": "base2new/{train_base,test_base,test_new}/DATASET/shots_K/TAG/CFG/seedS",
    "xd": "DATASET/TAG/CFG_Kshots/seedS + evaluation/TAG/CFG_Kshots/DATASET/seedS "
    "(or cross_domain_and_datasets/{train,test}/DATASET/shots_K/TAG/CFG/seedS)",
    "dg": "imagenet/TAG/CFG_Kshots/seedS + evaluation/TAG/CFG_Kshots/{imagenetv2,imagenet_sketch,imagenet_a,"
    "imagenet_r}/seedS",
    "fewshot": "DATASET/TAG/CFG_Kshots/seedS",
    "dfkd": "dfkd/DATASET/TAG/CFG/seedS",
}


class ResultsNotFound(RuntimeError):
    """Raised when an output root holds no readable run for the requested protocol."""


# --------------------------------------------------------------------------------------------------------------
# Reading single runs


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


def classify(path: Path) -> dict[str, Any] | None:
    """Place a seed directory in one of the known layouts from its trailing path components.

    Matching from the end (not relative to the root) lets users point the tool at ``output``,
    ``output/base2new`` or a single seed directory alike.
    """
    parts = path.parts
    seed_match = _SEED_RE.match(parts[-1]) if parts else None
    if seed_match is None:
        return None

    def part(i: int) -> str:
        return parts[i] if len(parts) >= -i else ""

    base = {"seed": int(seed_match.group(1))}
    shots_dir = _SHOTS_DIR_RE.match(part(-4))
    if part(-6) in _B2N_PHASES and shots_dir:
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


def _looks_eval_only(lines: Sequence[str]) -> bool:
    """True for logs of ``--eval-only`` runs, which end with a result block but no end-of-training line."""
    if any(line.strip() in ("eval_only: True", "eval_only : True") for line in lines):
        return True
    return not any(_EPOCH_RE.search(line) for line in lines)


def _last_accuracy_after(lines: Sequence[str], signals: Iterable[str]) -> float | None:
    """parse_test_res.py's rule: start after a line equal (stripped) to a signal, keep the last match."""
    signals = set(signals)
    started = False
    value: float | None = None
    for line in lines:
        if line.strip() in signals:
            started = True
        if started:
            match = ACCURACY_RE.search(line)
            if match:
                value = float(match.group(1))
    return value


def parse_log(path: Path, test_log: bool = False) -> float | None:
    """Final test accuracy from a Dassl log, or None if the run did not finish.

    Default: after ``Finish training``/``Finished training``; eval-only logs (no training loop) fall back to
    ``=> result`` blocks. ``test_log=True`` reads ``=> result`` blocks in every log, as ``--test-log`` does.
    An interrupted training log (per-epoch val blocks, no end line) therefore never counts as a result.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    if test_log:
        return _last_accuracy_after(lines, [RESULT_SIGNAL])
    value = _last_accuracy_after(lines, END_SIGNALS)
    if value is None and _looks_eval_only(lines):
        value = _last_accuracy_after(lines, [RESULT_SIGNAL])
    return value


def log_files(run_dir: Path) -> list[Path]:
    """log.txt plus Dassl's ``log.txt-<timestamp>`` files, newest first.

    Dassl writes a new ``log.txt-<timestamp>`` when a run is resumed into an existing directory, so the
    finished result of a resumed run is in the newest file, not in log.txt.
    """
    stamped = sorted(run_dir.glob("log.txt-*"), key=lambda p: p.name, reverse=True)
    plain = [run_dir / "log.txt"] if (run_dir / "log.txt").is_file() else []
    return [p for p in stamped if p.is_file()] + plain


def read_run(run_dir: Path, test_log: bool = False) -> tuple[float | None, str, dict[str, Any], str]:
    """Accuracy, where it came from, the results.json content (results.json first, logs second), and why
    results.json was unusable ("" when it was fine or absent) so that a log fallback is never silent."""
    info, problem = load_results_json(run_dir / "results.json")
    if info is not None:
        return float(info["accuracy"]), "results.json", info, ""
    for log in log_files(run_dir):
        value = parse_log(log, test_log=test_log)
        if value is not None:
            return value, log.name, {}, problem
    return None, "", {}, problem


def _has_run_files(path: Path) -> bool:
    return (path / "results.json").is_file() or bool(log_files(path))


def _check_consistency(run: Run, scan: Scan) -> None:
    """Warn when results.json disagrees with the directory it sits in (usually a script path bug)."""
    info = run.info
    if not info:
        return
    if isinstance(info.get("dataset"), str) and to_key(info["dataset"]) != run.dataset:
        scan.warnings.append(f"{run.path}: results.json dataset {info['dataset']!r} but directory says "
                             f"{run.dataset!r} (grouped by the directory)")
    expected = _B2N_EXPECTED_SUBSAMPLE.get(run.phase)
    if expected and info.get("subsample_classes") not in (None, expected):
        scan.warnings.append(f"{run.path}: results.json subsample_classes {info['subsample_classes']!r}, "
                             f"expected {expected!r} for {run.phase}")


def scan_tree(root: str | os.PathLike[str], test_log: bool = False) -> Scan:
    """Walk ``root`` and read every seed directory (seed directories are not descended into)."""
    root_path = Path(root).resolve()
    scan = Scan(root=root_path)
    if not root_path.is_dir():
        return scan
    for dirpath, dirnames, _ in os.walk(root_path):
        here = Path(dirpath)
        if not _SEED_RE.match(here.name):
            dirnames.sort()
            continue
        dirnames[:] = []
        if not _has_run_files(here):
            continue
        where = classify(here)
        if where is None:
            scan.unrecognised.append(here)
            continue
        accuracy, source, info, problem = read_run(here, test_log=test_log)
        if accuracy is None:
            scan.incomplete.append(here)
            scan.problems[here] = (f"results.json {problem}, and no log has a final result" if problem else
                                   "no final result yet (no results.json; no log reached the final test)")
            continue
        if problem:
            scan.warnings.append(f"{here / 'results.json'}: {problem}; using the one-decimal accuracy {accuracy} "
                                 f"from {source} instead")
        run = Run(path=here, accuracy=accuracy, source=source, info=info,
                  **{**where, "dataset": to_key(where["dataset"])})
        _check_consistency(run, scan)
        scan.runs.append(run)
    return scan


# --------------------------------------------------------------------------------------------------------------
# Statistics


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


def _mean_over(stats: Sequence[Stat]) -> Stat | None:
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


def _sources(runs: Iterable[Run]) -> str:
    return ",".join(sorted({r.source if r.source == "results.json" else "log" for r in runs}))


# --------------------------------------------------------------------------------------------------------------
# Tables


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


def _index(runs: Iterable[Run], key: Callable[[Run], tuple], scan: Scan | None) -> dict[tuple, dict[int, Run]]:
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


def _acc(runs: dict[int, Run]) -> dict[int, float]:
    return {seed: float(run.accuracy) for seed, run in runs.items() if run.accuracy is not None}


def _fmt(stat: Stat | None, std: bool = True) -> str:
    if stat is None:
        return "-"
    if not std or stat.n == 1 or math.isnan(stat.std):  # a single seed has no spread to show
        return f"{stat.mean:.2f}"
    return f"{stat.mean:.2f} ± {stat.std:.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fmt_n(items: Iterable[Stat | int | None]) -> str:
    """Seed counts of several cells as "3" or, when they differ, "2-3"."""
    ns = sorted({i.n if isinstance(i, Stat) else i for i in items if i is not None})
    return "-" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def _md(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _stat_fields(stat: Stat | None, prefix: str = "") -> dict[str, Any]:
    """Flat fields of a Stat; ``std`` is None (n/a) for one seed or a mean over parts with different seeds."""
    if stat is None:
        return {f"{prefix}mean": None, f"{prefix}std": None, f"{prefix}n": 0, f"{prefix}seeds": {}}
    std = None if stat.n < 2 or math.isnan(stat.std) else stat.std
    return {f"{prefix}mean": stat.mean, f"{prefix}std": std, f"{prefix}n": stat.n, f"{prefix}seeds": stat.seeds}


def _group_title(protocol: str, key: GroupKey) -> str:
    tag, cfg, shots = key
    shots_text = "" if shots is None else f", {shots} shots"
    return f"### {protocol}: {tag} / {cfg}{shots_text}"


def _dagger(fewest: int | None) -> str:
    return "" if fewest is None else " †"


def _final_test_is_base(run: Run) -> bool:
    """Whether a train_base run's final test is the base-class accuracy.

    True for KDPL/CoOp-style runs; not for PromptKD reference logs (``shots_0``), whose final test is the novel
    set (PromptKD#7, #31). results.json settles it when present.
    """
    if run.info:
        return run.info.get("subsample_classes", "base") == "base" and not run.info.get("eval_only", False)
    return run.shots != 0


def _phase_path(run_path: Path, phase: str) -> Path:
    """``base2new/<phase>/DATASET/shots_K/TAG/CFG/seedS`` beside a run of another phase."""
    parts = run_path.parts
    return Path(*parts[:-6], phase, *parts[-5:])


def _b2n_dataset_row(key: GroupKey, dataset: str, phase_runs: dict[str, dict[int, Run]], problems: dict[Path, str],
                     warnings: list[str]) -> tuple[dict, list]:
    """One dataset's base/new/HM row (flat dict) and its markdown cells, over the seeds with both base and new."""
    fallback = {s: r for s, r in phase_runs["train_base"].items() if _final_test_is_base(r)}
    base_runs = {**fallback, **phase_runs["test_base"]}  # test_base wins per seed
    new_runs = phase_runs["test_new"]
    any_run = {s: r for runs in phase_runs.values() for s, r in runs.items()}
    what = f"base2new {key[0]}/{key[1]} {key[2]} shots, {dataset}"

    def describe(phase: str, seed: int) -> str:
        return describe_missing(phase, _phase_path(any_run[seed].path, phase), problems)

    complete, excluded = complete_seeds({"test_base": base_runs, "test_new": new_runs}, describe, what, warnings)
    base_seeds = {s: float(base_runs[s].accuracy) for s in complete}
    new_seeds = {s: float(new_runs[s].accuracy) for s in complete}
    base, new = Stat.of(base_seeds), Stat.of(new_seeds)
    hm_seed = Stat.of({s: harmonic_mean(base_seeds[s], new_seeds[s]) for s in complete})
    hm = harmonic_mean(base.mean, new.mean) if base and new else None
    all_runs = [r for runs in phase_runs.values() for r in runs.values()]
    regime = regime_text(phase_runs["train_base"].values()) or regime_text(all_runs)
    base_from = sorted({"test_base" if s in phase_runs["test_base"] else "train_base" for s in complete})
    fewest = fewest_shots((r for r in all_runs if r.seed in complete), what, warnings)
    row = {"protocol": "base2new", "tag": key[0], "cfg": key[1], "shots": key[2], "dataset": dataset,
           **_stat_fields(base, "base_"), **_stat_fields(new, "new_"), "hm": hm, **_stat_fields(hm_seed, "hm_seed_"),
           "n": len(complete), "excluded_seeds": excluded, "shots_used_min": fewest, "base_from": "+".join(base_from),
           "regime": regime, "sources": _sources(all_runs)}

    def seed_text(s: int) -> str:
        b, n = base_runs.get(s), new_runs.get(s)
        text = f"{s}: {_num(b.accuracy if b else None)}/{_num(n.accuracy if n else None)}"
        return text + (" (left out)" if s in excluded else "")

    cells = [short_name(dataset) + _dagger(fewest), _fmt(base), _fmt(new), _num(hm), _fmt(hm_seed),
             str(len(complete)), "; ".join(seed_text(s) for s in sorted(any_run)), regime]
    return row, cells


def base2new_table(runs: Sequence[Run], scan: Scan | None = None) -> Table | None:
    """Per dataset base / new / HM over complete seeds, and the Average row = HM of the mean base and mean new.

    Per dataset, HM is taken from the seed-mean B and N, and the mean of per-seed HMs is reported beside it
    (papers do not say which they print). Base comes from ``test_base`` per seed, falling back to the final
    test of ``train_base``, which also evaluates on the base test set (the reference convention). A seed without
    both base and new is left out of every number and warned.
    """
    b2n = [r for r in runs if r.layout == "b2n"]
    if not b2n:
        return None
    index = _index(b2n, lambda r: (r.tag, r.cfg, r.shots, r.dataset, r.phase), scan)
    groups: dict[GroupKey, set[str]] = defaultdict(set)
    for tag, cfg, shots, dataset, _ in index:
        groups[(tag, cfg, shots)].add(dataset)

    problems = scan.problems if scan else {}
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    warnings: list[str] = []
    headers = ["Dataset", "Base", "New", "HM", "HM (mean of seeds)", "n", "per seed B/N", "Regime"]
    for key in sorted(groups):
        group_rows: list[dict[str, Any]] = []
        md_rows: list[list[Any]] = []
        for dataset in sorted(groups[key], key=order_key):
            phase_runs = {p: index.get((*key, dataset, p), {}) for p in _B2N_PHASES}
            row, cells = _b2n_dataset_row(key, dataset, phase_runs, problems, warnings)
            group_rows.append(row)
            md_rows.append(cells)
        paired = [r for r in group_rows if r["hm"] is not None]
        if paired:
            mean_b = statistics.fmean(r["base_mean"] for r in paired)
            mean_n = statistics.fmean(r["new_mean"] for r in paired)
            avg_hm = harmonic_mean(mean_b, mean_n)
            mean_of_hms = statistics.fmean(r["hm"] for r in paired)
            regime = " | ".join(dict.fromkeys(r["regime"] for r in paired if r["regime"]))
            mixed = mixed_seeds_warning(f"base2new {key[0]}/{key[1]} {key[2]} shots",
                                        {r["dataset"]: r["base_seeds"] for r in paired})
            warnings += [mixed] if mixed else []
            group_rows.append({"protocol": "base2new", "tag": key[0], "cfg": key[1], "shots": key[2],
                               "dataset": "Average", "base_mean": mean_b, "new_mean": mean_n, "hm": avg_hm,
                               "hm_of_dataset_hms": mean_of_hms, "datasets": len(paired),
                               "n": min(r["n"] for r in paired), "same_seeds": mixed is None, "regime": regime})
            md_rows.append([f"**Average** ({len(paired)} datasets)", f"{mean_b:.2f}", f"{mean_n:.2f}",
                            f"{avg_hm:.2f}", f"(mean of dataset HMs {mean_of_hms:.2f})",
                            _fmt_n(r["n"] for r in paired), "", regime])
        rows += group_rows
        parts.append(_group_title("base2new", key) + "\n\n" + _md(headers, md_rows))
    return Table.noted("base2new", rows, "\n\n".join(parts), warnings)


def _transfer_scope(protocol: str) -> Callable[[str], bool]:
    if protocol == "dg":
        return lambda d: d in DG_TARGETS
    return lambda d: d != XD_SOURCE and d not in DG_TARGETS


def _transfer_roles(run: Run) -> str:
    """'source' for the ImageNet-trained model's own test, 'target' for a transfer test, else ''."""
    if run.layout in ("xd_eval", "kdpl_cross_test"):
        return "source" if run.dataset == XD_SOURCE else "target"
    if run.layout in ("per_dataset", "kdpl_cross_train") and run.dataset == XD_SOURCE:
        return "source"
    if run.layout == "per_dataset" and run.shots == 0:  # PromptKD distils one student per target
        return "target"
    return ""


def transfer_table(protocol: str, runs: Sequence[Run], scan: Scan | None = None) -> Table | None:
    """Cross-dataset (``xd``) or domain-generalisation (``dg``) table: source, targets, mean of targets.

    The average never includes the ImageNet source: xd = mean of the 10 targets, dg = mean of V2/S/A/R
    (kdpl.md §9-10). ImageNet is read from ``evaluation/.../imagenet`` when present, else from the training
    run's final test. Every number of a group is over the seeds that have the source (when the group has one) and
    every target the group has; other seeds are warned.
    """
    in_scope = _transfer_scope(protocol)
    targets = [r for r in runs if _transfer_roles(r) == "target" and in_scope(r.dataset)]
    if not targets:
        return None
    target_index = _index(targets, lambda r: (r.tag, r.cfg, r.shots, r.dataset), scan)
    sources = [r for r in runs if _transfer_roles(r) == "source"]
    evaluated = _index([r for r in sources if r.layout in ("xd_eval", "kdpl_cross_test")],
                       lambda r: (r.tag, r.cfg, r.shots), None)
    trained = _index([r for r in sources if r.layout not in ("xd_eval", "kdpl_cross_test")],
                     lambda r: (r.tag, r.cfg, r.shots), None)
    groups: dict[GroupKey, list[str]] = defaultdict(list)
    for tag, cfg, shots, dataset in target_index:
        groups[(tag, cfg, shots)].append(dataset)
    expected = DG_TARGETS if protocol == "dg" else XD_TARGETS
    columns = sorted({d for ds in groups.values() for d in ds} | set(expected), key=order_key)

    problems = scan.problems if scan else {}
    rows: list[dict[str, Any]] = []
    md_rows: list[list[Any]] = []
    warnings: list[str] = []
    for key in sorted(groups):
        what = f"{protocol} {key[0]}/{key[1]} {key[2]} shots"
        source_runs = {**trained.get(key, {}), **evaluated.get(key, {})}
        target_runs = {d: target_index.get((*key, d), {}) for d in columns}
        needed = {f"{XD_SOURCE} (source)": source_runs} if source_runs else {}
        needed.update({d: seed_runs for d, seed_runs in target_runs.items() if seed_runs})

        def describe(part: str, seed: int, needed: dict[str, dict[int, Run]] = needed) -> str:
            return describe_missing(part, seed_path(next(iter(needed[part].values())).path, seed), problems)

        complete, excluded = complete_seeds(needed, describe, what, warnings)
        source_runs = {s: r for s, r in source_runs.items() if s in complete}
        target_runs = {d: {s: r for s, r in rs.items() if s in complete} for d, rs in target_runs.items()}
        source = Stat.of(_acc(source_runs))
        cells = {d: Stat.of(_acc(target_runs[d])) for d in columns}
        present = [cells[d] for d in columns if cells[d] is not None]
        average = _mean_over(present)
        fewest = fewest_shots(source_runs.values(), what, warnings)
        regime = regime_text([*source_runs.values(), *(r for d in columns for r in target_runs[d].values())])
        common = {"protocol": protocol, "tag": key[0], "cfg": key[1], "shots": key[2]}
        rows.append({**common, "dataset": XD_SOURCE, "role": "source", **_stat_fields(source), "regime": regime,
                     "shots_used_min": fewest, "sources": _sources(source_runs.values())})
        for d in columns:
            if cells[d] is not None:
                rows.append({**common, "dataset": d, "role": "target", **_stat_fields(cells[d]), "regime": regime,
                             "sources": _sources(target_runs[d].values())})
        complete_targets = all(cells.get(d) is not None for d in expected)
        rows.append({**common, "dataset": "Average", "role": "average", **_stat_fields(average),
                     "targets": len(present), "complete": complete_targets, "excluded_seeds": excluded,
                     "regime": regime})
        avg_label = _fmt(average, std=False) + ("" if complete_targets else f" ({len(present)}/{len(expected)})")
        md_rows.append([key[0], key[1], key[2], _fmt(source) + _dagger(fewest), *(_fmt(cells[d]) for d in columns),
                        avg_label, _fmt_n([source, *present]), regime])
    headers = ["Trainer", "Config", "Shots", f"{short_name(XD_SOURCE)} (source)",
               *(short_name(d) for d in columns), "Average (targets)", "n", "Regime"]
    title = "### Domain generalisation" if protocol == "dg" else "### Cross-dataset transfer"
    return Table.noted(protocol, rows, title + "\n\n" + _md(headers, md_rows), warnings)


def fewshot_table(runs: Sequence[Run], scan: Scan | None = None,
                  exclude: Callable[[Run], bool] = lambda r: False) -> Table | None:
    """Per (TAG, CFG): one row per dataset, one column per shots value, plus an Average row per shots."""
    few = [r for r in runs if r.layout == "per_dataset" and not exclude(r)]
    if not few:
        return None
    index = _index(few, lambda r: (r.tag, r.cfg, r.dataset, r.shots), scan)
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for tag, cfg, dataset, _ in index:
        groups[(tag, cfg)].add(dataset)
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    warnings: list[str] = []
    for tag, cfg in sorted(groups):
        shots_values = sorted({k[3] for k in index if k[:2] == (tag, cfg)})
        md_rows: list[list[Any]] = []
        per_shot: dict[int, dict[str, Stat]] = defaultdict(dict)
        for dataset in sorted(groups[(tag, cfg)], key=order_key):
            cells: list[str] = []
            seeds_seen: list[Stat | None] = []
            regime = regime_text(r for k in shots_values for r in index.get((tag, cfg, dataset, k), {}).values())
            for shots in shots_values:
                seed_runs = index.get((tag, cfg, dataset, shots), {})
                stat = Stat.of(_acc(seed_runs))
                fewest = fewest_shots(seed_runs.values(), f"fewshot {tag}/{cfg} {dataset}", warnings)
                seeds_seen.append(stat)
                cells.append(_fmt(stat) + (_dagger(fewest) if stat else ""))
                if stat is not None:
                    per_shot[shots][dataset] = stat
                    rows.append({"protocol": "fewshot", "tag": tag, "cfg": cfg, "dataset": dataset, "shots": shots,
                                 **_stat_fields(stat), "shots_used_min": fewest,
                                 "regime": regime_text(seed_runs.values()), "sources": _sources(seed_runs.values())})
            md_rows.append([short_name(dataset), *cells, _fmt_n(seeds_seen), regime])
        averages = {shots: _mean_over(list(per_shot[shots].values())) for shots in shots_values}
        for shots, stat in averages.items():
            mixed = mixed_seeds_warning(f"fewshot {tag}/{cfg} {shots} shots",
                                        {d: s.seeds for d, s in per_shot[shots].items()})
            warnings += [mixed] if mixed else []
            rows.append({"protocol": "fewshot", "tag": tag, "cfg": cfg, "dataset": "Average", "shots": shots,
                         **_stat_fields(stat), "datasets": len(per_shot[shots]), "same_seeds": mixed is None})
        md_rows.append(["**Average**", *(f"{_fmt(averages[k], std=False)} ({len(per_shot[k])} ds)"
                                         for k in shots_values), "", ""])
        headers = ["Dataset", *(f"{k} shots" for k in shots_values), "n", "Regime"]
        parts.append(_group_title("fewshot", (tag, cfg, None)) + "\n\n" + _md(headers, md_rows))
    return Table.noted("fewshot", rows, "\n\n".join(parts), warnings)


def dfkd_table(runs: Sequence[Run], scan: Scan | None = None) -> Table | None:
    """Per dataset: one row per (TAG, CFG), one column per domain, the mean over domains, and the overall value.

    Domains are columns, never samples: ``n`` and the std are over seeds, and only seeds reporting every domain of
    the row count (a seed read from its log has no per-domain values and is warned).
    """
    dfkd = [r for r in runs if r.layout == "dfkd"]
    if not dfkd:
        return None
    index = _index(dfkd, lambda r: (r.dataset, r.tag, r.cfg), scan)
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    warnings: list[str] = []
    for dataset in sorted({k[0] for k in index}, key=order_key):
        keys = sorted(k for k in index if k[0] == dataset)
        domains = sorted({d for k in keys for r in index[k].values() for d in r.domains})
        md_rows: list[list[Any]] = []
        for key in keys:
            seed_runs = index[key]
            needed = {"overall": seed_runs,
                      **{d: {s: r for s, r in seed_runs.items() if d in r.domains} for d in domains}}

            def describe(domain: str, seed: int, seed_runs: dict[int, Run] = seed_runs) -> str:
                run = seed_runs[seed]
                where = ("its results.json" if run.source == "results.json"
                         else f"{run.source}, a log (no per-domain accuracies)")
                return f"domain {domain!r} has no accuracy in {run.path} (read from {where})"

            complete, excluded = complete_seeds(needed, describe, f"dfkd {key[1]}/{key[2]} on {dataset}", warnings)
            kept = {s: r for s, r in seed_runs.items() if s in complete}
            common = {"protocol": "dfkd", "tag": key[1], "cfg": key[2], "dataset": dataset}
            regime = regime_text(kept.values())
            cells = {d: Stat.of({s: r.domains[d] for s, r in kept.items()}) for d in domains}
            for d in domains:
                if cells[d] is not None:
                    rows.append({**common, "domain": d, **_stat_fields(cells[d]), "regime": regime})
            mean = _mean_over([c for c in cells.values() if c is not None])
            overall = Stat.of(_acc(kept))
            rows.append({**common, "domain": "Mean", **_stat_fields(mean), "domains": len(domains),
                         "excluded_seeds": excluded, "regime": regime})
            rows.append({**common, "domain": "Overall", **_stat_fields(overall), "regime": regime,
                         "sources": _sources(kept.values())})
            md_rows.append([key[1], key[2], *(_fmt(cells[d]) for d in domains), _fmt(mean), _fmt(overall),
                            _fmt_n([overall, mean]), regime])
        headers = ["Trainer", "Config", *domains, "Mean (domains)", "Overall", "n", "Regime"]
        parts.append(f"### dfkd: {dataset}\n\n" + _md(headers, md_rows))
    return Table.noted("dfkd", rows, "\n\n".join(parts), warnings)


def build_tables(root: str | os.PathLike[str], protocol: str = "auto",
                 test_log: bool = False) -> tuple[list[Table], Scan]:
    """Scan ``root`` and build the requested table(s); raise ResultsNotFound with the expected layout if empty."""
    if protocol != "auto" and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)} or auto")
    scan = scan_tree(root, test_log=test_log)
    wanted = PROTOCOLS if protocol == "auto" else (protocol,)
    tables: dict[str, Table | None] = {}
    if "base2new" in wanted:
        tables["base2new"] = base2new_table(scan.runs, scan)
    for name in ("xd", "dg"):
        if name in wanted:
            tables[name] = transfer_table(name, scan.runs, scan)
    if "fewshot" in wanted:
        tables["fewshot"] = fewshot_table(scan.runs, scan, exclude=_used_by_transfer(scan.runs, tables, protocol))
    if "dfkd" in wanted:
        tables["dfkd"] = dfkd_table(scan.runs, scan)
    found = [t for t in tables.values() if t is not None]
    if not found:
        raise ResultsNotFound(_not_found_message(scan, wanted))
    return found, scan


def _used_by_transfer(runs: Sequence[Run], tables: dict[str, Table | None],
                      protocol: str) -> Callable[[Run], bool]:
    """In auto mode an ImageNet source run (or a PromptKD per-target run) belongs to the xd/dg tables only."""
    if protocol != "auto":
        return lambda r: False
    transfer = [t for name, t in tables.items() if name in ("xd", "dg") and t is not None]
    groups = {(row["tag"], row["cfg"], row["shots"]) for table in transfer for row in table.rows}
    return lambda r: _transfer_roles(r) != "" and (r.tag, r.cfg, r.shots) in groups


def _not_found_message(scan: Scan, wanted: Sequence[str]) -> str:
    layouts = "\n  ".join(f"{p}: {EXPECTED_LAYOUTS[p]}" for p in wanted)
    message = (f"no results under {scan.root}: expected seed directories (seedN or seed_N) holding results.json "
               f"or a finished log.txt, in the layout\n  {layouts}")
    if not scan.root.is_dir():
        message += f"\n({scan.root} is not a directory)"
    if scan.runs:
        other = sorted({r.layout for r in scan.runs})
        message += f"\nfound {len(scan.runs)} run(s) of other layouts: {', '.join(other)}"
    if scan.incomplete:
        message += f"\n{len(scan.incomplete)} run dir(s) have no final result yet, e.g. {scan.incomplete[0]}"
    if scan.unrecognised:
        message += f"\n{len(scan.unrecognised)} seed dir(s) in an unknown layout, e.g. {scan.unrecognised[0]}"
    return message


# --------------------------------------------------------------------------------------------------------------
# Output


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps({str(k): v for k, v in value.items()})
    return "" if value is None else value


def write_outputs(tables: Sequence[Table], out_dir: str | os.PathLike[str], scan: Scan | None = None) -> list[Path]:
    """Write ``results_<protocol>.{csv,json,md}`` per table; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in tables:
        columns = list(dict.fromkeys(k for row in table.rows for k in row))
        csv_path = out / f"results_{table.protocol}.csv"
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in table.rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in columns})
        json_path = out / f"results_{table.protocol}.json"
        payload = {"protocol": table.protocol, "root": str(scan.root) if scan else None, "rows": table.rows,
                   "incomplete": [{"path": str(p), "reason": scan.problems.get(p, "")} for p in scan.incomplete]
                   if scan else [],
                   "warnings": [*(scan.warnings if scan else []), *table.warnings]}
        json_path.write_text(json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
        md_path = out / f"results_{table.protocol}.md"
        md_path.write_text(table.markdown + "\n", encoding="utf-8")
        written += [csv_path, json_path, md_path]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="OUTPUT_ROOT", help="output tree to aggregate (e.g. output or output/base2new)")
    parser.add_argument("--protocol", default="auto", choices=[*PROTOCOLS, "auto"],
                        help="which table to build (default: every protocol found)")
    parser.add_argument("--out-dir", default=None, help="where CSV/JSON/markdown go (default: OUTPUT_ROOT)")
    parser.add_argument("--test-log", action="store_true",
                        help="read '=> result' blocks in every log instead of waiting for the end-of-training line")
    parser.add_argument("--paper", choices=("kdpl", "promptkd"), default=None,
                        help="print ours beside the paper's numbers and the difference (tools/paper.py)")
    parser.add_argument("--plot", action="store_true", help="write PNG figures + their data under OUT_DIR/plots "
                                                            "(tools/plots.py)")
    args = parser.parse_args(argv)
    try:
        tables, scan = build_tables(args.root, args.protocol, test_log=args.test_log)
    except ResultsNotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n\n".join(t.markdown for t in tables))
    for message in [*scan.warnings, *(w for t in tables for w in t.warnings)]:
        print(f"warning: {message}", file=sys.stderr)
    for path in scan.incomplete:
        print(f"warning: {path} skipped: {scan.problems.get(path, 'no final result yet')}", file=sys.stderr)
    for path in scan.unrecognised:
        print(f"warning: unknown layout, skipped: {path}", file=sys.stderr)
    for path in write_outputs(tables, args.out_dir or args.root, scan):
        print(f"wrote {path}", file=sys.stderr)
    written: list[Path] = []
    if args.paper:
        from tools.paper import report

        text, written = report(tables, args.paper, Path(args.out_dir or args.root))
        print("\n\n" + text)
    if args.plot:
        from tools.plots import write_plots

        written += write_plots(tables, scan, Path(args.out_dir or args.root) / "plots", args.paper)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
