"""The offline teacher cache, trainer side: keyed views, opening a cache, and what the cache builder asks of a trainer.

A trainer opts in with :class:`OfflineTeacherCacheMixin` and a ``cache_node`` (the ``TRAINER.<NODE>`` holding its
``TEACHER_CACHE`` and ``VIEW_KEYED_AUG`` keys), and says what a cached row is (:meth:`cache_rows`) and what it
depends on (:meth:`cache_meta`). ``tools/build_teacher_cache.py`` then works for every such trainer.
"""
from __future__ import annotations

import hashlib
import os.path as osp
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .config import cfg_node
from .core.teacher_cache import TeacherCache
from .view_data import ViewKeyedDatasetWrapper, check_view_keyed_transforms


class OfflineTeacherCacheMixin:
    """Mixed into a :class:`~trainers.base.PromptDistillTrainer` whose teacher outputs can be cached per view."""

    #: ``TRAINER.<cache_node>`` holds TEACHER_CACHE (a cache folder, "" = online) and VIEW_KEYED_AUG.
    cache_node = ""
    teacher_cache: Optional[TeacherCache] = None

    def cache_keys(self):
        return cfg_node(self.cfg, f"TRAINER.{self.cache_node}")

    def view_keyed(self) -> bool:
        """Training views keyed by (seed, epoch, index): asked for, or implied by reading a cache."""
        keys = self.cache_keys()
        return bool(keys.get("VIEW_KEYED_AUG", False) or keys.get("TEACHER_CACHE", ""))

    def train_dataset_wrapper(self):
        """The Dassl dataset wrapper for the training images (None = Dassl's own)."""
        if not self.view_keyed():
            return None
        check_view_keyed_transforms(self.cfg)
        return ViewKeyedDatasetWrapper

    def view_meta(self) -> Dict[str, Any]:
        """What the training views depend on: the images (paths relative to the dataset root, in order), the seed and
        the transform settings. Part of every cache's meta."""
        cfg = self.cfg
        items = self.train_loader_x.dataset.data_source
        root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
        paths = "\n".join(osp.relpath(osp.abspath(d.impath), root) for d in items)
        return {"num_images": len(items), "images_sha256": hashlib.sha256(paths.encode()).hexdigest(),
                "seed": int(cfg.SEED), "input_size": int(cfg.INPUT.SIZE[0]),
                "rrcrop_scale": [float(x) for x in cfg.INPUT.RRCROP_SCALE],
                "pixel_mean": [float(x) for x in cfg.INPUT.PIXEL_MEAN],
                "pixel_std": [float(x) for x in cfg.INPUT.PIXEL_STD]}

    def open_teacher_cache(self) -> Optional[TeacherCache]:
        """The cache named by TEACHER_CACHE, refused unless built for this run's settings; None when online."""
        folder = self.cache_keys().get("TEACHER_CACHE", "")
        if not folder:
            self.teacher_cache = None
            return None
        self.teacher_cache = TeacherCache(folder, self.device, expected=self.cache_meta())
        print(f"Teacher {self.teacher_cache.kind.replace('_', ' ')} from the cache at {folder} "
              f"({self.teacher_cache.meta.get('epochs')} epochs of {self.teacher_cache.num_images:,} views); "
              "no teacher image tower is built")
        return self.teacher_cache

    def cached_rows(self) -> torch.Tensor:
        """This batch's cached rows (the views of ``self.batch_index`` in this epoch)."""
        return self.teacher_cache.lookup(self.epoch, self.batch_index)

    # -------------------------------------------------------------------- what tools/build_teacher_cache.py asks
    def cache_meta(self) -> Dict[str, Any]:
        """Everything a cached row depends on, with ``kind`` and ``width``; a cache built for other values is
        refused."""
        raise NotImplementedError

    def build_online_teacher(self) -> nn.Module:
        """The teacher itself (the builder runs it; a cached training run never builds it)."""
        raise NotImplementedError

    def cache_rows(self, teacher: nn.Module, images: torch.Tensor
                   ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(rows to cache for these views, the student's frozen image features of them or None)."""
        raise NotImplementedError

    def cache_topk(self) -> int:
        """Values kept per row (0 = the whole row)."""
        return 0

    def write_cache_files(self, cache_dir: str, teacher: nn.Module) -> None:
        """Files a cached run needs besides the rows (e.g. PromptKD's class vectors)."""
