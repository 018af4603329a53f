"""Data-free KD (``dfkd``): per dataset one row per (TAG, CFG), one column per domain, the mean over domains and the
overall accuracy (docs/dfkd.md)."""
from __future__ import annotations

from typing import Any, Sequence

from tools.datasets_table import order_key
from tools.results.checks import complete_seeds
from tools.results.layout import Run, Scan
from tools.results.registry import BuildContext, register
from tools.results.stats import Stat, mean_over, stat_fields
from tools.results.table import Table, accuracies, index_runs, regime_text, sources_text
from tools.results.writers import fmt, fmt_n, md_table


def dfkd_table(runs: Sequence[Run], scan: Scan | None = None) -> Table | None:
    """Per dataset: one row per (TAG, CFG), one column per domain, the mean over domains, and the overall value.

    Domains are columns, never samples: ``n`` and the std are over seeds, and only seeds reporting every domain of
    the row count (a seed read from its log has no per-domain values and is warned).
    """
    dfkd = [r for r in runs if r.layout == "dfkd"]
    if not dfkd:
        return None
    index = index_runs(dfkd, lambda r: (r.dataset, r.tag, r.cfg), scan)
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
                    rows.append({**common, "domain": d, **stat_fields(cells[d]), "regime": regime})
            mean = mean_over([c for c in cells.values() if c is not None])
            overall = Stat.of(accuracies(kept))
            rows.append({**common, "domain": "Mean", **stat_fields(mean), "domains": len(domains),
                         "excluded_seeds": excluded, "regime": regime})
            rows.append({**common, "domain": "Overall", **stat_fields(overall), "regime": regime,
                         "sources": sources_text(kept.values())})
            md_rows.append([key[1], key[2], *(fmt(cells[d]) for d in domains), fmt(mean), fmt(overall),
                            fmt_n([overall, mean]), regime])
        headers = ["Trainer", "Config", *domains, "Mean (domains)", "Overall", "n", "Regime"]
        parts.append(f"### dfkd: {dataset}\n\n" + md_table(headers, md_rows))
    return Table.noted("dfkd", rows, "\n\n".join(parts), warnings)


@register("dfkd", order=50, layout="dfkd/DATASET/TAG/CFG/seedS")
def build(ctx: BuildContext) -> Table | None:
    return dfkd_table(ctx.scan.runs, ctx.scan)
