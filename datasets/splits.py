"""CoOp's split files (``split_zhou_*.json``: read, written atomically) and the seeded per-class split of class
folders used when a published split is missing and generating one is allowed."""
from __future__ import annotations

import json
import os
import random
from typing import Iterable, Mapping, Optional, Sequence

from .cache import atomic_write_bytes
from .errors import DatasetError, SplitGenerationError
from .items import Item, Splits
from .paths import IMAGE_EXTENSIONS, list_dirs, list_files, require_file
from .specs import DatasetSpec

__all__ = ["read_split_json", "write_split_json", "generate_split_from_folders"]


def read_split_json(path: str, prefix: str, spec: Optional[DatasetSpec] = None) -> Splits:
    """Read a split JSON ({"train"|"val"|"test": [[relpath, label, classname], ...]}); paths joined to ``prefix``."""
    require_file(path, "Split file", spec)
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"Split file {path} is not valid JSON ({e}); download it again.") from e
    out = {}
    for key in ("train", "val", "test"):
        if key not in data:
            raise DatasetError(f"Split file {path} has no '{key}' list (keys: {sorted(data)}).")
        out[key] = [Item(os.path.join(prefix, rel), int(label), str(cname)) for rel, label, cname in data[key]]
    return Splits(out["train"], out["val"], out["test"])


def write_split_json(splits: Splits, path: str, prefix: str) -> None:
    """Write ``splits`` in CoOp's JSON format with paths relative to ``prefix`` (atomically)."""
    def rel(items: Sequence[Item]) -> list:
        return [[os.path.relpath(it.impath, prefix).replace(os.sep, "/"), it.label, it.classname] for it in items]

    data = {"train": rel(splits.train), "val": rel(splits.val), "test": rel(splits.test)}
    atomic_write_bytes(path, json.dumps(data, indent=4).encode("utf-8"))


def generate_split_from_folders(image_dir: str, seed: int, p_trn: float = 0.5, p_val: float = 0.2,
                                ignored: Iterable[str] = (), rename: Optional[Mapping[str, str]] = None) -> Splits:
    """Seeded per-class train/val/test split of class folders (CoOp's DTD-style 50/20/30 rule).

    Uses its own ``random.Random(seed)`` so Python's global stream (which drives few-shot sampling) is untouched.
    A generated split is **not** the published one: results are not comparable with papers.
    """
    rng = random.Random(seed)
    rename = dict(rename or {})
    ignored = set(ignored)
    train, val, test = [], [], []
    for label, folder in enumerate(f for f in list_dirs(image_dir) if f not in ignored):
        images = [os.path.join(image_dir, folder, n) for n in list_files(os.path.join(image_dir, folder))
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
        rng.shuffle(images)
        n_trn, n_val = round(len(images) * p_trn), round(len(images) * p_val)
        if n_trn < 1 or n_val < 1 or len(images) - n_trn - n_val < 1:
            raise SplitGenerationError(f"Class folder {os.path.join(image_dir, folder)} has {len(images)} images: "
                                       "too few for a train/val/test split.")
        cname = rename.get(folder, folder)
        train += [Item(p, label, cname) for p in images[:n_trn]]
        val += [Item(p, label, cname) for p in images[n_trn:n_trn + n_val]]
        test += [Item(p, label, cname) for p in images[n_trn + n_val:]]
    if not train:
        raise SplitGenerationError(f"No class folders under {image_dir}.")
    return Splits(train, val, test)
