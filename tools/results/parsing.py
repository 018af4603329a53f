"""Reading one run: its ``results.json`` first (full precision), its Dassl logs second, and the scan of a tree.

Why not Dassl's ``parse_test_res.py``: the reference parsers wait for ``Finished training`` while Dassl >= 0.6.1
prints ``Finish training`` (so they find nothing), and they read one-decimal log lines only (protocols.md §7-8).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from tools.datasets_table import to_key
from tools.results.checks import load_results_json
from tools.results.layout import SEED_RE, Run, Scan, classify

ACCURACY_RE = re.compile(r"\* accuracy: ([\.\deE+-]+)%")
END_SIGNALS: tuple[str, ...] = ("Finish training", "Finished training")  # Dassl >= 0.6.1, older Dassl
RESULT_SIGNAL = "=> result"
_EPOCH_RE = re.compile(r"epoch \[\d+/\d+\]")
_B2N_EXPECTED_SUBSAMPLE = {"train_base": "base", "test_base": "base", "test_new": "new"}



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
        if not SEED_RE.match(here.name):
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
