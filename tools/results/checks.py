"""What keeps the results tables from printing a silently wrong number (used by every module of tools/results/).

* a ``results.json`` that cannot be trusted (invalid JSON, no accuracy, wrong types) is named with its reason;
* a seed contributes to a table only when it has every run the table combines for it ("complete seeds");
  the others are left out and named, with the path each missing or unreadable run was expected at;
* a run that trained on fewer images per class than ``NUM_SHOTS`` asked (``shots_used`` in results.json) is flagged.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["is_number", "results_json_problem", "load_results_json", "seed_path", "split_seeds", "describe_missing",
           "excluded_warning", "complete_seeds", "short_shots", "fewest_shots", "mixed_seeds_warning"]

_SEED_NUMBER_RE = re.compile(r"\d+$")


def is_number(value: Any) -> bool:
    """A finite int or float (bool excluded: ``True`` is not an accuracy)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent_problem(name: str, value: Any) -> str | None:
    if not is_number(value):
        return f"{name} is {value!r}, not a finite number"
    if not 0 <= value <= 100:
        return f"{name} is {value}, outside 0-100 (percent)"
    return None


def results_json_problem(data: Any) -> str | None:
    """Why a parsed results.json cannot be used, or None when the fields the tables read have the right types."""
    if not isinstance(data, dict):
        return f"top level is a JSON {type(data).__name__}, not an object"
    if "accuracy" not in data:
        return "no 'accuracy' field"
    problem = _percent_problem("'accuracy'", data["accuracy"])
    if problem:
        return problem
    domains = data.get("domains")
    if domains is not None:
        if not isinstance(domains, dict):
            return f"'domains' is a {type(domains).__name__}, not an object of per-domain accuracies"
        for name, value in domains.items():
            problem = _percent_problem(f"'domains.{name}'", value)
            if problem:
                return problem
    shots = data.get("shots_used")
    if shots is not None:
        ok = isinstance(shots, dict) and all(isinstance(shots.get(k), int) and not isinstance(shots.get(k), bool)
                                             for k in ("min", "max"))
        if not ok or not 0 <= shots["min"] <= shots["max"]:
            return f"'shots_used' is {shots!r}, expected {{\"min\": int, \"max\": int}} with 0 <= min <= max"
    for key, kind in (("regime", dict), ("subsample_classes", str), ("eval_only", bool), ("dataset", str)):
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"'{key}' is {value!r}, expected a {kind.__name__}"
    return None


def load_results_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``(data, "")`` for a usable file, ``(None, reason)`` for a present but unusable one, ``(None, "")`` if absent."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot be read ({type(err).__name__}: {err})"
    try:
        data = json.loads(text)
    except ValueError as err:
        return None, f"invalid JSON ({err})"
    problem = results_json_problem(data)
    return (None, problem) if problem else (data, "")


def seed_path(template: Path, seed: int) -> Path:
    """The directory of ``seed`` beside ``template`` (a seed dir), keeping its naming (``seedS`` or ``seed_S``)."""
    return template.with_name(_SEED_NUMBER_RE.sub(str(seed), template.name))


def split_seeds(parts: Mapping[str, Mapping[int, Any]]) -> tuple[list[int], dict[int, list[str]]]:
    """The seeds present in every part (sorted), and for each other seed seen the parts it lacks."""
    seen = sorted(set().union(*(set(p) for p in parts.values()))) if parts else []
    complete = [s for s in seen if all(s in p for p in parts.values())]
    lacking = {s: [name for name, p in parts.items() if s not in p] for s in seen if s not in complete}
    return complete, lacking


def describe_missing(part: str, path: Path, problems: Mapping[Path, str]) -> str:
    """One missing part of a seed, with where it was expected and, if the run is there, why it is unreadable."""
    if path in problems:
        return f"{part} unreadable at {path}: {problems[path]}"
    if path.is_dir():
        return f"{part} has neither results.json nor a log at {path}"
    return f"{part} missing (expected {path})"


def excluded_warning(what: str, seed: int, details: Iterable[str]) -> str:
    return f"{what}: seed {seed} left out of every mean, HM and average: " + "; ".join(details)


def complete_seeds(parts: Mapping[str, Mapping[int, Any]], describe: Callable[[str, int], str], what: str,
                   warnings: list[str]) -> tuple[list[int], dict[int, str]]:
    """The seeds having every part, and {seed: why} for the others, each also warned with ``describe(part, seed)``
    for every part it lacks."""
    complete, lacking = split_seeds(parts)
    excluded: dict[int, str] = {}
    for seed, names in lacking.items():
        details = [describe(name, seed) for name in names]
        excluded[seed] = "; ".join(details)
        warnings.append(excluded_warning(what, seed, details))
    return complete, excluded


def short_shots(info: Mapping[str, Any], shots: int | None) -> tuple[int, int, int] | None:
    """``(min, max, asked)`` when a run that trained had fewer images for some class than it asked for.

    Evaluation-only runs are not judged: their training list (e.g. the new classes of ``test_new``) is not what the
    model was trained on.
    """
    used = info.get("shots_used")
    asked = info.get("num_shots", shots)
    if not isinstance(used, dict) or not isinstance(asked, int) or asked < 1 or info.get("eval_only"):
        return None
    return (used["min"], used["max"], asked) if used["min"] < asked else None


def fewest_shots(runs: Iterable[Any], what: str, warnings: list[str]) -> int | None:
    """The fewest images per class among ``runs`` (with ``info``, ``shots``, ``path``) that trained on fewer than
    the shots asked, each such run warned; None when every run had what it asked for."""
    fewest: int | None = None
    for run in runs:
        short = short_shots(run.info, run.shots)
        if short is not None:
            used_min, used_max, asked = short
            warnings.append(f"{what}: {run.path} asked for {asked} shots but trained on {used_min}-{used_max} "
                            f"images per class (some classes have fewer; marked †)")
            fewest = used_min if fewest is None else min(fewest, used_min)
    return fewest


def mixed_seeds_warning(what: str, seeds: Mapping[str, Iterable[int]]) -> str | None:
    """A warning when an average combines parts (datasets) measured on different seeds, else None."""
    sets = {name: sorted(s) for name, s in seeds.items()}
    if len({tuple(s) for s in sets.values()}) <= 1:
        return None
    listed = "; ".join(f"{name}: {','.join(map(str, s)) or 'none'}" for name, s in sets.items())
    return f"{what}: the Average combines datasets measured on different seeds ({listed})"
