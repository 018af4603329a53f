"""Dataset folders on disk: checked paths with errors that say where to get the data, listing, and locating.

Listing is sorted so that reading is deterministic across filesystems.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from .errors import DatasetNotFoundError
from .specs import SPECS, DatasetSpec, where_to_get

__all__ = ["IMAGE_EXTENSIONS", "require_dir", "require_file", "dataset_paths", "locate_dataset", "list_dirs",
           "list_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def require_dir(path: str, what: str, spec: Optional[DatasetSpec] = None, hint: str = "") -> str:
    """Return ``path`` if it is a directory, else raise an error naming it, its parent and where to get it."""
    if not os.path.isdir(path):
        parent = os.path.dirname(os.path.normpath(path))
        msg = f"{what} not found: expected the directory {path} (inside {parent})."
        extra = "\n".join(x for x in (hint, where_to_get(spec)) if x)
        raise DatasetNotFoundError(msg + ("\n" + extra if extra else ""))
    return path


def require_file(path: str, what: str, spec: Optional[DatasetSpec] = None, hint: str = "") -> str:
    """Return ``path`` if it is a file, else raise an error naming it, its folder and where to get it."""
    if not os.path.isfile(path):
        msg = f"{what} not found: expected the file {path} (in folder {os.path.dirname(path)})."
        extra = "\n".join(x for x in (hint, where_to_get(spec)) if x)
        raise DatasetNotFoundError(msg + ("\n" + extra if extra else ""))
    return path


def dataset_paths(spec: DatasetSpec, root: str) -> Tuple[str, str]:
    """(dataset folder, image dir) under ``root`` = cfg.DATASET.ROOT, after checking both exist."""
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = require_dir(os.path.join(root, spec.folder), f"{spec.name} dataset folder", spec,
                              hint=f"DATASET.ROOT is {root}; {spec.name} must be in its sub-folder '{spec.folder}/'.")
    image_dir = os.path.join(dataset_dir, spec.image_dir) if spec.image_dir else dataset_dir
    require_dir(image_dir, f"{spec.name} image directory", spec)
    return dataset_dir, image_dir


def locate_dataset(path: str) -> Optional[Tuple[DatasetSpec, str]]:
    """(spec, DATASET.ROOT) of the SPECS dataset whose image folder holds ``path``, else None.

    Inverts :func:`dataset_paths` so that an error about one file can name the dataset and root to check.
    """
    parts = os.path.abspath(path).split(os.sep)
    for spec in SPECS:
        inner = [spec.folder] + ([p for p in spec.image_dir.split("/") if p] if spec.image_dir else [])
        for i in range(len(parts) - len(inner) - 1, 0, -1):  # the innermost match; the file name is not a folder
            if parts[i:i + len(inner)] == inner:
                return spec, os.sep.join(parts[:i]) or os.sep
    return None


def list_dirs(path: str) -> List[str]:
    """Sorted non-hidden sub-directory names (the label order of class-folder datasets)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def list_files(path: str) -> List[str]:
    """Sorted non-hidden file names (sorted so that reading is deterministic across filesystems)."""
    return sorted(e.name for e in os.scandir(path) if e.is_file() and not e.name.startswith("."))
