"""The offline teacher cache, trainer side: keyed views, opening a cache, and what the cache builder asks of a trainer.

A trainer opts in with :class:`OfflineTeacherCacheMixin` and a ``cache_node`` (the ``TRAINER.<NODE>`` holding its
``TEACHER_CACHE`` and ``VIEW_KEYED_AUG`` keys), and says what a cached row is (:meth:`cache_rows`) and what it
depends on (:meth:`cache_meta`), and, for a student whose image tower is frozen, what its cached features depend on
(:meth:`student_cache_meta`, :meth:`student_cache_rows`). ``tools/build_teacher_cache.py`` then works for every such
trainer. The teacher part must not depend on the student: see trainers/core/teacher_cache.py.
"""
from __future__ import annotations

import hashlib
import os.path as osp
from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .config import cfg_node
from .core.teacher_cache import META, TeacherCache, TeacherCacheError, student_part_dir
from .view_data import ViewKeyedDatasetWrapper, check_view_keyed_transforms


class OfflineTeacherCacheMixin:
    """Mixed into a :class:`~trainers.base.PromptDistillTrainer` whose teacher outputs can be cached per view."""

    #: ``TRAINER.<cache_node>`` holds TEACHER_CACHE (a cache folder, "" = online) and VIEW_KEYED_AUG.
    cache_node = ""
    teacher_cache: Optional[TeacherCache] = None
    #: the student part of the cache (its frozen image features), when the cache holds this student's
    student_cache: Optional[TeacherCache] = None

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
                "interpolation": str(cfg.INPUT.INTERPOLATION),
                "rrcrop_scale": [float(x) for x in cfg.INPUT.RRCROP_SCALE],
                "pixel_mean": [float(x) for x in cfg.INPUT.PIXEL_MEAN],
                "pixel_std": [float(x) for x in cfg.INPUT.PIXEL_STD]}

    def open_teacher_cache(self) -> Optional[TeacherCache]:
        """The cache named by TEACHER_CACHE, refused unless built for this run's settings and epochs; None when
        online. Its student part is opened too when it holds this student's features."""
        folder = self.cache_keys().get("TEACHER_CACHE", "")
        self.teacher_cache = self.student_cache = None
        if not folder:
            return None
        cache = TeacherCache(folder, self.device, expected=self.cache_meta(), scale=self.cache_row_scale())
        self.check_cache_epochs(cache)
        self.check_cache_topk(cache.topk, f"The top-k of the teacher cache at {folder}")
        self.teacher_cache = cache
        print(f"Teacher {cache.kind.replace('_', ' ')} from the cache at {folder} ({cache.epochs} epochs of "
              f"{cache.num_images:,} views); no teacher image tower is built")
        self.student_cache = self.open_student_cache(folder)
        return cache

    def open_student_cache(self, folder: str) -> Optional[TeacherCache]:
        """This student's cached image features, if the cache holds them (else the student's tower runs)."""
        meta = self.student_cache_meta()
        if meta is None:
            return None
        part = student_part_dir(folder, meta)
        if not osp.isfile(osp.join(part, META)):
            print(f"The teacher cache at {folder} holds no image features of this student ({osp.relpath(part, folder)})"
                  ": its frozen image tower runs every step (tools.build_teacher_cache with this run's arguments "
                  "adds them)")
            return None
        cache = TeacherCache(part, self.device, expected=meta)
        self.check_cache_epochs(cache)
        print(f"The student's frozen image features of every view from {part}")
        return cache

    def check_cache_epochs(self, cache: TeacherCache) -> None:
        if cache.epochs < self.max_epoch:
            raise TeacherCacheError(
                f"The teacher cache at {cache.cache_dir} covers {cache.epochs} epochs; this run trains {self.max_epoch}"
                ". Extend it: run tools.build_teacher_cache with this run's arguments and the same --cache-dir.")

    def cached_rows(self) -> torch.Tensor:
        """This batch's cached rows (the views of ``self.batch_index`` in this epoch), at :meth:`cache_row_scale`."""
        return self.teacher_cache.lookup(self.epoch, self.batch_index)

    def cached_student_features(self) -> Optional[torch.Tensor]:
        """The student's L2-normalised frozen image features (B, E) of this batch's views, when cached; else None."""
        if self.student_cache is None:
            return None
        return F.normalize(self.student_cache.lookup(self.epoch, self.batch_index), dim=-1)

    # -------------------------------------------------------------------- what tools/build_teacher_cache.py asks
    def cache_meta(self) -> Dict[str, Any]:
        """Everything a teacher row depends on (nothing of the student's), with ``kind`` and ``width``; a cache built
        for other values is refused."""
        raise NotImplementedError

    def build_online_teacher(self) -> nn.Module:
        """The teacher itself (the builder runs it; a cached training run never builds it)."""
        raise NotImplementedError

    def cache_rows(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The teacher rows to cache for these views."""
        raise NotImplementedError

    def cache_row_scale(self) -> float:
        """The factor the reader multiplies rows by (KDPL: the student's logit scale); top-k rows keep the residual
        probability mass at this scale."""
        return 1.0

    def student_cache_meta(self) -> Optional[Dict[str, Any]]:
        """What the student's cached image features depend on (``kind``, ``width``, ``student``, ``student_prec``...),
        or None when the student has no frozen image tower to cache."""
        return None

    def student_cache_rows(self, images: torch.Tensor) -> torch.Tensor:
        """The student's image features of these views, as its training step computes them."""
        raise NotImplementedError

    def cache_topk(self) -> int:
        """Values kept per row when building (0 = the whole row)."""
        return 0

    def check_cache_topk(self, topk: int, source: str) -> None:
        """Refuse a top-k (``source``: the config key or the cache) this run cannot use; nothing by default."""

    def write_cache_files(self, cache_dir: str, teacher: nn.Module) -> None:
        """Files a cached run needs besides the rows (e.g. PromptKD's class vectors)."""
