"""How tables look and where they go: markdown cells (2 decimals, ± std, seed counts, † for short shots) and the
``results_<protocol>.{csv,json,md}`` files (full precision)."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from tools.results.layout import Scan
from tools.results.stats import Stat
from tools.results.table import GroupKey, Table


def fmt(stat: Stat | None, std: bool = True) -> str:
    """A markdown cell: "mean ± std", the mean alone when there is no spread to show, "-" when empty."""
    if stat is None:
        return "-"
    if not std or stat.n == 1 or math.isnan(stat.std):  # a single seed has no spread to show
        return f"{stat.mean:.2f}"
    return f"{stat.mean:.2f} ± {stat.std:.2f}"


def num(value: float | None) -> str:
    """A plain number cell (2 decimals), "-" when absent."""
    return "-" if value is None else f"{value:.2f}"


def fmt_n(items: Iterable[Stat | int | None]) -> str:
    """Seed counts of several cells as "3" or, when they differ, "2-3"."""
    ns = sorted({i.n if isinstance(i, Stat) else i for i in items if i is not None})
    return "-" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def group_title(protocol: str, key: GroupKey) -> str:
    """The heading of one (TAG, CFG, shots) group's table."""
    tag, cfg, shots = key
    shots_text = "" if shots is None else f", {shots} shots"
    return f"### {protocol}: {tag} / {cfg}{shots_text}"


def dagger(fewest: int | None) -> str:
    """The † mark of a cell whose training had fewer images per class than the shots asked."""
    return "" if fewest is None else " †"


def csv_value(value: Any) -> Any:
    """A CSV cell: dicts (per-seed values) as JSON, None as empty."""
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
                writer.writerow({k: csv_value(row.get(k)) for k in columns})
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
