"""Reading one training/test image, failing fast with the file's name (PIL only; Dassl is patched only on request).

Dassl's ``DatasetWrapper`` reads every image with ``dassl.utils.read_image`` (``Image.open(path).convert("RGB")``;
older Dassl copies retried an IOError forever). An undecodable file then surfaces as a bare PIL error at its batch,
or, for a test image, after training finished. :func:`read_image` raises :class:`UnreadableImageError` instead,
naming the file and the command that lists every bad file of the dataset at once (``tools.check_data``), and
:func:`install_image_reader` makes Dassl's loaders use it (called when ``datasets`` registers its classes).
"""
from __future__ import annotations

import os
from typing import List, Optional

from PIL import Image

from .errors import DatasetError
from .paths import locate_dataset

__all__ = ["UnreadableImageError", "check_data_command", "image_problem", "read_image", "install_image_reader"]


class UnreadableImageError(DatasetError):
    """An image listed by a dataset is missing or cannot be decoded (not an OSError: nothing retries it)."""


def check_data_command(path: str) -> str:
    """The ``tools.check_data`` command for the dataset that holds ``path`` (placeholders when unknown)."""
    found = locate_dataset(path)
    if found is None:
        return "python -m tools.check_data DATASET --root $DATA"
    spec, root = found
    return f"python -m tools.check_data {spec.key} --root {root}"


def image_problem(path: str, decode: bool = True) -> Optional[str]:
    """Why ``path`` cannot be used as an image ("missing", "not decodable: ..."), or None when it reads fully.

    Decoding is exactly what the loader does (:func:`read_image`): open, load every pixel (a truncated file fails
    here) and convert to RGB.
    """
    if not os.path.isfile(path):
        return "missing"
    if not decode:
        return None
    try:
        read_image(path)
    except UnreadableImageError as e:
        cause = e.__cause__
        return f"not decodable ({type(cause).__name__}: {cause})"
    return None


def read_image(path: str) -> Image.Image:
    """``Image.open(path).convert("RGB")``, or :class:`UnreadableImageError` naming the file and the data check."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as e:
        problem = "does not exist" if isinstance(e, FileNotFoundError) else \
            f"cannot be decoded ({type(e).__name__}: {e})"
        raise UnreadableImageError(
            f"Image file {path} {problem}. Other files of the dataset may be damaged too: list them all before a "
            f"long run with `{check_data_command(path)}`, then re-extract or replace the bad files.") from e


_PATCHED: List[str] = []


def install_image_reader() -> List[str]:
    """Make Dassl's data loaders read images with :func:`read_image`; returns the module names patched.

    Patches the name ``read_image`` where Dassl defines it and where ``DatasetWrapper`` looks it up, so every loader
    (``DataManager``, ``build_data_loader``, wrapper subclasses that call ``read_image`` through those modules) fails
    fast with the clear error. Idempotent. DataLoader workers inherit the patch when forked (Linux's default); with
    a ``spawn`` start method a worker re-imports Dassl unpatched and reports PIL's own error instead.
    """
    import importlib

    for name in ("dassl.utils.tools", "dassl.utils", "dassl.data.data_manager"):
        module = importlib.import_module(name)
        if getattr(module, "read_image", None) is not read_image:
            module.read_image = read_image
            if name not in _PATCHED:
                _PATCHED.append(name)
    return list(_PATCHED)
