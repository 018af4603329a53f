"""Verify a prepared dataset before a long run: split file, every listed image present and decodable, split sizes.

    python -m tools.check_data DATASET --root $DATA [--workers N] [--no-decode] [--strict-counts]

DATASET is a yaml key (``eurosat``) or DATASET.NAME (``EuroSAT``) of the 15 CoOp-family datasets. The dataset is
located and its lists are read exactly as training reads them (``datasets.readers.read_benchmark``); every listed file
is opened and fully decoded the way the loader decodes it (``datasets.image_io``), with a progress bar. Cached
few-shot / preprocessed lists in the dataset folder are read through the safe loader too (a crafted pickle is
reported, never run). Prints the per-split counts next to the official ones and every bad file.

Exit status: 0 when every file is usable, 1 when a file is missing or undecodable, the split file cannot be read or a
cache file is refused. Counts that differ from the official ones are reported but fail the check only with
``--strict-counts`` (a partial or re-split copy can be intended; a published split must match exactly).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from typing import Dict, List, Optional, Sequence, Tuple

# Official split sizes of the 15 datasets: CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV
# 2022, arXiv:2109.01134), appendix table of dataset statistics; the published split_zhou_*.json files and the
# official FGVC-Aircraft / ImageNet-variant lists hold exactly these. CoOp prints ImageNet's train size as "1.28M":
# 1,281,167 is the ILSVRC-2012 training set; its 50,000 val images are CoOp's test set (val = test).
OFFICIAL_COUNTS: Dict[str, Dict[str, int]] = {
    "imagenet": {"train": 1281167, "test": 50000},
    "caltech101": {"train": 4128, "val": 1649, "test": 2465},
    "oxford_pets": {"train": 2944, "val": 736, "test": 3669},
    "stanford_cars": {"train": 6509, "val": 1635, "test": 8041},
    "oxford_flowers": {"train": 4093, "val": 1633, "test": 2463},
    "food101": {"train": 50500, "val": 20200, "test": 30300},
    "fgvc_aircraft": {"train": 3334, "val": 3333, "test": 3333},
    "sun397": {"train": 15880, "val": 3970, "test": 19850},
    "dtd": {"train": 2820, "val": 1128, "test": 1692},
    "eurosat": {"train": 13500, "val": 5400, "test": 8100},
    "ucf101": {"train": 7639, "val": 1898, "test": 3783},
    # the variants' own papers: ImageNetV2 matched-frequency (Recht et al. 2019, arXiv:1902.10811), 10 images x 1000
    # classes; ImageNet-Sketch (Wang et al. 2019), 50,889 sketches of the 1000 classes; ImageNet-A (Hendrycks et al.
    # 2021, arXiv:1907.07174), 7,500 images of 200 classes; ImageNet-R (Hendrycks et al. 2021, arXiv:2006.16241),
    # 30,000 renditions of 200 classes
    "imagenetv2": {"test": 10000},
    "imagenet_sketch": {"test": 50889},
    "imagenet_a": {"test": 7500},
    "imagenet_r": {"test": 30000},
}


@dataclass
class DataReport:
    """What :func:`check_dataset` found; ``ok`` ignores count differences unless they are asked to count."""

    dataset: str
    dataset_dir: str
    counts: Dict[str, int] = field(default_factory=dict)  # split (and "classes") -> found
    official: Dict[str, int] = field(default_factory=dict)  # split (and "classes") -> official
    files: int = 0
    bad: List[Tuple[str, str, List[str]]] = field(default_factory=list)  # (path, problem, splits listing it)
    cache_problems: List[Tuple[str, str]] = field(default_factory=list)  # (cache file, message)
    error: str = ""  # the split file / folders could not be read at all

    @property
    def count_mismatches(self) -> List[str]:
        return [k for k, n in self.official.items() if self.counts.get(k) != n]

    def ok(self, strict_counts: bool = False) -> bool:
        return not (self.error or self.bad or self.cache_problems or (strict_counts and self.count_mismatches))


def _splits_of(kind: str) -> Tuple[str, ...]:
    """The distinct splits of a dataset kind: ImageNet's val is its test list; the variants are test-only."""
    return {"imagenet": ("train", "test"), "imagenet_variant": ("test",)}.get(kind, ("train", "val", "test"))


def scan_files(paths: Sequence[str], decode: bool = True, workers: int = 8) -> Dict[str, str]:
    """{path: problem} for the files of ``paths`` that are missing or (with ``decode``) do not decode fully."""
    from tqdm import tqdm

    from datasets.image_io import image_problem

    def job(path: str) -> Tuple[str, Optional[str]]:
        return path, image_problem(path, decode=decode)

    problems: Dict[str, str] = {}
    pool = ThreadPool(workers) if workers > 1 else None  # PIL decodes with the GIL released
    try:
        results = pool.imap_unordered(job, paths, chunksize=16) if pool else map(job, paths)
        with tqdm(total=len(paths), unit="file", desc="decoding" if decode else "checking", mininterval=1.0,
                  file=sys.stderr) as bar:
            for path, problem in results:
                bar.update(1)
                if problem:
                    problems[path] = problem
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return problems


def check_caches(dataset_dir: str) -> List[Tuple[str, str]]:
    """(file, message) for cached few-shot / preprocessed lists in ``dataset_dir`` that cannot be used as they are.

    Read with the training code's safe loader, so a crafted pickle is refused without running anything.
    """
    from datasets.cache import FEWSHOT_SUBDIR, check_cached_paths, load_cache
    from datasets.errors import DatasetError

    patterns = [os.path.join(dataset_dir, FEWSHOT_SUBDIR, "*.json"), os.path.join(dataset_dir, FEWSHOT_SUBDIR, "*.pkl"),
                os.path.join(dataset_dir, "preprocessed.json"), os.path.join(dataset_dir, "preprocessed.pkl")]
    problems = []
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            check_cached_paths(load_cache(path, ("train",))["train"], path)
        except DatasetError as e:
            problems.append((path, str(e)))
    return problems


def check_dataset(name: str, root: str, decode: bool = True, workers: int = 8) -> DataReport:
    """Read ``name``'s lists under ``root`` as training does and check every listed file (see the module doc)."""
    from datasets.errors import DatasetError
    from datasets.paths import dataset_paths
    from datasets.readers import read_benchmark
    from datasets.specs import get_spec

    spec = get_spec(name)
    report = DataReport(spec.name, os.path.join(os.path.abspath(os.path.expanduser(root)), spec.folder))
    try:
        report.dataset_dir = dataset_paths(spec, root)[0]
        splits = read_benchmark(spec, root)  # never generates a split: the check reads what exists
    except DatasetError as e:
        report.error = str(e)
        return report
    lists = dict(zip(("train", "val", "test"), splits.as_tuple()))
    listed: Dict[str, List[str]] = {}
    for split in _splits_of(spec.kind):
        report.counts[split] = len(lists[split])
        for it in lists[split]:
            listed.setdefault(it.impath, []).append(split)
    label_split = "test" if spec.kind == "imagenet_variant" else "train"
    report.counts["classes"] = len({it.label for it in lists[label_split]})
    report.official = {**OFFICIAL_COUNTS.get(spec.key, {}), "classes": spec.num_classes}
    report.files = len(listed)
    problems = scan_files(list(listed), decode=decode, workers=workers)
    report.bad = [(p, problems[p], listed[p]) for p in sorted(problems)]
    report.cache_problems = check_caches(report.dataset_dir)
    return report


def format_report(report: DataReport, strict_counts: bool = False) -> str:
    """The printed summary: counts against the official ones, every bad file, cache problems, the verdict."""
    lines = [f"{report.dataset} in {report.dataset_dir}"]
    if report.error:
        return "\n".join(lines + [f"ERROR: {report.error}", f"{report.dataset}: PROBLEMS FOUND"])
    lines.append(f"  {'':8} {'found':>10} {'official':>10}")
    for key in list(report.counts):
        official = report.official.get(key)
        mark = "" if official is None else ("ok" if official == report.counts[key] else "DIFFERENT")
        shown = "n/a" if official is None else f"{official:,}"
        lines.append(f"  {key:8} {report.counts[key]:>10,} {shown:>10}  {mark}")
    missing = sum(1 for _, problem, _ in report.bad if problem == "missing")
    lines.append(f"{report.files:,} files listed: {missing:,} missing, {len(report.bad) - missing:,} not decodable")
    if report.bad:
        lines.append(f"Bad files ({len(report.bad):,}):")
        lines += [f"  {path}  [{'/'.join(splits)}]: {problem}" for path, problem, splits in report.bad]
    if report.cache_problems:
        lines.append(f"Cache files that cannot be used ({len(report.cache_problems)}):")
        lines += [f"  {path}: {message}" for path, message in report.cache_problems]
    if report.count_mismatches:
        effect = "fails the check (--strict-counts)" if strict_counts else "reported only (--strict-counts fails)"
        lines.append(f"Counts differ from the official ones for {', '.join(report.count_mismatches)}: {effect}.")
    lines.append(f"{report.dataset}: " + ("OK" if report.ok(strict_counts) else "PROBLEMS FOUND"))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from datasets.specs import SPECS, get_spec

    parser = argparse.ArgumentParser(prog="python -m tools.check_data", description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: 0 all files usable, 1 problems found.")
    parser.add_argument("dataset", help="yaml key or DATASET.NAME: " + ", ".join(s.key for s in SPECS))
    parser.add_argument("--root", required=True, help="the datasets folder ($DATA, train.py's --root)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="decoding threads (default: min(8, CPUs))")
    parser.add_argument("--no-decode", action="store_true", help="only check that every listed file exists")
    parser.add_argument("--strict-counts", action="store_true",
                        help="fail when split sizes or the class count differ from the official ones")
    args = parser.parse_args(argv)
    try:
        get_spec(args.dataset)
    except KeyError as e:
        parser.error(str(e.args[0]))
    report = check_dataset(args.dataset, args.root, decode=not args.no_decode, workers=args.workers)
    print(format_report(report, args.strict_counts))
    return 0 if report.ok(args.strict_counts) else 1


if __name__ == "__main__":
    sys.exit(main())
