"""Our tables beside a paper's: ``python -m tools.results OUTPUT --paper kdpl|promptkd``.

Per table group (trainer tag, config, shots) and dataset present in our output: our mean ± std over seeds, the
published number, and the difference ours - paper, marked ``!`` when it is larger than two of our standard deviations
(or 1 point when there is one seed, or when the seeds agree exactly: no spread to measure against). The published
numbers are data (``tools/paper_results/*.csv``, each row with its backbone, setting and source); a paper row is
compared only with our runs of the same trainer tag and backbone (the backbone comes from results.json's regime,
``student=...``, else from the config name), except KDPL's cross-dataset chart whose backbone is not printed.

The per-dataset values assembled here (:func:`our_groups`) also feed the figures of ``--plot`` (``tools/plots.py``).
"""
from __future__ import annotations

import csv
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from tools.datasets_table import BASE2NEW_DATASETS, order_key, short_name

DATA_DIR = Path(__file__).resolve().parent / "paper_results"
PAPERS = {"kdpl": "KDPL (Mistretta et al., ECCV 2024)", "promptkd": "PromptKD (Li et al., CVPR 2024)"}
METRICS = {"base2new": ("base", "new", "hm"), "xd": ("accuracy",), "dg": ("accuracy",)}
UNSTATED = "unstated"
ONE_SEED_POINTS = 1.0  # the flag threshold when our runs give no spread
CFG_BACKBONES = (("vit_b32", "ViT-B/32"), ("vit_b16", "ViT-B/16"), ("vit_l14", "ViT-L/14"), ("rn50", "RN50"),
                 ("rn101", "RN101"))


@dataclass
class PaperRow:
    """One published number (a line of tools/paper_results/<paper>.csv)."""

    protocol: str
    trainer: str
    backbone: str
    teacher: str
    dataset: str
    metric: str
    value: float
    printed: str
    paper_method: str
    setting: str
    source: str


def load_paper(paper: str) -> List[PaperRow]:
    """The published rows of ``paper`` (kdpl | promptkd)."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    with open(DATA_DIR / f"{paper}.csv", newline="", encoding="utf-8") as f:
        return [PaperRow(protocol=r["protocol"], trainer=r["trainer"], backbone=r["backbone"], teacher=r["teacher"],
                         dataset=r["dataset"], metric=r["metric"], value=float(r["value"]), printed=r["value"],
                         paper_method=r["paper_method"], setting=r["setting"], source=r["source"])
                for r in csv.DictReader(f)]


@dataclass
class Cell:
    """Our value of one metric on one dataset (over seeds), and the paper's when there is one."""

    dataset: str
    metric: str
    mean: Optional[float]
    std: Optional[float]
    n: int
    seeds: Dict[int, float] = field(default_factory=dict)
    note: str = ""  # e.g. "3 targets" on an incomplete Average
    paper: Optional[PaperRow] = None
    comparable: bool = True  # False: an Average over fewer datasets than the paper's (its number is only shown)

    @property
    def diff(self) -> Optional[float]:
        if self.paper is None or self.mean is None or not self.comparable:
            return None
        return self.mean - self.paper.value

    @property
    def threshold(self) -> float:
        """Two of our standard deviations, or 1 point without a measured spread."""
        return 2.0 * self.std if self.n >= 2 and self.std else ONE_SEED_POINTS

    @property
    def flagged(self) -> bool:
        return self.diff is not None and abs(self.diff) > self.threshold


@dataclass
class Group:
    """One table group of ours: its cells per dataset and metric, and what the comparison has to say about it."""

    protocol: str
    tag: str
    cfg: str
    shots: Any
    backbone: str
    metrics: tuple
    cells: List[Cell]
    notes: List[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        shots = "" if self.shots in (None, "") else f", {self.shots} shots"
        return f"{self.protocol}: {self.tag} / {self.cfg}{shots}"

    @property
    def datasets(self) -> List[str]:
        return list(dict.fromkeys(c.dataset for c in self.cells))

    def cell(self, dataset: str, metric: str) -> Optional[Cell]:
        return next((c for c in self.cells if c.dataset == dataset and c.metric == metric), None)


def backbone_of(rows: Iterable[Dict[str, Any]], cfg: str) -> str:
    """The group's student backbone: ``student=`` of its regime (results.json), else the config name's prefix."""
    for row in rows:
        match = re.search(r"student=([^;|]+)", str(row.get("regime") or ""))
        if match:
            return match.group(1).strip()
    for prefix, name in CFG_BACKBONES:
        if cfg.lower().startswith(prefix):
            return name
    return "?"


def _seed_stat(per_seed: Dict[int, float]) -> tuple:
    values = [per_seed[s] for s in sorted(per_seed)]
    return (statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else None, len(values))


def _b2n_average(rows: Sequence[Dict[str, Any]], average: Dict[str, Any]) -> List[Cell]:
    """The Average row's cells; its spread from per-seed averages when every dataset has the same seeds."""
    datasets = [r for r in rows if r.get("hm") is not None]
    seed_sets = [set(_int_keys(r.get("base_seeds"))) for r in datasets]
    common = set.intersection(*seed_sets) if seed_sets else set()
    same = all(s == common for s in seed_sets) and len(common) >= 1
    note = f"{len(datasets)} dataset" + ("s" if len(datasets) != 1 else "")
    complete = len(datasets) == len(BASE2NEW_DATASETS)
    cells = []
    per_seed: Dict[str, Dict[int, float]] = {}
    if same:
        for metric in ("base", "new"):
            per_seed[metric] = {s: statistics.fmean(_int_keys(r.get(f"{metric}_seeds"))[s] for r in datasets)
                                for s in common}
        # HM of the seed's average base and new, as the table's Average row (statistics: 2BN/(B+N), 0 if one is 0)
        per_seed["hm"] = {s: statistics.harmonic_mean([per_seed["base"][s], per_seed["new"][s]]) for s in common}
    for metric, mean in (("base", average["base_mean"]), ("new", average["new_mean"]), ("hm", average["hm"])):
        if same:
            _, std, n = _seed_stat(per_seed[metric])
            cells.append(Cell("Average", metric, mean, std, n, per_seed[metric], note, comparable=complete))
        else:
            cells.append(Cell("Average", metric, mean, None, int(average.get("n") or 0), {}, note,
                              comparable=complete))
    return cells


def _int_keys(seeds: Any) -> Dict[int, float]:
    return {int(k): float(v) for k, v in (seeds or {}).items()}


def our_groups(tables: Sequence[Any]) -> List[Group]:
    """Our per-dataset cells for every base2new / xd / dg / fewshot group of ``tools.results`` tables."""
    groups: List[Group] = []
    for table in tables:
        by_key: Dict[tuple, List[Dict[str, Any]]] = {}
        for row in table.rows:
            if table.protocol in METRICS or table.protocol == "fewshot":
                by_key.setdefault((row["tag"], row["cfg"], row.get("shots") if table.protocol != "fewshot" else ""),
                                  []).append(row)
        for (tag, cfg, shots), rows in by_key.items():
            cells: List[Cell] = []
            if table.protocol == "base2new":
                data_rows = [r for r in rows if r["dataset"] != "Average"]
                for r in data_rows:
                    if r.get("hm") is None:
                        continue
                    for metric in ("base", "new"):
                        cells.append(Cell(r["dataset"], metric, r[f"{metric}_mean"], r[f"{metric}_std"],
                                          r[f"{metric}_n"], _int_keys(r.get(f"{metric}_seeds"))))
                    cells.append(Cell(r["dataset"], "hm", r["hm"], r.get("hm_seed_std"), r["n"],
                                      _int_keys(r.get("hm_seed_seeds"))))
                average = next((r for r in rows if r["dataset"] == "Average"), None)
                if average is not None:
                    cells += _b2n_average(data_rows, average)
                metrics = METRICS["base2new"]
            elif table.protocol in ("xd", "dg"):
                for r in rows:
                    if r.get("mean") is None:
                        continue
                    partial = r["role"] == "average" and not r.get("complete")
                    cells.append(Cell("Average" if r["role"] == "average" else r["dataset"], "accuracy", r["mean"],
                                      r.get("std"), r.get("n") or 0, _int_keys(r.get("seeds")),
                                      f"{r.get('targets')} targets" if partial else "", comparable=not partial))
                metrics = METRICS[table.protocol]
            else:  # fewshot: one metric per shots value
                for r in rows:
                    if r.get("mean") is not None:
                        cells.append(Cell(r["dataset"], f"{r['shots']} shots", r["mean"], r.get("std"), r.get("n") or 0,
                                          _int_keys(r.get("seeds"))))
                metrics = tuple(dict.fromkeys(c.metric for c in sorted(cells, key=lambda c: int(c.metric.split()[0]))))
            cells.sort(key=lambda c: (c.dataset == "Average", order_key(c.dataset)))
            groups.append(Group(table.protocol, tag, cfg, shots, backbone_of(rows, cfg), metrics, cells))
    return groups


def attach_paper(groups: Sequence[Group], paper: str) -> List[Group]:
    """Give each of our cells its published number (same protocol, trainer tag, backbone, dataset, metric)."""
    published = load_paper(paper)
    for group in groups:
        if group.protocol not in METRICS:
            continue
        candidates = [p for p in published if p.protocol == group.protocol and p.trainer == group.tag]
        rows = [p for p in candidates if p.backbone in (group.backbone, UNSTATED)]
        if not candidates:
            group.notes.append(f"{PAPERS[paper]} has no {group.protocol} row for {group.tag}")
            continue
        if not rows:
            other = ", ".join(sorted({p.backbone for p in candidates}))
            group.notes.append(f"{PAPERS[paper]} reports {group.tag} on {group.protocol} for {other}, ours is "
                               f"{group.backbone}: nothing to compare")
            continue
        index = {(p.dataset, p.metric): p for p in rows}
        for cell in group.cells:
            cell.paper = index.get((cell.dataset, cell.metric))
        partial = next((c for c in group.cells if c.paper is not None and not c.comparable), None)
        if partial is not None:
            group.notes.append(f"our Average covers {partial.note} only: the paper's Average is shown, not compared")
        if any(p.backbone == UNSTATED for p in rows):
            group.notes.append("the paper's chart does not print its backbone: compared whatever ours is")
        for text in dict.fromkeys(f"paper rows: {p.paper_method} ({p.backbone}"
                                  + (f", teacher {p.teacher}" if p.teacher else "") + f"): {p.setting}. Source: "
                                  f"{p.source}" for p in rows):
            group.notes.append(text)
    return list(groups)


def _num(value: Optional[float], sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _ours(cell: Optional[Cell]) -> str:
    if cell is None or cell.mean is None:
        return "-"
    text = f"{cell.mean:.2f}" + (f" ± {cell.std:.2f}" if cell.n >= 2 and cell.std is not None else "")
    return text + (f" ({cell.note})" if cell.note else "")


def markdown(groups: Sequence[Group], paper: str) -> str:
    """One table per group: per dataset, ours | paper | Δ for each metric; ``!`` marks a large difference."""
    parts = []
    for group in groups:
        if group.protocol not in METRICS:
            continue
        headers = ["Dataset"]
        for metric in group.metrics:
            name = "" if metric == "accuracy" else f"{metric.upper() if metric == 'hm' else metric.capitalize()} "
            headers += [f"{name}ours", f"{name}paper", f"{name}Δ"]
        headers.append("n")
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        for dataset in group.datasets:
            row = [f"**{dataset}**" if dataset == "Average" else short_name(dataset)]
            ns = set()
            for metric in group.metrics:
                cell = group.cell(dataset, metric)
                ns |= {cell.n} if cell else set()
                printed = cell.paper.printed if cell and cell.paper else "-"
                mark = " !" if cell and cell.flagged else ""
                row += [_ours(cell), printed, _num(cell.diff if cell else None, sign=True) + mark]
            row.append("-".join(str(n) for n in sorted(ns)) or "-")
            lines.append("| " + " | ".join(row) + " |")
        notes = ["Δ = ours - paper; ! = |Δ| larger than two of our standard deviations (1 point with one seed or no "
                 "spread)", *group.notes]
        parts.append(f"### paper: {PAPERS[paper].split(' (')[0]} vs ours, {group.title} (ours: {group.backbone})\n\n"
                     + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def write_csv(groups: Sequence[Group], paper: str, path: Path) -> Path:
    """One line per (group, dataset, metric) with ours, the paper's number, Δ and the flag."""
    columns = ["paper", "protocol", "tag", "cfg", "shots", "backbone", "dataset", "metric", "ours_mean", "ours_std",
               "n", "paper_value", "diff", "threshold", "flagged", "paper_method", "paper_backbone", "source"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for g in groups:
            if g.protocol not in METRICS:
                continue
            for c in g.cells:
                p = c.paper
                writer.writerow({"paper": paper, "protocol": g.protocol, "tag": g.tag, "cfg": g.cfg, "shots": g.shots,
                                 "backbone": g.backbone, "dataset": c.dataset, "metric": c.metric,
                                 "ours_mean": c.mean, "ours_std": "" if c.std is None else c.std, "n": c.n,
                                 "paper_value": p.printed if p else "", "diff": "" if c.diff is None else c.diff,
                                 "threshold": c.threshold, "flagged": c.flagged,
                                 "paper_method": p.paper_method if p else "", "paper_backbone": p.backbone if p else "",
                                 "source": p.source if p else ""})
    return path


def report(tables: Sequence[Any], paper: str, out_dir: Path) -> tuple[str, List[Path]]:
    """The comparison's markdown (also written to ``paper_<paper>.md``) and ``paper_<paper>.csv``."""
    groups = attach_paper(our_groups(tables), paper)
    text = markdown(groups, paper) or f"### paper: {PAPERS[paper]}\n\nno base2new, xd or dg table to compare"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"paper_{paper}.md"
    md.write_text(text + "\n", encoding="utf-8")
    return text, [md, write_csv(groups, paper, out / f"paper_{paper}.csv")]
