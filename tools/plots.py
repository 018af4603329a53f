"""Figures for ``python -m tools.results OUTPUT --plot`` (matplotlib, Agg backend: no display needed).

* Per table group: bars per dataset of base / new / HM (base2new), accuracy (xd, dg) or accuracy per shots
  (fewshot), ours with the seed spread (± std error bar and one dot per seed) beside the paper's number when
  ``--paper`` names one. ``plots/<protocol>_<tag>_<cfg>[_<K>shots].png``.
* Per training run: its loss terms (and learning rate) per epoch from the run's tensorboard scalars.
  ``plots/curves/<run path below the root>.png``.

Every PNG has a CSV beside it with exactly the plotted numbers, so the data can be checked (and re-plotted) without
reading pixels.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tools.datasets_table import short_name
from tools.paper import Group, attach_paper, our_groups

_BATCH_RE = re.compile(r"epoch \[\d+/\d+\] batch \[\d+/(\d+)\]")
_OURS, _PAPER = "#1f77b4", "#bbbbbb"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


# ----------------------------------------------------------------------------------------------- result bars


def group_stem(group: Group) -> str:
    shots = "" if group.shots in (None, "") else f"_{group.shots}shots"
    return _safe(f"{group.protocol}_{group.tag}_{group.cfg}") + shots


def bar_figure(group: Group):
    """One subplot per metric; per dataset our bar (± std, seeds as dots) and the paper's beside it."""
    plt = _pyplot()
    datasets = group.datasets
    size = (max(6.0, 1.1 * len(datasets) + 2), 2.8 * len(group.metrics))
    fig, axes = plt.subplots(len(group.metrics), 1, figsize=size, squeeze=False)
    with_paper = any(c.paper is not None for c in group.cells)
    width = 0.4 if with_paper else 0.6
    for ax, metric in zip(axes[:, 0], group.metrics):
        labelled: set = set()

        def label(name: str) -> Optional[str]:
            """The legend entry, once per subplot."""
            if name in labelled:
                return None
            labelled.add(name)
            return name

        for x, dataset in enumerate(datasets):
            cell = group.cell(dataset, metric)
            if cell is None or cell.mean is None:
                continue
            xo = x - width / 2 if with_paper else x
            err = cell.std if cell.n >= 2 and cell.std is not None else None
            ax.bar(xo, cell.mean, width, yerr=err, capsize=3, color=_OURS, label=label("ours"),
                   gid=f"ours:{dataset}:{metric}")
            if cell.seeds:
                ax.plot([xo] * len(cell.seeds), list(cell.seeds.values()), "k.", markersize=4)
            if cell.paper is not None:
                ax.bar(x + width / 2, cell.paper.value, width, color=_PAPER, hatch="//", label=label("paper"),
                       gid=f"paper:{dataset}:{metric}")
        ax.set_xticks(range(len(datasets)), [short_name(d) for d in datasets], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(f"{group.title} ({group.backbone})", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        axes[0, 0].legend(handles, labels, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_bar_figures(groups: Sequence[Group], out_dir: Path) -> List[Path]:
    """PNG + CSV per group."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for group in groups:
        if not group.cells:
            continue
        stem = out_dir / group_stem(group)
        fig = bar_figure(group)
        fig.savefig(stem.with_suffix(".png"), dpi=110)
        plt.close(fig)
        with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["dataset", "metric", "ours_mean", "ours_std", "n", "seeds", "paper"])
            for c in group.cells:
                writer.writerow([c.dataset, c.metric, c.mean, "" if c.std is None else c.std, c.n,
                                 json.dumps(c.seeds), c.paper.printed if c.paper else ""])
        written += [stem.with_suffix(".png"), stem.with_suffix(".csv")]
    return written


# ----------------------------------------------------------------------------------------------- training curves


def batches_per_epoch(run_dir: Path) -> Optional[int]:
    """Batches per epoch from the run's Dassl log lines (``epoch [e/E] batch [b/N]``; log.txt or the
    ``log.txt-<timestamp>`` of a resumed run); None without one."""
    for log in sorted(run_dir.glob("log.txt*"), reverse=True):
        try:
            found = _BATCH_RE.findall(log.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if found:
            return int(found[-1])
    return None


def read_scalars(run_dir: Path) -> Dict[str, Dict[int, float]]:
    """tag -> step -> value from every event file of ``run_dir/tensorboard`` (a resumed run has several; the
    latest write of a step wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = run_dir / "tensorboard"
    out: Dict[str, Dict[int, float]] = {}
    for events in sorted(board.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                out.setdefault(tag, {})[int(event.step)] = float(event.value)
    return out


def per_epoch(scalars: Dict[str, Dict[int, float]], batches: Optional[int]) -> Dict[str, Dict[int, float]]:
    """tag -> epoch (1-based) -> value at the epoch's last logged step (the trainers log running means over the
    epoch, so that is the epoch's mean up to that step). Without the batch count, steps are kept as they are."""
    if not batches:
        return scalars
    out: Dict[str, Dict[int, float]] = {}
    for tag, steps in scalars.items():
        for step in sorted(steps):
            out.setdefault(tag, {})[step // batches + 1] = steps[step]
    return out


def curve_figure(series: Dict[str, Dict[int, float]], title: str, xlabel: str):
    plt = _pyplot()
    tags = sorted(series)
    fig, axes = plt.subplots(len(tags), 1, figsize=(6, 2.2 * len(tags)), squeeze=False, sharex=True)
    for ax, tag in zip(axes[:, 0], tags):
        points = sorted(series[tag].items())
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", markersize=3, label=tag)
        ax.set_ylabel(tag.split("/", 1)[-1], fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_curve_figures(run_dirs: Sequence[Path], root: Path, out_dir: Path) -> List[Path]:
    """PNG + CSV of the training scalars per epoch for every run directory with tensorboard training scalars."""
    plt = _pyplot()
    written: List[Path] = []
    for run_dir in run_dirs:
        if not (run_dir / "tensorboard").is_dir():
            continue
        scalars = {t: v for t, v in read_scalars(run_dir).items() if t.startswith("train/") and v}
        if not scalars:
            continue
        batches = batches_per_epoch(run_dir)
        series = per_epoch(scalars, batches)
        xlabel = "epoch" if batches else "step"
        try:
            rel = run_dir.relative_to(root)
        except ValueError:
            rel = Path(_safe(str(run_dir)))
        stem = out_dir / "curves" / rel
        stem.parent.mkdir(parents=True, exist_ok=True)
        fig = curve_figure(series, str(rel), xlabel)
        fig.savefig(stem.with_suffix(".png"), dpi=100)
        plt.close(fig)
        with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["tag", xlabel, "value"])
            for tag in sorted(series):
                for x, value in sorted(series[tag].items()):
                    writer.writerow([tag, x, value])
        written += [stem.with_suffix(".png"), stem.with_suffix(".csv")]
    return written


def write_plots(tables: Sequence[Any], scan: Any, out_dir: Path, paper: Optional[str] = None) -> List[Path]:
    """Every figure of ``--plot``: result bars per table group (with the paper's numbers when ``paper`` is set) and
    training curves per run found by the scan (finished or interrupted)."""
    groups = our_groups(tables)
    if paper:
        groups = attach_paper(groups, paper)
    out_dir = Path(out_dir)
    runs = sorted({Path(r.path) for r in scan.runs} | {Path(p) for p in scan.incomplete})
    return write_bar_figures(groups, out_dir) + write_curve_figures(runs, Path(scan.root), out_dir)
