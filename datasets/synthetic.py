"""Tiny synthetic datasets in the REAL on-disk layouts (no Dassl import), for tests and the demo.

``make_synthetic_dataset(root, layout="eurosat")`` writes ``<root>/eurosat/2750/<Class>/*.jpg`` and
``<root>/eurosat/split_zhou_EuroSAT.json`` exactly as CoOp expects, so the real readers (and Dassl's, for PACS,
VLCS and VisDA17) are exercised end to end. Images are small (default 32x32) and class-dependent: each class has
its own hue and stripe pattern, each domain its own style, plus per-image noise and shift, so a model can learn
something from a few shots.

CLI: ``python -m datasets.synthetic --root DIR --layout eurosat [--num-classes N --per-class K --size S --seed S]``.
"""
from __future__ import annotations

import argparse
import colorsys
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .specs import (EUROSAT_RENAME, IMAGECLEF_CLASSNAMES, IMAGECLEF_DOMAINS, PACS_CLASSNAMES, SPECS_BY_KEY,
                    VISDA17_CLASSNAMES, VLCS_CLASSNAMES, DatasetSpec)

__all__ = ["LAYOUTS", "make_synthetic_dataset", "render_image", "synthetic_classnames", "split_counts", "main"]

PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
VLCS_DOMAINS = ("caltech", "labelme", "pascal", "sun")
VISDA_DOMAINS = ("synthetic", "real")
DOMAIN_LAYOUTS = {"pacs": (PACS_CLASSNAMES, PACS_DOMAINS), "vlcs": (VLCS_CLASSNAMES, VLCS_DOMAINS),
                  "visda17": (VISDA17_CLASSNAMES, VISDA_DOMAINS),
                  "imageclef_da": (IMAGECLEF_CLASSNAMES, IMAGECLEF_DOMAINS)}
LAYOUTS: Tuple[str, ...] = tuple(SPECS_BY_KEY) + tuple(DOMAIN_LAYOUTS) + ("image_folder", "image_folder_flat")

# prompt-friendly words for synthetic class names (cycled with a suffix when more are needed)
_WORDS = ("apple", "bicycle", "castle", "dolphin", "elephant", "forest", "guitar", "harbor", "island", "jellyfish",
          "kettle", "lighthouse", "mountain", "notebook", "orchid", "parrot", "quilt", "river", "sandwich", "tiger",
          "umbrella", "violin", "waterfall", "yacht", "zebra", "anchor", "balloon", "cactus", "desert", "feather",
          "glacier", "hammer", "igloo", "jungle", "koala", "lantern", "meadow", "necklace", "owl", "pyramid")


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------
def render_image(label: int, num_classes: int, rng: np.random.Generator, size: int = 32,
                 domain: int = 0) -> Image.Image:
    """A class-dependent image: hue = label / num_classes, stripe orientation and frequency from the label,
    random phase and noise per image, and a per-domain style (0 plain, 1 inverted, 2 grey, 3 posterised)."""
    r, g, b = colorsys.hsv_to_rgb((label / max(num_classes, 1)) % 1.0, 0.75, 0.9)
    colour = np.array([r, g, b], dtype=np.float32) * 255.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    freq = 2.0 + (label // 4) % 3
    phase = rng.uniform(0, 2 * np.pi)
    coord = (yy, xx, xx + yy, xx - yy)[label % 4]
    pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq * coord + phase)
    img = colour[None, None, :] * (0.55 + 0.45 * pattern[..., None])
    img = img + rng.normal(0.0, 12.0, size=img.shape)
    style = domain % 4
    if style == 1:
        img = 255.0 - img
    elif style == 2:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    elif style == 3:
        img = np.round(img / 85.0) * 85.0
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


class _Writer:
    """Writes images with a shared RNG and remembers nothing else (layout code decides the paths)."""

    def __init__(self, num_classes: int, size: int, seed: int, fmt: str):
        self.num_classes, self.size, self.fmt = num_classes, size, fmt
        self.rng = np.random.default_rng(seed)

    def __call__(self, path: str, label: int, domain: int = 0) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img = render_image(label, self.num_classes, self.rng, self.size, domain)
        if path.lower().endswith((".jpg", ".jpeg")):
            img.save(path, format="JPEG", quality=92)
        else:
            img.save(path, format="PNG")
        return path


def split_counts(per_class: int) -> Tuple[int, int, int]:
    """(train, val, test) images per class: ``per_class`` for train, ``max(1, per_class // 2)`` for val and test."""
    if per_class < 1:
        raise ValueError("per_class must be >= 1")
    other = max(1, per_class // 2)
    return per_class, other, other


def synthetic_classnames(layout: str, num_classes: int) -> List[str]:
    """Prompt-ready class names the synthetic ``layout`` uses (the JSON / classnames.txt names)."""
    if layout in DOMAIN_LAYOUTS:
        return list(DOMAIN_LAYOUTS[layout][0][:num_classes])
    if layout == "eurosat":
        return [EUROSAT_RENAME[f] for f in sorted(EUROSAT_RENAME)[:num_classes]]
    if layout == "fgvc_aircraft":  # variant-like names, e.g. "Apple-100" (real: "707-320")
        return [f"{_WORDS[i % len(_WORDS)].title()}-{100 + i}" for i in range(num_classes)]
    return [_WORDS[i % len(_WORDS)] + (f" {i // len(_WORDS) + 1}" if i >= len(_WORDS) else "")
            for i in range(num_classes)]


def _default_num_classes(layout: str) -> int:
    if layout in DOMAIN_LAYOUTS:
        return len(DOMAIN_LAYOUTS[layout][0])
    if layout in SPECS_BY_KEY:
        return min(SPECS_BY_KEY[layout].num_classes, 10)
    return 5


# ----------------------------------------------------------------------------------------------------------------
# Layout writers: each returns the dataset folder
# ----------------------------------------------------------------------------------------------------------------
def _folder_name(name: str) -> str:
    return name.replace(" ", "_")


def _split_json(spec: DatasetSpec, root: str, names: List[str], per_class: int, write: _Writer, ext: str) -> str:
    """The JSON-split datasets: image files in the dataset's own naming style + split_zhou_<Name>.json."""
    ds = os.path.join(root, spec.folder)
    img_root = os.path.join(ds, spec.image_dir) if spec.image_dir else ds
    prefix = ds if spec.split_relative_to == "folder" else img_root
    counts = split_counts(per_class)
    split: Dict[str, list] = {"train": [], "val": [], "test": []}
    folders = sorted(EUROSAT_RENAME)[:len(names)] if spec.key == "eurosat" else \
        [_folder_name(n) for n in names]
    serial = 0
    for label, (folder, name) in enumerate(zip(folders, names)):
        for s_idx, s_name in enumerate(("train", "val", "test")):
            for _ in range(counts[s_idx]):
                serial += 1
                if spec.key == "oxford_pets":  # flat images/<Breed_name>_<n>.jpg, class = lower-cased breed
                    rel = f"{folder.capitalize()}_{serial}{ext}"
                elif spec.key == "oxford_flowers":  # flat jpg/image_00001.jpg
                    rel = f"image_{serial:05d}{ext}"
                elif spec.key == "stanford_cars":  # cars_train/ (train+val) and cars_test/, relative to the folder
                    rel = f"{'cars_test' if s_name == 'test' else 'cars_train'}/{serial:05d}{ext}"
                elif spec.key == "sun397":  # SUN397/<letter>/<name>/sun_<n>.jpg
                    rel = f"{folder[0]}/{folder}/sun_{serial:06d}{ext}"
                elif spec.key == "ucf101":
                    rel = f"{folder}/v_{folder}_g01_c{serial:03d}{ext}"
                else:  # class folders: Caltech, Food101, DTD, EuroSAT
                    rel = f"{folder}/{folder}_{serial:04d}{ext}"
                write(os.path.join(prefix, rel), label)
                split[s_name].append([rel, label, name])
    with open(os.path.join(ds, spec.split_file), "w", encoding="utf-8") as f:
        json.dump(split, f, indent=1)
    if spec.key == "oxford_flowers":
        with open(os.path.join(ds, "cat_to_name.json"), "w", encoding="utf-8") as f:
            json.dump({str(i + 1): n for i, n in enumerate(names)}, f)
    if spec.key == "oxford_pets":
        os.makedirs(os.path.join(ds, "annotations"), exist_ok=True)
    return ds


def _wnids(n: int, offset: int = 0) -> List[str]:
    return [f"n{1440764 + 1000 * (i + offset):08d}" for i in range(n)]


def _write_classnames(path: str, wnids: Sequence[str], names: Sequence[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{w} {n}\n" for w, n in zip(wnids, names))


def _imagenet(spec, root, names, per_class, write, ext) -> str:
    ds = os.path.join(root, spec.folder)
    wnids = _wnids(len(names))
    _write_classnames(os.path.join(ds, "classnames.txt"), wnids, names)
    n_train, _, n_val = split_counts(per_class)
    serial = 0
    for label, w in enumerate(wnids):
        for i in range(n_train):
            write(os.path.join(ds, "images", "train", w, f"{w}_{i}.JPEG" if ext == ".jpg" else f"{w}_{i}{ext}"),
                  label)
        for _ in range(n_val):
            serial += 1
            write(os.path.join(ds, "images", "val", w, f"ILSVRC2012_val_{serial:08d}{ext}"), label)
    return ds


def _imagenet_variant(spec, root, names, per_class, write, ext) -> str:
    """V2: folders 0..N-1 + N-line classnames.txt. Sketch: all N wnid folders. A/R: classnames.txt lists 2N wnids
    (as the real file lists 1000) and only every other one has a folder, so relabelling 0..N-1 is exercised."""
    ds = os.path.join(root, spec.folder)
    img = os.path.join(ds, spec.image_dir)
    if spec.key in ("imagenet_a", "imagenet_r"):
        all_wnids = _wnids(2 * len(names))
        all_names = [f"other {i}" for i in range(2 * len(names))]
        for j, n in enumerate(names):
            all_names[2 * j + 1] = n
        _write_classnames(os.path.join(ds, "classnames.txt"), all_wnids, all_names)
        folders = all_wnids[1::2]
        os.makedirs(img, exist_ok=True)
        with open(os.path.join(img, "README.txt"), "w") as f:  # the real archives ship one; it is not a class
            f.write("synthetic\n")
    else:
        folders = _wnids(len(names))
        _write_classnames(os.path.join(ds, "classnames.txt"), folders, names)
    for label, w in enumerate(folders):
        sub = str(label) if spec.key == "imagenetv2" else w
        for i in range(per_class):
            write(os.path.join(img, sub, f"{w}_{i}{ext}"), label)
    return ds


def _fgvc(spec, root, names, per_class, write, ext) -> str:
    ds = os.path.join(root, spec.folder)
    os.makedirs(ds, exist_ok=True)
    variants = names
    with open(os.path.join(ds, "variants.txt"), "w", encoding="utf-8") as f:
        f.writelines(v + "\n" for v in variants)
    serial = 1000000
    lines: Dict[str, List[str]] = {"train": [], "val": [], "test": []}
    for label, v in enumerate(variants):
        for s_idx, s_name in enumerate(("train", "val", "test")):
            for _ in range(split_counts(per_class)[s_idx]):
                serial += 1
                write(os.path.join(ds, "images", f"{serial:07d}.jpg"), label)
                lines[s_name].append(f"{serial:07d} {v}\n")
    for s_name, ls in lines.items():
        with open(os.path.join(ds, f"images_variant_{s_name}.txt"), "w", encoding="utf-8") as f:
            f.writelines(ls)
    return ds


def _domain_layout(layout, root, names, per_class, write, ext) -> str:
    """PACS, VLCS (Dassl layouts), VisDA17 (Dassl layout) and ImageCLEF-DA (our layout)."""
    domains = DOMAIN_LAYOUTS[layout][1]
    n_train, n_val, n_test = split_counts(per_class)
    if layout == "pacs":
        ds = os.path.join(root, "pacs")
        os.makedirs(os.path.join(ds, "splits"), exist_ok=True)
        for d_idx, d in enumerate(domains):
            split_lines = {"train": [], "crossval": []}
            for label, c in enumerate(names):
                for s_name, n in (("train", n_train), ("crossval", n_val)):
                    for i in range(n):
                        rel = f"{d}/{c}/{s_name}_{i}{ext}"
                        write(os.path.join(ds, "images", rel), label, d_idx)
                        split_lines[s_name].append(f"{rel} {label + 1}\n")  # 1-based in the real files
            split_lines["test"] = split_lines["train"] + split_lines["crossval"]
            for s_name, ls in split_lines.items():
                with open(os.path.join(ds, "splits", f"{d}_{s_name}_kfold.txt"), "w") as f:
                    f.writelines(ls)
        return ds
    if layout == "vlcs":
        ds = os.path.join(root, "VLCS")
        for d_idx, d in enumerate(domains):
            for s_name, n in (("train", n_train), ("crossval", n_val), ("test", n_test)):
                for label, c in enumerate(names):
                    for i in range(n):  # Dassl globs *.jpg only
                        write(os.path.join(ds, d.upper(), s_name, c, f"{i}.jpg"), label, d_idx)
        return ds
    if layout == "visda17":
        ds = os.path.join(root, "visda17")
        for d_idx, (d, sub) in enumerate(zip(domains, ("train", "validation"))):
            lines = []
            for label, c in enumerate(names):
                for i in range(n_train if d == "synthetic" else n_test):
                    rel = f"{c}/{d}_{i:05d}{ext}"
                    write(os.path.join(ds, sub, rel), label, d_idx)
                    lines.append(f"{rel} {label}\n")
            with open(os.path.join(ds, sub, "image_list.txt"), "w") as f:
                f.writelines(lines)
        return ds
    ds = os.path.join(root, "image_clef")  # imageclef_da
    for d_idx, d in enumerate(domains):
        lines = []
        for label, c in enumerate(names):
            for i in range(n_train):
                rel = f"{d}/{c}/{label}_{i}{ext}"
                write(os.path.join(ds, rel), label, d_idx)
                lines.append(f"{rel} {label}\n")
        os.makedirs(ds, exist_ok=True)
        with open(os.path.join(ds, f"{d}.txt"), "w") as f:
            f.writelines(lines)
    return ds


def _image_folder(layout, root, names, per_class, write, ext) -> str:
    ds = os.path.join(root, layout)  # image_folder/ or image_folder_flat/
    counts = split_counts(per_class)
    for label, n in enumerate(names):
        c = _folder_name(n)
        if layout == "image_folder_flat":
            for i in range(sum(counts)):
                write(os.path.join(ds, c, f"{i}{ext}"), label)
        else:
            for s_idx, s_name in enumerate(("train", "val", "test")):
                for i in range(counts[s_idx]):
                    write(os.path.join(ds, s_name, c, f"{i}{ext}"), label)
    return ds


# ----------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------
def make_synthetic_dataset(root: str, layout: str = "eurosat", num_classes: Optional[int] = None,
                           per_class: int = 4, size: int = 32, seed: int = 0, fmt: str = "jpg") -> str:
    """Write a tiny dataset in the real on-disk ``layout`` under ``root`` (= $DATA) and return its folder.

    ``layout``: a key of protocols.md §1 (``eurosat``, ``imagenet``, ``imagenet_a``, ``fgvc_aircraft``, ...),
    ``pacs``, ``vlcs``, ``visda17``, ``imageclef_da``, ``image_folder`` or ``image_folder_flat``.
    ``num_classes`` defaults to min(real count, 10) (domain sets: their fixed lists, at most that many).
    ``per_class`` images per class go to train; val and test get ``max(1, per_class // 2)`` each (test-only
    ImageNet variants: ``per_class`` test images; domain sets: per domain). Deterministic for a given ``seed``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose from {list(LAYOUTS)}")
    if fmt not in ("jpg", "png"):
        raise ValueError("fmt must be 'jpg' or 'png'")
    n = _default_num_classes(layout) if num_classes is None else int(num_classes)
    limit = len(DOMAIN_LAYOUTS[layout][0]) if layout in DOMAIN_LAYOUTS else (10 if layout == "eurosat" else None)
    if n < 1 or (limit is not None and n > limit):
        raise ValueError(f"num_classes for layout {layout!r} must be in 1..{limit or 'any'}, got {n}")
    names = synthetic_classnames(layout, n)
    write = _Writer(n, size, seed, fmt)
    ext = "." + fmt
    root = os.path.abspath(os.path.expanduser(root))
    if layout in DOMAIN_LAYOUTS:
        return _domain_layout(layout, root, names, per_class, write, ext)
    if layout.startswith("image_folder"):
        return _image_folder(layout, root, names, per_class, write, ext)
    spec = SPECS_BY_KEY[layout]
    builder: Callable = {"split_json": _split_json, "imagenet": _imagenet, "imagenet_variant": _imagenet_variant,
                         "fgvc": _fgvc}[spec.kind]
    return builder(spec, root, names, per_class, write, ext)


def main(argv: Optional[Sequence[str]] = None) -> str:
    p = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="the $DATA folder to write into")
    p.add_argument("--layout", default="eurosat", choices=LAYOUTS)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--per-class", type=int, default=4, help="train images per class (val/test get half)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", dest="fmt", default="jpg", choices=("jpg", "png"))
    args = p.parse_args(argv)
    path = make_synthetic_dataset(args.root, args.layout, args.num_classes, args.per_class, args.size, args.seed,
                                  args.fmt)
    print(f"Wrote synthetic {args.layout} dataset to {path}")
    return path


if __name__ == "__main__":
    main()
