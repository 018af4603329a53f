"""Parts both PromptKD stages share: the teacher backbone name, the KD weight table, the evaluated rows of the class
vectors and the all-class dataset.

Data regime (spec §6-7; our design, no dataset patching): ``DATASET.SUBSAMPLE_CLASSES`` chooses the *evaluated*
classes (base -> rows W[:m], new -> W[m:], all -> W, m = ceil(N/2)), while the distillation set is always the
unlabeled training split of ALL N classes (rebuilt from the stock dataset), i.e. transductive. Stage 1 writes the
class vectors of all N classes (:func:`all_class_dataset`); stage 2 scores rows :func:`eval_rows` of them.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

from dassl.data.datasets import build_dataset

from .config import cfg_value

DEFAULT_TEACHER = "ViT-L/14"
# scripts/promptkd/base2new_train.sh of the reference (comment of 2024-03-21): 200 for these, 1000 for the rest;
# the cross-dataset script uses 1000 for every target.
KD_WEIGHTS: Dict[str, float] = {"OxfordFlowers": 200.0, "FGVCAircraft": 200.0, "DescribableTextures": 200.0}
DEFAULT_KD_WEIGHT = 1000.0


def teacher_backbone(node) -> str:
    """TEACHER_BACKBONE, or the reference key TEACHER_NAME when only that one was changed."""
    name, backbone = node.TEACHER_NAME, node.TEACHER_BACKBONE
    if name == "ViT/L-14":
        raise ValueError("TRAINER.PROMPTKD.TEACHER_NAME 'ViT/L-14' is the reference's typo; use 'ViT-L/14'.")
    if name and name != backbone:
        if backbone != DEFAULT_TEACHER:
            if name != DEFAULT_TEACHER:
                raise ValueError(f"TRAINER.PROMPTKD.TEACHER_NAME={name!r} and TEACHER_BACKBONE={backbone!r} "
                                 "disagree; set one of them.")
            return backbone
        return name
    return backbone or name


def kd_weight_for(dataset_name: str, modal: str, configured: float) -> Tuple[float, str]:
    """The KD weight and where it comes from: the configured value if >= 0, else the reference's table."""
    if configured >= 0:
        return float(configured), "TRAINER.PROMPTKD.KD_WEIGHT"
    if modal != "base2novel":
        return DEFAULT_KD_WEIGHT, f"{modal} default"
    return KD_WEIGHTS.get(dataset_name, DEFAULT_KD_WEIGHT), f"per-dataset table ({dataset_name})"


def eval_rows(subsample: str, num_classes: int) -> Tuple[int, int]:
    """Rows of W scored at test time: base = [0, m), new = [m, N), all = [0, N), m = ceil(N/2) (protocols.md §3)."""
    m = math.ceil(num_classes / 2)
    rows = {"all": (0, num_classes), "base": (0, m), "new": (m, num_classes)}
    if subsample not in rows:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new; got {subsample!r}.")
    return rows[subsample]


def all_class_dataset(cfg, dataset, keep_shots: bool = True):
    """The dataset with all N classes: ``dataset`` itself when SUBSAMPLE_CLASSES is all, else rebuilt from the stock
    class (``keep_shots=False`` skips few-shot sampling when only the class names are needed)."""
    subsample = cfg_value(cfg, "DATASET.SUBSAMPLE_CLASSES")
    if subsample == "all" and (keep_shots or int(cfg.DATASET.NUM_SHOTS) < 1):
        return dataset
    cfg_all = cfg.clone()
    cfg_all.defrost()
    cfg_all.DATASET.SUBSAMPLE_CLASSES = "all"
    if not keep_shots:
        cfg_all.DATASET.NUM_SHOTS = 0
    cfg_all.freeze()
    print(f"Reading {cfg.DATASET.NAME} with all classes (SUBSAMPLE_CLASSES all"
          f"{'' if keep_shots else ', NUM_SHOTS 0'}) for PromptKD")
    return build_dataset(cfg_all)

