"""Dassl data wrapper whose training views are keyed by (seed, epoch, index): the teacher-cache's data side."""
from __future__ import annotations

from typing import Any, Dict

import torch

from dassl.data import data_manager as dassl_data_manager
from dassl.data.data_manager import DatasetWrapper

from .core.views import ViewSampler, apply_view

SUPPORTED_TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]


def check_view_keyed_transforms(cfg) -> None:
    """Keyed views reproduce CoOp's training transform exactly; other transform lists cannot be keyed."""
    if list(cfg.INPUT.TRANSFORMS) != SUPPORTED_TRANSFORMS:
        raise ValueError(f"View-keyed augmentation (teacher cache) supports INPUT.TRANSFORMS {SUPPORTED_TRANSFORMS} "
                         f"only, got {list(cfg.INPUT.TRANSFORMS)}.")


class ViewKeyedDatasetWrapper(DatasetWrapper):
    """Training items get the crop box and flip of (cfg.SEED, epoch, index); test items Dassl's test transform.

    ``epoch`` is set by the trainer before each epoch (workers are re-created per epoch and copy it).
    """

    def __init__(self, cfg, data_source, transform=None, is_train: bool = False):
        super().__init__(cfg, data_source, transform=transform, is_train=is_train)
        self.epoch = 0
        self.sampler = ViewSampler(seed=max(int(cfg.SEED), 0), scale=tuple(cfg.INPUT.RRCROP_SCALE))
        self.size = int(cfg.INPUT.SIZE[0])
        self.mean, self.std = list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)
        self.interpolation = cfg.INPUT.INTERPOLATION

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        if not self.is_train:
            return super().__getitem__(idx)
        item = self.data_source[idx]
        img0 = dassl_data_manager.read_image(item.impath)  # the reader DatasetWrapper uses (ours, if datasets/ set it)
        params = self.sampler.params(self.epoch, idx, img0.width, img0.height)
        return {
            "label": item.label, "domain": item.domain, "impath": item.impath, "index": idx,
            "img": apply_view(img0, params, self.size, self.mean, self.std, self.interpolation),
            "view": torch.tensor(params),
        }
