"""``ImageFolderDataset``: a user's own images as a Dassl dataset. Requires Dassl.

Layout: ``$DATA/<DATASET.IMAGE_FOLDER>/{train,val,test}/<class>/*.jpg`` (val optional), or
``$DATA/<DATASET.IMAGE_FOLDER>/<class>/*.jpg`` split 50/20/30 per class with DATASET.SPLIT_SEED. Labels follow the
sorted class folders; names come from an optional ``classnames.txt`` ("<folder> <name>") or the folder names.
"""
from __future__ import annotations

import os

from dassl.data.datasets import DatasetBase

from .config import dataset_option
from .dassl_base import PipelineMixin, dataset_root, register_dataset
from .domain_readers import read_image_folder

__all__ = ["ImageFolderDataset"]


@register_dataset
class ImageFolderDataset(PipelineMixin, DatasetBase):
    """Generic class-folder dataset with the same few-shot (cached) and base/new options as the benchmarks."""

    def __init__(self, cfg):
        self.dataset_dir = os.path.join(dataset_root(cfg), str(dataset_option(cfg, "IMAGE_FOLDER")))
        splits = read_image_folder(self.dataset_dir, split_seed=int(dataset_option(cfg, "SPLIT_SEED")))
        self._finish(cfg, splits.train, splits.val, splits.test, self.dataset_dir)
