"""From an output root to the tables: scan it once, then build each requested protocol's table in build order."""
from __future__ import annotations

import os
from typing import Sequence

import tools.results.protocols  # noqa: F401  (registers the built-in protocols)
from tools.results import registry
from tools.results.layout import Scan
from tools.results.parsing import scan_tree
from tools.results.registry import BuildContext
from tools.results.table import Table


class ResultsNotFound(RuntimeError):
    """Raised when an output root holds no readable run for the requested protocol."""


def build_tables(root: str | os.PathLike[str], protocol: str = "auto",
                 test_log: bool = False) -> tuple[list[Table], Scan]:
    """Scan ``root`` and build the requested table(s); raise ResultsNotFound with the expected layout if empty."""
    names = registry.names()
    if protocol != "auto" and protocol not in names:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(names)} or auto")
    scan = scan_tree(root, test_log=test_log)
    wanted = names if protocol == "auto" else (protocol,)
    context = BuildContext(scan=scan, auto=protocol == "auto")
    found: list[Table] = []
    for name in wanted:
        entry = registry.get(name)
        table = entry.build(context)
        if table is None:
            continue
        found.append(table)
        if context.auto and entry.claims is not None:
            context.claims.append(entry.claims(table))
    if not found:
        raise ResultsNotFound(_not_found_message(scan, wanted))
    return found, scan


def _not_found_message(scan: Scan, wanted: Sequence[str]) -> str:
    layouts = "\n  ".join(f"{p}: {registry.get(p).layout}" for p in wanted)
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
