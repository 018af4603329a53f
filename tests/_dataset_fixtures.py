"""Shared helpers for tests/test_datasets*.py (tests/conftest.py belongs to the whole suite; kept separate)."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.modules.setdefault("outdated", None)  # disable wilds/ogb network version checks

# Domain-benchmark cases: DATASET.NAME, synthetic layout, (source domains, target domains)
DOMAIN_CASES = {
    "ImageCLEFDA": ("imageclef_da", (["c"], ["i", "p"])),
    "PACSNamed": ("pacs", (["photo"], ["sketch"])),
    "VLCSNamed": ("vlcs", (["caltech"], ["sun"])),
    "VisDA17Named": ("visda17", (["synthetic"], ["real"])),
}


def make_cfg(root: str, name: str, num_shots: int = -1, subsample: str = "all", seed: int = 1, **dataset_keys):
    """A Dassl default cfg plus our dataset keys, pointed at a synthetic ``root`` (needs Dassl)."""
    from dassl.config import get_cfg_default

    from datasets.config import add_dataset_config

    cfg = get_cfg_default()
    add_dataset_config(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    cfg.USE_CUDA = False
    cfg.VERBOSE = False
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 8
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ("normalize",)
    if name in DOMAIN_CASES:
        src, tgt = DOMAIN_CASES[name][1]
        cfg.DATASET.SOURCE_DOMAINS, cfg.DATASET.TARGET_DOMAINS = src, tgt
    for key, value in dataset_keys.items():
        setattr(cfg.DATASET, key, value)
    return cfg
