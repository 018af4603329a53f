"""Aggregate CoOp-family output trees into base/new/HM, cross-dataset, DG, few-shot and DFKD tables.

The command line of ``python -m tools.results``: print the markdown tables, the warnings (stderr), write
``results_<protocol>.{csv,json,md}``, and on request the paper comparison (tools/paper.py) and figures
(tools/plots.py), both imported only when asked for.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from tools.results import registry
from tools.results.build import ResultsNotFound, build_tables
from tools.results.writers import write_outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="OUTPUT_ROOT", help="output tree to aggregate (e.g. output or output/base2new)")
    parser.add_argument("--protocol", default="auto", choices=[*registry.names(), "auto"],
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
