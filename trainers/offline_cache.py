"""The offline teacher cache, trainer side: a component a trainer holds (``self.cache``), and what the cache builder
asks of such a trainer.

The component (:class:`OfflineTeacherCache`) reads the ``TRAINER.<NODE>`` keys ``TEACHER_CACHE`` and
``VIEW_KEYED_AUG``, keys the training views by (seed, epoch, index), opens and checks a cache, and looks rows up for a
batch's indices. The trainer says what a cached row is and what it depends on: the methods of
:class:`CacheableTrainer`, which ``tools/build_teacher_cache.py`` calls. The teacher part must not depend on the
student: see trainers/core/teacher_cache.py.
"""
from __future__ import annotations

import hashlib
import os.path as osp
from typing import Any, Callable, Dict, Optional, Protocol, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .config import cfg_node
from .core.teacher_cache import META, TeacherCache, TeacherCacheError, student_part_dir
from .view_data import ViewKeyedDatasetWrapper, check_view_keyed_transforms


class CacheableTrainer(Protocol):
    """What ``tools/build_teacher_cache.py`` asks of a trainer (besides ``self.cache``, an :class:`OfflineTeacherCache`).
    ``student_cache_rows`` is called only when ``student_cache_meta`` is not None."""

    def cache_meta(self) -> Dict[str, Any]:
        """Everything a teacher row depends on (nothing of the student's), with ``kind`` and ``width``."""

    def build_online_teacher(self) -> nn.Module:
        """The teacher itself (the builder runs it; a cached training run never builds it)."""

    def cache_rows(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The teacher rows to cache for these views."""

    def cache_row_scale(self) -> float:
        """The factor the reader multiplies rows by; top-k rows keep the residual probability mass at this scale."""

    def cache_topk(self) -> int:
        """Values kept per row when building (0 = the whole row)."""

    def student_cache_meta(self) -> Optional[Dict[str, Any]]:
        """What the student's cached image features depend on, or None when there is no frozen tower to cache."""

    def write_cache_files(self, cache_dir: str, teacher: nn.Module) -> None:
        """Files a cached run needs besides the rows (e.g. PromptKD's class vectors)."""


#: the methods a trainer class must define for tools/build_teacher_cache.py (those of :class:`CacheableTrainer`)
CACHE_CONTRACT = tuple(name for name in vars(CacheableTrainer) if not name.startswith("_"))


def supports_teacher_cache(trainer_class: type) -> bool:
    """Whether a trainer class can be cached: it names its cache node and defines every :data:`CACHE_CONTRACT`
    method."""
    return bool(getattr(trainer_class, "cache_node", "")) and all(
        callable(getattr(trainer_class, name, None)) for name in CACHE_CONTRACT)


class OfflineTeacherCache:
    """The cache of one run: ``TRAINER.<node>.TEACHER_CACHE`` (a folder, "" = online) and ``VIEW_KEYED_AUG``."""

    def __init__(self, cfg, node: str, device: torch.device):
        self.cfg, self.node, self.device = cfg, node, device
        #: the teacher part (None = online), and the student part (its frozen image features) when it holds this one's
        self.teacher: Optional[TeacherCache] = None
        self.student: Optional[TeacherCache] = None

    @property
    def keys(self):
        return cfg_node(self.cfg, f"TRAINER.{self.node}")

    @property
    def folder(self) -> str:
        return self.keys.get("TEACHER_CACHE", "")

    def view_keyed(self) -> bool:
        """Training views keyed by (seed, epoch, index): asked for, or implied by reading a cache."""
        return bool(self.keys.get("VIEW_KEYED_AUG", False) or self.folder)

    def dataset_wrapper(self):
        """The Dassl dataset wrapper for the training images (None = Dassl's own)."""
        if not self.view_keyed():
            return None
        check_view_keyed_transforms(self.cfg)
        return ViewKeyedDatasetWrapper

    def view_meta(self, items: Sequence) -> Dict[str, Any]:
        """What the training views of ``items`` (Dassl Datums) depend on: the images (paths relative to the dataset
        root, in order), the seed and the transform settings. Part of every cache's meta."""
        cfg = self.cfg
        root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
        paths = "\n".join(osp.relpath(osp.abspath(d.impath), root) for d in items)
        return {"num_images": len(items), "images_sha256": hashlib.sha256(paths.encode()).hexdigest(),
                "seed": int(cfg.SEED), "input_size": int(cfg.INPUT.SIZE[0]),
                "interpolation": str(cfg.INPUT.INTERPOLATION),
                "rrcrop_scale": [float(x) for x in cfg.INPUT.RRCROP_SCALE],
                "pixel_mean": [float(x) for x in cfg.INPUT.PIXEL_MEAN],
                "pixel_std": [float(x) for x in cfg.INPUT.PIXEL_STD]}

    def open(self, expected: Dict[str, Any], max_epoch: int, scale: float = 1.0,
             student_meta: Optional[Dict[str, Any]] = None,
             check_topk: Optional[Callable[[int, str], None]] = None) -> Optional[TeacherCache]:
        """The cache named by TEACHER_CACHE, refused unless built for ``expected`` and ``max_epoch`` epochs (and a
        top-k ``check_topk`` accepts); None when online. Its student part is opened too when it holds the features
        that ``student_meta`` describes."""
        folder = self.folder
        self.teacher = self.student = None
        if not folder:
            return None
        cache = TeacherCache(folder, self.device, expected=expected, scale=scale)
        check_epochs(cache, max_epoch)
        if check_topk is not None:
            check_topk(cache.topk, f"The top-k of the teacher cache at {folder}")
        self.teacher = cache
        print(f"Teacher {cache.kind.replace('_', ' ')} from the cache at {folder} ({cache.epochs} epochs of "
              f"{cache.num_images:,} views); no teacher image tower is built")
        if student_meta is not None:
            self.student = self._open_student_part(folder, student_meta, max_epoch)
        return cache

    def _open_student_part(self, folder: str, meta: Dict[str, Any], max_epoch: int) -> Optional[TeacherCache]:
        part = student_part_dir(folder, meta)
        if not osp.isfile(osp.join(part, META)):
            print(f"The teacher cache at {folder} holds no image features of this student ({osp.relpath(part, folder)})"
                  ": its frozen image tower runs every step (tools.build_teacher_cache with this run's arguments "
                  "adds them)")
            return None
        cache = TeacherCache(part, self.device, expected=meta)
        check_epochs(cache, max_epoch)
        print(f"The student's frozen image features of every view from {part}")
        return cache

    def rows(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """The cached teacher rows of the views ``index`` of ``epoch``, at the cache's row scale."""
        return self.teacher.lookup(epoch, index)

    def student_features(self, epoch: int, index: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The student's L2-normalised frozen image features (B, E) of these views, when cached; else None."""
        if self.student is None or index is None:
            return None
        return F.normalize(self.student.lookup(epoch, index), dim=-1)


def check_epochs(cache: TeacherCache, max_epoch: int) -> None:
    if cache.epochs < max_epoch:
        raise TeacherCacheError(
            f"The teacher cache at {cache.cache_dir} covers {cache.epochs} epochs; this run trains {max_epoch}. "
            "Extend it: run tools.build_teacher_cache with this run's arguments and the same --cache-dir.")
