"""Readers of the domain benchmarks (image lists, ImageCLEF-DA, the label-name check of Dassl's PACS/VLCS/VisDA17)
and of a user's own image folder."""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence

from .errors import DatasetError, DatasetNotFoundError
from .items import Item, Splits
from .paths import IMAGE_EXTENSIONS, list_dirs, list_files, require_dir, require_file
from .readers import read_classnames_txt
from .specs import IMAGECLEF_CLASSNAMES, IMAGECLEF_DOMAINS
from .splits import generate_split_from_folders

__all__ = ["read_image_list", "read_imageclef", "read_image_folder", "check_label_names"]


def read_image_list(list_file: str, prefix: str, domain: int = 0,
                    classnames: Optional[Sequence[str]] = None, label_offset: int = 0) -> List[Item]:
    """Lines "<relative path> <label>" (paths may contain spaces; the label is the last field)."""
    require_file(list_file, "Image list file")
    items = []
    with open(list_file, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rel, label_s = line.rsplit(maxsplit=1)
                label = int(label_s) - label_offset
            except ValueError:
                raise DatasetError(f"{list_file}:{lineno}: expected '<path> <integer label>', got {line!r}")
            cname = ""
            if classnames is not None:
                if not 0 <= label < len(classnames):
                    raise DatasetError(f"{list_file}:{lineno}: label {label} outside 0..{len(classnames) - 1}")
                cname = classnames[label]
            items.append(Item(os.path.join(prefix, rel), label, cname, domain))
    return items


def read_imageclef(dataset_dir: str, domains: Sequence[str]) -> List[Item]:
    """ImageCLEF-DA (our layout): ``<dataset_dir>/<d>.txt`` per domain, lines "relpath label" relative to
    ``dataset_dir``; domain index = position in ``domains`` (Dassl convention)."""
    require_dir(dataset_dir, "ImageCLEF-DA dataset folder",
                hint="Expected $DATA/image_clef/ with c.txt, i.txt, p.txt (lines '<path relative to image_clef/> "
                     "<label 0..11>') and the images they name.")
    items = []
    for d_idx, d in enumerate(domains):
        if d not in IMAGECLEF_DOMAINS:
            raise ValueError(f"ImageCLEF-DA domain must be one of {list(IMAGECLEF_DOMAINS)}, got {d!r}")
        items += read_image_list(os.path.join(dataset_dir, f"{d}.txt"), dataset_dir, d_idx, IMAGECLEF_CLASSNAMES)
    return items


def _folder_classnames(base: str) -> Dict[str, str]:
    """Optional ``classnames.txt`` ("<folder> <name>") of a user folder; otherwise folder names, '_' -> ' '."""
    path = os.path.join(base, "classnames.txt")
    return dict(read_classnames_txt(path)) if os.path.isfile(path) else {}


def read_image_folder(base: str, split_seed: int = 1, p_trn: float = 0.5, p_val: float = 0.2) -> Splits:
    """A user's own data: ``<base>/{train,val,test}/<class>/*`` (val optional) or ``<base>/<class>/*``.

    Labels = sorted class folders of train. A single folder is split per class with ``random.Random(split_seed)``
    (deterministic, not saved; the global random stream is untouched).
    """
    require_dir(base, "Image-folder dataset",
                hint="Layout: <folder>/train/<class>/*.jpg (+ val/, test/), or <folder>/<class>/*.jpg.")
    names = _folder_classnames(base)
    if os.path.isdir(os.path.join(base, "train")):
        folders = list_dirs(os.path.join(base, "train"))
        for c in folders:
            names.setdefault(c, c.replace("_", " "))
        out = {}
        for split in ("train", "val", "test"):
            sdir = os.path.join(base, split)
            if not os.path.isdir(sdir):
                out[split] = []
                continue
            extra = sorted(set(list_dirs(sdir)) - set(folders))
            if extra:
                raise DatasetError(f"{sdir} has class folders not in train/: {extra}")
            lab = {c: i for i, c in enumerate(folders)}
            out[split] = [Item(os.path.join(sdir, c, n), lab[c], names[c]) for c in list_dirs(sdir)
                          for n in list_files(os.path.join(sdir, c)) if n.lower().endswith(IMAGE_EXTENSIONS)]
        if not out["test"]:
            raise DatasetNotFoundError(f"{os.path.join(base, 'test')} is missing or empty; a test split is required.")
        return Splits(out["train"], out["val"], out["test"])
    print(f"Image folder {base} has no train/ folder: splitting each class {p_trn:.0%}/{p_val:.0%}/"
          f"{1 - p_trn - p_val:.0%} with seed {split_seed}")
    # split_fewshot/ is where the few-shot cache of this folder goes: it is not a class
    splits = generate_split_from_folders(base, split_seed, p_trn, p_val, ignored=("split_fewshot",))
    for items in splits.as_tuple():
        items[:] = [Item(it.impath, it.label, names.get(it.classname, it.classname.replace("_", " ")))
                    for it in items]
    return splits


def check_label_names(items: Iterable, classnames: Sequence[str], what: str) -> None:
    """Check that each item's label indexes its class name in ``classnames`` (items may be Item or dassl Datum).

    The class name of an item is taken from its ``classname`` or, if empty, from its parent folder name;
    purely numeric folder names are accepted as is (only the label order can be checked then, by Dassl).
    """
    lowered = [c.lower() for c in classnames]
    for it in items:
        if not 0 <= it.label < len(classnames):
            raise DatasetError(f"{what}: label {it.label} of {it.impath} is outside 0..{len(classnames) - 1}")
        name = (it.classname or os.path.basename(os.path.dirname(it.impath))).lower()
        if name.isdigit():
            continue
        if name != lowered[it.label]:
            raise DatasetError(f"{what}: {it.impath} has label {it.label} ({classnames[it.label]!r}) but class "
                               f"{name!r}; the label order differs from {list(classnames)}.")
