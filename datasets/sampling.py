"""Few-shot sampling and the base/new class split, written once for every dataset (no Dassl import).

Both reproduce the reference semantics exactly so that, for the same seed, the selected images match those of
CoOp, CoCoOp, MaPLe, PromptSRC, PromptKD and KDPL (protocols.md §2-3):

* few-shot = Dassl ``DatasetBase.generate_fewshot_dataset`` (Python's *global* ``random``, labels in first-seen
  order, ``random.sample`` per label, all items or ``random.choices`` when a class is short);
* base/new = CoOp ``OxfordPets.subsample_classes`` (sorted labels of the first list, m = ceil(n/2), relabel).

Dassl keeps every image of a class that has fewer than K (no repetition), so a "16-shot" run on a dataset with 8
images per class trains on 8: :func:`shots_used` measures what was taken and says so (the number goes into
``results.json`` as ``shots_used`` and the results tables flag it).
"""
from __future__ import annotations

import math
import random
from collections import Counter, OrderedDict
from typing import Dict, List, Sequence, Tuple

from .items import Item

__all__ = ["SUBSAMPLE_CHOICES", "group_by_label", "sample_few_shot", "few_shot_splits", "subsample_classes",
           "base_new_labels", "shots_used", "VAL_SHOTS_CAP"]

SUBSAMPLE_CHOICES = ("all", "base", "new")
VAL_SHOTS_CAP = 4  # CoOp: the val split gets min(K, 4) items per class


def group_by_label(items: Sequence) -> Dict[int, list]:
    """Items grouped by label, labels in first-seen order (the iteration order Dassl's sampler relies on)."""
    groups: Dict[int, list] = OrderedDict()
    for it in items:
        groups.setdefault(it.label, []).append(it)
    return groups


def sample_few_shot(items: Sequence, num_shots: int, repeat: bool = False, rng=None) -> list:
    """K items per label with Dassl's semantics; ``num_shots < 1`` returns ``items`` unchanged.

    ``rng`` defaults to the ``random`` module itself (the global stream seeded by train.py from cfg.SEED), which is
    what makes the subset identical to the reference forks'. Pass a ``random.Random`` for an isolated stream.
    """
    if num_shots < 1:
        return list(items)
    rng = random if rng is None else rng
    out: list = []
    for group in group_by_label(items).values():
        if len(group) >= num_shots:
            out.extend(rng.sample(group, num_shots))
        elif repeat:
            out.extend(rng.choices(group, k=num_shots))
        else:
            out.extend(group)
    return out


def few_shot_splits(train: Sequence, val: Sequence, num_shots: int, rng=None) -> Tuple[list, list]:
    """CoOp's pair of calls: train gets K per class, then val gets min(K, 4) per class (in this order)."""
    print(f"Creating a {num_shots}-shot dataset")
    train_k = sample_few_shot(train, num_shots, rng=rng)
    if not val:
        return train_k, []
    print(f"Creating a {min(num_shots, VAL_SHOTS_CAP)}-shot dataset")
    return train_k, sample_few_shot(val, min(num_shots, VAL_SHOTS_CAP), rng=rng)


def shots_used(items: Sequence, num_shots: int, dataset: str = "dataset") -> Dict[str, int]:
    """Images per class actually in ``items`` as ``{"min": a, "max": b}``; prints a warning when a few-shot run
    (``num_shots >= 1``) has classes with fewer than ``num_shots`` images, naming the dataset and the classes.

    ``items`` are Items or Dassl Datums (``label`` and ``classname``); an empty list gives ``{"min": 0, "max": 0}``.
    """
    counts = Counter(it.label for it in items)
    record = {"min": min(counts.values(), default=0), "max": max(counts.values(), default=0)}
    short = sorted(label for label, n in counts.items() if n < num_shots) if num_shots >= 1 else []
    if short:
        names = {it.label: it.classname for it in items}
        shown = ", ".join(f"{names[label] or label} ({counts[label]})" for label in short[:5])
        more = f", ... ({len(short) - 5} more)" if len(short) > 5 else ""
        print(f"WARNING: {dataset}: DATASET.NUM_SHOTS is {num_shots} but {len(short)} of {len(counts)} classes have "
              f"fewer training images: {shown}{more}. Training uses {record['min']}-{record['max']} images per "
              f"class (recorded as shots_used in results.json); lower NUM_SHOTS to {record['min']} for a true "
              f"{record['min']}-shot run.")
    return record


def base_new_labels(labels: Sequence[int], subsample: str) -> List[int]:
    """The labels kept by ``subsample`` among ``labels``: sorted, base = first ceil(n/2), new = the rest."""
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}")
    ordered = sorted(set(labels))
    if subsample == "all":
        return ordered
    m = math.ceil(len(ordered) / 2)
    return ordered[:m] if subsample == "base" else ordered[m:]


def subsample_classes(*lists: Sequence[Item], subsample: str = "all") -> Tuple[List[Item], ...]:
    """Filter every list to the base or new classes of the FIRST list and relabel them 0..k-1 in order.

    ``all`` returns the lists unchanged. Runs after few-shot sampling (protocols.md §2 "Order"). Items keep their
    domain (CoOp resets it to 0, which is the same for its single-domain datasets).
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}")
    if subsample == "all":
        return tuple(list(x) for x in lists)
    if not lists or not lists[0]:
        raise ValueError("subsample_classes needs a non-empty first list (train) to define the classes")
    selected = base_new_labels([it.label for it in lists[0]], subsample)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    relabel = {old: new for new, old in enumerate(selected)}
    return tuple([it.with_label(relabel[it.label]) for it in x if it.label in relabel] for x in lists)
