"""An offline cache of teacher outputs, one row per (epoch, image index) view, written in shards.

Layout of a cache folder::

    meta.json                      what the rows depend on (teacher, classes, views, scale); checked on use
    epoch_{E:03d}.rank{R:03d}.pt   {"index": int64 [M], "values": fp16 [M, k], "classes": int32 [M, k] or absent,
                                    "student": fp16 [M, E] or absent}

``meta["kind"]`` says what a row is: ``logits`` (KDPL: the teacher's logits over the training classes) or
``teacher_features`` (PromptKD: the teacher's L2-normalised image feature; its logits are ``scale * u @ W.T`` with the
class vectors W stored once beside the shards, so a row costs E values instead of N). ``meta["width"]`` is a row's
length. ``student`` holds the student's own image features of the same views when its image tower is frozen (CoOp,
CoCoOp), so a cached step runs neither image tower.

A logits row with ``k`` equal to the number of classes is stored whole (exact up to fp16); with a smaller ``k`` only
each view's top-k logits and the probability mass of the other classes are kept (FKD's soft labels): read back, the
top-k classes keep their probabilities and the other classes share the remaining mass uniformly, so no probability
is 0 and both directions of KDPL's symmetric KL stay finite. Several processes (``torchrun``, several nodes) write
disjoint shards of the same epoch; the reader merges them.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Any, Dict, Optional

import torch
from torch.nn import functional as F

META = "meta.json"
_SHARD = re.compile(r"epoch_(\d+)\.rank(\d+)\.pt$")
#: smallest probability mass left to the classes outside a view's top-k (keeps their logits finite)
MIN_RESIDUAL_MASS = 1e-6


class TeacherCacheError(RuntimeError):
    """A cache folder is missing, incomplete or was built for other settings."""


def write_meta(cache_dir: str, meta: Dict[str, Any]) -> None:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = os.path.join(cache_dir, META + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(cache_dir, META))


def read_meta(cache_dir: str) -> Dict[str, Any]:
    path = os.path.join(cache_dir, META)
    if not os.path.isfile(path):
        raise TeacherCacheError(f"No teacher cache at {cache_dir} ({META} missing): build it with "
                                "`python -m tools.build_teacher_cache ... --cache-dir DIR` first.")
    with open(path) as f:
        return json.load(f)


def check_meta(meta: Dict[str, Any], expected: Dict[str, Any], cache_dir: str) -> None:
    """Refuse a cache whose settings differ from the run's (teacher, classes, views, scale...)."""
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: cache {a!r} vs run {b!r}" for k, (a, b) in wrong.items())
        raise TeacherCacheError(f"The teacher cache at {cache_dir} was built for other settings ({details}); "
                                "rebuild it or point the run at the matching cache.")


def save_shard(cache_dir: str, epoch: int, rank: int, index: torch.Tensor, rows: torch.Tensor, k: int = 0,
               student_features: Optional[torch.Tensor] = None) -> str:
    """Store the rows (fp16) of views ``index`` of ``epoch`` -- whole, or for logits with ``0 < k < width`` only each
    row's top-``k`` -- and the student's frozen image features of the same views, if given; atomic."""
    if k <= 0 or k >= rows.shape[1]:
        payload = {"index": index.long().cpu(), "values": rows.half().cpu()}
    else:
        values, classes = rows.float().topk(k, dim=1)
        payload = {"index": index.long().cpu(), "values": values.half().cpu(), "classes": classes.int().cpu(),
                   "residual": 1.0 - rows.float().softmax(dim=1).gather(1, classes).sum(dim=1).cpu()}
    if student_features is not None:
        payload["student"] = student_features.half().cpu()
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"epoch_{epoch:03d}.rank{rank:03d}.pt")
    torch.save(payload, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def residual_logits(top_values: torch.Tensor, residual: torch.Tensor, width: int) -> torch.Tensor:
    """The logit f each class outside a row's top-k gets so that together they hold the row's ``residual``
    probability mass (clamped to [MIN_RESIDUAL_MASS, 1 - MIN_RESIDUAL_MASS]), shared uniformly, while the top-k keep
    their relative probabilities: (N-k) e^f / (sum e^v + (N-k) e^f) = r."""
    r = residual.float().clamp(MIN_RESIDUAL_MASS, 1.0 - MIN_RESIDUAL_MASS)
    rest = max(width - top_values.shape[1], 1)
    return torch.log(r / (1 - r)) + top_values.float().logsumexp(dim=1) - math.log(rest)


class TeacherCache:
    """Reads cached rows back as dense (B, width) fp32 rows on the device, one epoch in memory at a time."""

    def __init__(self, cache_dir: str, device: torch.device, expected: Optional[Dict[str, Any]] = None):
        self.cache_dir = cache_dir
        self.meta = read_meta(cache_dir)
        if expected:
            check_meta(self.meta, expected, cache_dir)
        self.device = device
        self.num_images = int(self.meta["num_images"])
        self.kind = str(self.meta.get("kind", "logits"))
        self.width = int(self.meta.get("width", 0))
        if self.width <= 0:
            raise TeacherCacheError(f"{os.path.join(cache_dir, META)} gives no row width: rebuild the cache.")
        self._epoch: Optional[int] = None
        self._rows: Optional[torch.Tensor] = None
        self._student: Optional[torch.Tensor] = None

    def _load_epoch(self, epoch: int) -> None:
        shards = sorted(glob.glob(os.path.join(self.cache_dir, f"epoch_{epoch:03d}.rank*.pt")))
        if not shards:
            raise TeacherCacheError(f"The teacher cache at {self.cache_dir} has no shard for epoch {epoch + 1}; "
                                    f"it was built for {self.meta.get('epochs')} epochs.")
        rows = torch.full((self.num_images, self.width), float("-inf"), dtype=torch.float16)
        seen = torch.zeros(self.num_images, dtype=torch.bool)
        student = None
        for path in shards:
            shard = torch.load(path, map_location="cpu", weights_only=True)
            index = shard["index"]
            if "classes" in shard:
                rows[index] = residual_logits(shard["values"], shard["residual"], self.width).half().unsqueeze(1)
                rows[index.unsqueeze(1), shard["classes"].long()] = shard["values"]
            else:
                rows[index] = shard["values"]
            if "student" in shard:
                if student is None:
                    student = torch.zeros(self.num_images, shard["student"].shape[1], dtype=torch.float16)
                student[index] = shard["student"]
            seen[index] = True
        if not bool(seen.all()):
            missing = int((~seen).sum())
            raise TeacherCacheError(f"Epoch {epoch + 1} of the teacher cache at {self.cache_dir} lacks {missing} "
                                    "images (an interrupted or partial build): rebuild that epoch.")
        self._rows, self._epoch = rows.to(self.device), epoch
        self._student = None if student is None else student.to(self.device)

    def lookup(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """The cached rows (B, width) in fp32 for the views ``index`` of ``epoch`` (logits or teacher features)."""
        if self._epoch != epoch:
            self._load_epoch(epoch)
        return self._rows[index.to(self.device)].float()

    @property
    def has_student_features(self) -> bool:
        return bool(self.meta.get("student_features", False))

    def lookup_student(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """The student's L2-normalised frozen image features (B, E) in fp32 for the same views."""
        if self._epoch != epoch:
            self._load_epoch(epoch)
        if self._student is None:
            raise TeacherCacheError(f"The cache at {self.cache_dir} holds no student image features.")
        return F.normalize(self._student[index.to(self.device)].float(), dim=-1)
