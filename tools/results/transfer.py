"""What the cross-dataset (``xd``) and domain-generalisation (``dg``) protocols share: one model trained on the
ImageNet source, tested on targets; the table has the source, each target, and the mean of the targets only
(kdpl.md §9-10). ``protocols/xd.py`` and ``protocols/dg.py`` register the two."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

from tools.datasets_table import DG_TARGETS, XD_SOURCE, XD_TARGETS, order_key, short_name
from tools.results.checks import complete_seeds, describe_missing, fewest_shots, seed_path
from tools.results.layout import Run, Scan
from tools.results.stats import Stat, mean_over, stat_fields
from tools.results.table import GroupKey, Table, accuracies, index_runs, regime_text, sources_text
from tools.results.writers import dagger, fmt, fmt_n, md_table


def _transfer_scope(protocol: str) -> Callable[[str], bool]:
    if protocol == "dg":
        return lambda d: d in DG_TARGETS
    return lambda d: d != XD_SOURCE and d not in DG_TARGETS


def transfer_role(run: Run) -> str:
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
    targets = [r for r in runs if transfer_role(r) == "target" and in_scope(r.dataset)]
    if not targets:
        return None
    target_index = index_runs(targets, lambda r: (r.tag, r.cfg, r.shots, r.dataset), scan)
    sources = [r for r in runs if transfer_role(r) == "source"]
    evaluated = index_runs([r for r in sources if r.layout in ("xd_eval", "kdpl_cross_test")],
                       lambda r: (r.tag, r.cfg, r.shots), None)
    trained = index_runs([r for r in sources if r.layout not in ("xd_eval", "kdpl_cross_test")],
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
        source = Stat.of(accuracies(source_runs))
        cells = {d: Stat.of(accuracies(target_runs[d])) for d in columns}
        present = [cells[d] for d in columns if cells[d] is not None]
        average = mean_over(present)
        fewest = fewest_shots(source_runs.values(), what, warnings)
        regime = regime_text([*source_runs.values(), *(r for d in columns for r in target_runs[d].values())])
        common = {"protocol": protocol, "tag": key[0], "cfg": key[1], "shots": key[2]}
        rows.append({**common, "dataset": XD_SOURCE, "role": "source", **stat_fields(source), "regime": regime,
                     "shots_used_min": fewest, "sources": sources_text(source_runs.values())})
        for d in columns:
            if cells[d] is not None:
                rows.append({**common, "dataset": d, "role": "target", **stat_fields(cells[d]), "regime": regime,
                             "sources": sources_text(target_runs[d].values())})
        complete_targets = all(cells.get(d) is not None for d in expected)
        rows.append({**common, "dataset": "Average", "role": "average", **stat_fields(average),
                     "targets": len(present), "complete": complete_targets, "excluded_seeds": excluded,
                     "regime": regime})
        avg_label = fmt(average, std=False) + ("" if complete_targets else f" ({len(present)}/{len(expected)})")
        md_rows.append([key[0], key[1], key[2], fmt(source) + dagger(fewest), *(fmt(cells[d]) for d in columns),
                        avg_label, fmt_n([source, *present]), regime])
    headers = ["Trainer", "Config", "Shots", f"{short_name(XD_SOURCE)} (source)",
               *(short_name(d) for d in columns), "Average (targets)", "n", "Regime"]
    title = "### Domain generalisation" if protocol == "dg" else "### Cross-dataset transfer"
    return Table.noted(protocol, rows, title + "\n\n" + md_table(headers, md_rows), warnings)


def transfer_claims(table: Table) -> Callable[[Run], bool]:
    """In auto mode an ImageNet source run (or a PromptKD per-target run) of a group in ``table`` belongs to the
    xd/dg tables only (the few-shot table leaves it out)."""
    groups = {(row["tag"], row["cfg"], row["shots"]) for row in table.rows}
    return lambda r: transfer_role(r) != "" and (r.tag, r.cfg, r.shots) in groups
