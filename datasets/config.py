"""The dataset config keys this package reads, with their defaults (no Dassl import).

``add_dataset_config(cfg)`` is called by train.py after Dassl's defaults: it adds only the keys that are absent, so
a CoOp fork's ``extend_cfg`` (which already adds ``DATASET.SUBSAMPLE_CLASSES``) keeps working. Dataset code reads
every key through :func:`dataset_option`, so a cfg without our extra keys still works with these defaults.
"""
from __future__ import annotations

from typing import Any, Dict

__all__ = ["DATASET_DEFAULTS", "add_dataset_config", "dataset_option"]

DATASET_DEFAULTS: Dict[str, Any] = {
    # base-to-new protocol: all | base | new (CoOp's extend_cfg key)
    "SUBSAMPLE_CLASSES": "all",
    # generate a missing split_zhou_*.json from class folders (DTD, Caltech101, EuroSAT, Food101 only); off by
    # default because a generated split is not the published one
    "GENERATE_SPLIT": False,
    # seed of generated splits (split JSON generation and single-folder ImageFolderDataset); independent of SEED
    "SPLIT_SEED": 1,
    # where few-shot / preprocessed caches go when the dataset folder is not writable ("" = $FEWSHOT_CACHE_DIR,
    # else <OUTPUT_DIR>/data_cache)
    "FEWSHOT_CACHE_DIR": "",
    # ImageFolderDataset: folder under DATASET.ROOT holding train/val/test class folders (or class folders)
    "IMAGE_FOLDER": "image_folder",
}


def add_dataset_config(cfg) -> None:
    """Add the keys of :data:`DATASET_DEFAULTS` to ``cfg.DATASET`` where absent (cfg must not be frozen)."""
    for key, value in DATASET_DEFAULTS.items():
        if key not in cfg.DATASET:
            setattr(cfg.DATASET, key, value)


def dataset_option(cfg, key: str) -> Any:
    """``cfg.DATASET.<key>`` or its default (works with any yacs CfgNode or a plain attribute object)."""
    ds = cfg.DATASET
    if hasattr(ds, "get"):
        return ds.get(key, DATASET_DEFAULTS[key])
    return getattr(ds, key, DATASET_DEFAULTS[key])
