"""Few-shot (``fewshot``): per (TAG, CFG) one row per dataset, one column per shots value, and an Average row."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

from tools.datasets_table import order_key, short_name
from tools.results.checks import fewest_shots, mixed_seeds_warning
from tools.results.layout import Run, Scan
from tools.results.registry import BuildContext, register
from tools.results.stats import Stat, mean_over, stat_fields
from tools.results.table import Table, accuracies, index_runs, regime_text, sources_text
from tools.results.writers import dagger, fmt, fmt_n, group_title, md_table


def fewshot_table(runs: Sequence[Run], scan: Scan | None = None,
                  exclude: Callable[[Run], bool] = lambda r: False) -> Table | None:
    """Per (TAG, CFG): one row per dataset, one column per shots value, plus an Average row per shots."""
    few = [r for r in runs if r.layout == "per_dataset" and not exclude(r)]
    if not few:
        return None
    index = index_runs(few, lambda r: (r.tag, r.cfg, r.dataset, r.shots), scan)
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
                stat = Stat.of(accuracies(seed_runs))
                fewest = fewest_shots(seed_runs.values(), f"fewshot {tag}/{cfg} {dataset}", warnings)
                seeds_seen.append(stat)
                cells.append(fmt(stat) + (dagger(fewest) if stat else ""))
                if stat is not None:
                    per_shot[shots][dataset] = stat
                    rows.append({"protocol": "fewshot", "tag": tag, "cfg": cfg, "dataset": dataset, "shots": shots,
                                 **stat_fields(stat), "shots_used_min": fewest,
                                 "regime": regime_text(seed_runs.values()), "sources": sources_text(seed_runs.values())})
            md_rows.append([short_name(dataset), *cells, fmt_n(seeds_seen), regime])
        averages = {shots: mean_over(list(per_shot[shots].values())) for shots in shots_values}
        for shots, stat in averages.items():
            mixed = mixed_seeds_warning(f"fewshot {tag}/{cfg} {shots} shots",
                                        {d: s.seeds for d, s in per_shot[shots].items()})
            warnings += [mixed] if mixed else []
            rows.append({"protocol": "fewshot", "tag": tag, "cfg": cfg, "dataset": "Average", "shots": shots,
                         **stat_fields(stat), "datasets": len(per_shot[shots]), "same_seeds": mixed is None})
        md_rows.append(["**Average**", *(f"{fmt(averages[k], std=False)} ({len(per_shot[k])} ds)"
                                         for k in shots_values), "", ""])
        headers = ["Dataset", *(f"{k} shots" for k in shots_values), "n", "Regime"]
        parts.append(group_title("fewshot", (tag, cfg, None)) + "\n\n" + md_table(headers, md_rows))
    return Table.noted("fewshot", rows, "\n\n".join(parts), warnings)


@register("fewshot", order=40, layout="DATASET/TAG/CFG_Kshots/seedS")
def build(ctx: BuildContext) -> Table | None:
    """After xd/dg: in auto mode the runs they claimed (ImageNet sources, PromptKD per-target runs) are not few-shot."""
    return fewshot_table(ctx.scan.runs, ctx.scan, exclude=ctx.claimed)
