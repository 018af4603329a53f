"""Readers of the 15 CoOp-family datasets in their official formats, and :func:`read_benchmark`, the one entry point
that picks the reader of a dataset of ``SPECS`` (what training and ``tools.check_data`` both call)."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence

from .errors import DatasetError, SplitGenerationError
from .items import Item, Splits
from .paths import dataset_paths, list_dirs, list_files, require_dir, require_file
from .specs import DatasetSpec, get_spec, where_to_get
from .splits import generate_split_from_folders, read_split_json, write_split_json

logger = logging.getLogger(__name__)

__all__ = ["read_classnames_txt", "read_fgvc_aircraft", "read_class_folders", "read_imagenet",
           "read_imagenet_variant", "read_benchmark"]


def read_classnames_txt(path: str, spec: Optional[DatasetSpec] = None) -> "OrderedDict[str, str]":
    """Read ``classnames.txt`` lines "<folder> <class name>" into an ordered {folder: name}."""
    require_file(path, "classnames.txt", spec)
    names: "OrderedDict[str, str]" = OrderedDict()
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(" ")
            if parts and parts[0]:
                names[parts[0]] = " ".join(parts[1:])
    if not names:
        raise DatasetError(f"{path} is empty; it must list '<folder> <class name>' per line.")
    return names


def read_fgvc_aircraft(dataset_dir: str, spec: Optional[DatasetSpec] = None) -> Splits:
    """FGVCAircraft: variants.txt (label = line index), images_variant_{train,val,test}.txt ("<id> <name>")."""
    variants = require_file(os.path.join(dataset_dir, "variants.txt"), "FGVCAircraft variants.txt", spec)
    with open(variants, "r", encoding="utf-8") as f:
        classnames = [line.strip() for line in f if line.strip()]
    cname2lab = {c: i for i, c in enumerate(classnames)}
    image_dir = os.path.join(dataset_dir, "images")
    out = []
    for split in ("train", "val", "test"):
        path = require_file(os.path.join(dataset_dir, f"images_variant_{split}.txt"),
                            f"FGVCAircraft images_variant_{split}.txt", spec)
        items = []
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                parts = line.strip().split(" ")
                if not parts[0]:
                    continue
                cname = " ".join(parts[1:])
                if cname not in cname2lab:
                    raise DatasetError(f"{path}: class {cname!r} is not listed in {variants}.")
                items.append(Item(os.path.join(image_dir, parts[0] + ".jpg"), cname2lab[cname], cname))
        out.append(items)
    return Splits(*out)


def read_class_folders(split_dir: str, classnames: Mapping[str, str], folders: Optional[Sequence[str]] = None,
                       spec: Optional[DatasetSpec] = None) -> List[Item]:
    """Items of ``<split_dir>/<folder>/*``; label = position of the folder in ``folders`` (default: sorted dirs)."""
    require_dir(split_dir, "Image directory", spec)
    folders = list_dirs(split_dir) if folders is None else list(folders)
    items = []
    for label, folder in enumerate(folders):
        if folder not in classnames:
            raise DatasetError(f"Class folder {os.path.join(split_dir, folder)} has no line in classnames.txt.")
        cdir = require_dir(os.path.join(split_dir, folder), "Class folder", spec)
        items += [Item(os.path.join(cdir, n), label, classnames[folder]) for n in list_files(cdir)]
    return items


def read_imagenet(dataset_dir: str, spec: Optional[DatasetSpec] = None) -> Splits:
    """ImageNet: labels = index of the sorted class folder; names from classnames.txt.

    The official val set is returned as **both** val and test (CoOp convention): never select checkpoints on it.
    """
    spec = spec or get_spec("ImageNet")
    names = read_classnames_txt(os.path.join(dataset_dir, "classnames.txt"), spec)
    image_dir = os.path.join(dataset_dir, spec.image_dir)
    train_dir, val_dir = os.path.join(image_dir, "train"), os.path.join(image_dir, "val")
    train = read_class_folders(train_dir, names, spec=spec)
    require_dir(val_dir, "ImageNet val directory", spec)
    val_folders = list_dirs(val_dir)
    if not val_folders:
        raise DatasetError(f"{val_dir} has no class folders: ImageNet val images must be sorted into class "
                           "folders n* like train/ (e.g. with the valprep.sh script), CoOp#60.")
    if val_folders != list_dirs(train_dir):
        raise DatasetError(f"Class folders of {val_dir} differ from those of {train_dir}; labels would not match.")
    test = read_class_folders(val_dir, names, spec=spec)
    return Splits(train, test, test)


def read_imagenet_variant(dataset_dir: str, spec: DatasetSpec) -> List[Item]:
    """A test-only ImageNet variant. V2: folder k = ImageNet label k; Sketch/A/R: sorted folders labelled 0..k-1.

    ImageNet-A/-R therefore use their own 200-class label space with their own class names (not ImageNet indices).
    """
    names = read_classnames_txt(os.path.join(dataset_dir, "classnames.txt"), spec)
    image_dir = require_dir(os.path.join(dataset_dir, spec.image_dir), f"{spec.name} image directory", spec)
    if spec.variant_labels == "index_folders":
        wnids = list(names)
        items = []
        for label, wnid in enumerate(wnids):
            cdir = require_dir(os.path.join(image_dir, str(label)), f"{spec.name} class folder", spec)
            items += [Item(os.path.join(cdir, n), label, names[wnid]) for n in list_files(cdir)]
        return items
    return read_class_folders(image_dir, names, spec=spec)


def read_benchmark(spec: DatasetSpec, root: str, generate_split: bool = False, split_seed: int = 1) -> Splits:
    """Read one of the 15 CoOp-family datasets of ``SPECS`` from ``root`` (= cfg.DATASET.ROOT).

    A missing published split JSON is an error unless ``generate_split`` (cfg DATASET.GENERATE_SPLIT) is set; the
    generated split is seeded with ``split_seed``, written next to where the published one would be, and logged.
    Test-only ImageNet variants return train = test = all images and an empty val.
    """
    dataset_dir, image_dir = dataset_paths(spec, root)
    if spec.kind == "split_json":
        prefix = dataset_dir if spec.split_relative_to == "folder" else image_dir
        path = os.path.join(dataset_dir, spec.split_file)
        if os.path.isfile(path) or not generate_split:
            return read_split_json(path, prefix, spec)
        if not spec.generate_from_folders:
            raise SplitGenerationError(f"{path} is missing and generating a {spec.name} split is not supported "
                                       f"(it needs the official annotation files).\n{where_to_get(spec)}")
        msg = (f"WARNING: {path} is missing; GENERATING a new split of {image_dir} with seed {split_seed} "
               "(50/20/30 per class). It is NOT the published split: results are not comparable with papers.")
        print(msg)
        logger.warning(msg)
        splits = generate_split_from_folders(image_dir, split_seed, ignored=spec.ignored_folders, rename=spec.rename)
        try:
            write_split_json(splits, path, prefix)
            print(f"Saved generated split to {path}")
        except OSError as e:
            print(f"Could not save the generated split to {path} ({e}); it is regenerated (same seed) next time.")
        return splits
    if spec.kind == "fgvc":
        return read_fgvc_aircraft(dataset_dir, spec)
    if spec.kind == "imagenet":
        return read_imagenet(dataset_dir, spec)
    if spec.kind == "imagenet_variant":
        data = read_imagenet_variant(dataset_dir, spec)
        return Splits(data, [], data)
    raise ValueError(f"Unknown dataset kind {spec.kind!r}")
