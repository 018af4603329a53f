"""Base-to-new generalisation (``base2new``): per dataset base / new / HM over the seeds that have both, and the
Average row = HM of the mean base and mean new accuracies (protocols.md §8)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from tools.datasets_table import order_key, short_name
from tools.results.checks import complete_seeds, describe_missing, fewest_shots, mixed_seeds_warning
from tools.results.layout import B2N_PHASES, Run, Scan
from tools.results.registry import BuildContext, register
from tools.results.stats import Stat, harmonic_mean, stat_fields
from tools.results.table import GroupKey, Table, index_runs, regime_text, sources_text
from tools.results.writers import dagger, fmt, fmt_n, group_title, md_table, num


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
           **stat_fields(base, "base_"), **stat_fields(new, "new_"), "hm": hm, **stat_fields(hm_seed, "hm_seed_"),
           "n": len(complete), "excluded_seeds": excluded, "shots_used_min": fewest, "base_from": "+".join(base_from),
           "regime": regime, "sources": sources_text(all_runs)}

    def seed_text(s: int) -> str:
        b, n = base_runs.get(s), new_runs.get(s)
        text = f"{s}: {num(b.accuracy if b else None)}/{num(n.accuracy if n else None)}"
        return text + (" (left out)" if s in excluded else "")

    cells = [short_name(dataset) + dagger(fewest), fmt(base), fmt(new), num(hm), fmt(hm_seed),
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
    index = index_runs(b2n, lambda r: (r.tag, r.cfg, r.shots, r.dataset, r.phase), scan)
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
            phase_runs = {p: index.get((*key, dataset, p), {}) for p in B2N_PHASES}
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
                            fmt_n(r["n"] for r in paired), "", regime])
        rows += group_rows
        parts.append(group_title("base2new", key) + "\n\n" + md_table(headers, md_rows))
    return Table.noted("base2new", rows, "\n\n".join(parts), warnings)


@register("base2new", order=10, layout="base2new/{train_base,test_base,test_new}/DATASET/shots_K/TAG/CFG/seedS")
def build(ctx: BuildContext) -> Table | None:
    return base2new_table(ctx.scan.runs, ctx.scan)
