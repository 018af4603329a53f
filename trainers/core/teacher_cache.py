"""An offline cache of teacher outputs, one row per (epoch, image index) view, written in shards.

Layout of a cache folder (``LAYOUT`` 2)::

    meta.json                      what the teacher rows depend on (views, teacher, classes); checked on use
    epoch_{E:03d}.rank{R:03d}.pt   {"index": int64 [M], "values": fp16 [M, k], "classes": int32 [M, k] and
                                    "residual": fp32 [M] for top-k rows}
    student/<student key>/         optional: a frozen student image tower's features of the same views, in shards of
                                   the same form (``values`` = features), with its own meta.json

``meta["kind"]`` says what a row is: ``logits`` (KDPL: the teacher's cosine similarities to the training classes;
the reader multiplies them by the student's logit scale, so the rows serve every student) or ``teacher_features``
(PromptKD: the teacher's L2-normalised image feature; its logits are ``scale * u @ W.T`` with the class vectors W
stored once beside the shards, so a row costs E values instead of N). ``meta["width"]`` is a row's length. Nothing in
the teacher part depends on the student: every ``KDPL_<Base>`` trainer, and reruns with other student settings, read
the same cache. The student part (CoOp, CoCoOp: a cached step then runs neither image tower) sits in a sub-folder
named after the student backbone and precision plus a hash of its meta (:func:`student_part_dir`), so several
students' features live side by side.

A logits row with ``k`` equal to the number of classes is stored whole (exact up to fp16); with a smaller ``k`` only
each view's top-k values and the probability mass of the other classes at the reader's scale (``residual_scale`` in
the meta) are kept (FKD's soft labels): read back, the top-k classes keep their probabilities and the other classes
share the remaining mass uniformly, so no probability is 0 and both directions of KDPL's symmetric KL stay finite.
Several processes (``torchrun``, several nodes) write disjoint shards of the same epoch; the reader merges them.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
from typing import Any, Dict, List, Optional

import torch

from .checkpoints import atomic_torch_save, atomic_write_text

META = "meta.json"
#: version of the folder layout above; a cache of another layout is refused with "rebuild it"
LAYOUT = 2
#: sub-folder of a cache holding the student parts
STUDENT_DIR = "student"
#: meta keys that say how much of a cache exists, not what its rows depend on
COVERAGE_KEYS = ("epochs", "world_size")
#: smallest probability mass left to the classes outside a view's top-k (keeps their logits finite)
MIN_RESIDUAL_MASS = 1e-6


class TeacherCacheError(RuntimeError):
    """A cache folder is missing, incomplete or was built for other settings."""


def write_meta(cache_dir: str, meta: Dict[str, Any]) -> None:
    """Write ``meta`` (stamped with ``LAYOUT``) atomically (a temporary file per process: builders may run at once)."""
    atomic_write_text(os.path.join(cache_dir, META), json.dumps({**meta, "layout": LAYOUT}, indent=2, sort_keys=True))


def read_meta(cache_dir: str) -> Dict[str, Any]:
    """A cache folder's meta; a missing folder or one of an older layout is an error that says what to do."""
    path = os.path.join(cache_dir, META)
    if not os.path.isfile(path):
        raise TeacherCacheError(f"No teacher cache at {cache_dir} ({META} missing): build it with "
                                "`python -m tools.build_teacher_cache ... --cache-dir DIR` first.")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("layout", 1) != LAYOUT:
        raise TeacherCacheError(f"The teacher cache at {cache_dir} has layout {meta.get('layout', 1)}, written by an "
                                f"older version (this one reads layout {LAYOUT}: teacher rows that do not depend on "
                                f"the student, student features in {STUDENT_DIR}/): delete it and rebuild it with "
                                "`python -m tools.build_teacher_cache`.")
    return meta


def check_meta(meta: Dict[str, Any], expected: Dict[str, Any], cache_dir: str) -> None:
    """Refuse a cache whose settings differ from the run's (teacher, classes, views...)."""
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: cache {a!r} vs run {b!r}" for k, (a, b) in wrong.items())
        raise TeacherCacheError(f"The teacher cache at {cache_dir} was built for other settings ({details}); "
                                "rebuild it or point the run at the matching cache.")


def shard_path(cache_dir: str, epoch: int, rank: int) -> str:
    return os.path.join(cache_dir, f"epoch_{epoch:03d}.rank{rank:03d}.pt")


def complete_epochs(cache_dir: str, meta: Dict[str, Any]) -> List[int]:
    """Epochs (of ``meta["epochs"]``) whose shards of every rank that built them exist."""
    ranks = range(int(meta.get("world_size", 1)))
    return [e for e in range(int(meta.get("epochs", 0)))
            if all(os.path.isfile(shard_path(cache_dir, e, r)) for r in ranks)]


def student_part_dir(cache_dir: str, student_meta: Dict[str, Any]) -> str:
    """The folder of a student part: ``student/<backbone>.<precision>.<hash of its meta>`` (one per student whose
    features differ; the same student, whatever its prompts or optimiser, always finds the same folder)."""
    name = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(student_meta.get("student", "student"))).strip("-")
    digest = hashlib.sha256(json.dumps(student_meta, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(cache_dir, STUDENT_DIR, f"{name}.{student_meta.get('student_prec', '')}.{digest}")


def save_shard(cache_dir: str, epoch: int, rank: int, index: torch.Tensor, rows: torch.Tensor, k: int = 0,
               scale: float = 1.0) -> str:
    """Store the rows (fp16) of views ``index`` of ``epoch`` -- whole, or for logits with ``0 < k < width`` only each
    row's top-``k`` and the probability mass of the others at logits ``scale * rows`` --; atomic."""
    if k <= 0 or k >= rows.shape[1]:
        payload = {"index": index.long().cpu(), "values": rows.half().cpu()}
    else:
        values, classes = rows.float().topk(k, dim=1)
        kept = (scale * rows.float()).softmax(dim=1).gather(1, classes).sum(dim=1)
        payload = {"index": index.long().cpu(), "values": values.half().cpu(), "classes": classes.int().cpu(),
                   "residual": (1.0 - kept).cpu()}
    return atomic_torch_save(payload, shard_path(cache_dir, epoch, rank))


def residual_logits(top_values: torch.Tensor, residual: torch.Tensor, width: int) -> torch.Tensor:
    """The logit f each class outside a row's top-k gets so that together they hold the row's ``residual``
    probability mass (clamped to [MIN_RESIDUAL_MASS, 1 - MIN_RESIDUAL_MASS]), shared uniformly, while the top-k keep
    their relative probabilities: (N-k) e^f / (sum e^v + (N-k) e^f) = r."""
    r = residual.float().clamp(MIN_RESIDUAL_MASS, 1.0 - MIN_RESIDUAL_MASS)
    rest = max(width - top_values.shape[1], 1)
    return torch.log(r / (1 - r)) + top_values.float().logsumexp(dim=1) - math.log(rest)


class TeacherCache:
    """Reads one part of a cache (the teacher rows, or a student part) back as dense (B, width) fp32 rows multiplied
    by ``scale``, on the device, one epoch in memory at a time."""

    def __init__(self, cache_dir: str, device: torch.device, expected: Optional[Dict[str, Any]] = None,
                 scale: float = 1.0):
        self.cache_dir = cache_dir
        self.meta = read_meta(cache_dir)
        if expected:
            check_meta(self.meta, expected, cache_dir)
        self.device = device
        self.scale = float(scale)
        self.num_images = int(self.meta["num_images"])
        self.kind = str(self.meta.get("kind", "logits"))
        self.width = int(self.meta.get("width", 0))
        self.epochs = int(self.meta.get("epochs", 0))
        self.topk = int(self.meta.get("topk", 0))
        if self.width <= 0:
            raise TeacherCacheError(f"{os.path.join(cache_dir, META)} gives no row width: rebuild the cache.")
        built = float(self.meta.get("residual_scale", 1.0))
        if 0 < self.topk < self.width and not math.isclose(built, self.scale, rel_tol=1e-3):
            raise TeacherCacheError(
                f"The teacher cache at {cache_dir} keeps the top-{self.topk} logits per view and the others' "
                f"probability mass at logit scale {built:g}, but this run reads it at scale {self.scale:g} (another "
                "student's logit scale): build a cache with this student, or one with whole rows (CACHE_TOPK 0).")
        self._epoch: Optional[int] = None
        self._rows: Optional[torch.Tensor] = None

    def _load_epoch(self, epoch: int) -> None:
        shards = sorted(glob.glob(os.path.join(self.cache_dir, f"epoch_{epoch:03d}.rank*.pt")))
        if not shards:
            raise TeacherCacheError(f"The teacher cache at {self.cache_dir} has no shard for epoch {epoch + 1}; "
                                    f"it was built for {self.epochs} epochs.")
        rows: Optional[torch.Tensor] = None
        seen = torch.zeros(self.num_images, dtype=torch.bool)
        for path in shards:
            shard = torch.load(path, map_location="cpu", weights_only=True)
            index, values = shard["index"], shard["values"]
            if rows is None:
                rows = torch.full((self.num_images, self.width), float("-inf"), dtype=torch.float16)
            if "classes" in shard:  # stored unscaled: the rest's logit at this scale, divided by it
                rest = residual_logits(self.scale * values.float(), shard["residual"], self.width) / self.scale
                rows[index] = rest.half().unsqueeze(1)
                rows[index.unsqueeze(1), shard["classes"].long()] = values
            else:
                rows[index] = values
            seen[index] = True
        if not bool(seen.all()):
            missing = int((~seen).sum())
            raise TeacherCacheError(f"Epoch {epoch + 1} of the teacher cache at {self.cache_dir} lacks {missing} "
                                    "images (an interrupted or partial build): rebuild that epoch.")
        self._rows, self._epoch = rows.to(self.device), epoch

    def lookup(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """The cached rows (B, width) in fp32, times ``scale``, for the views ``index`` of ``epoch``."""
        if self._epoch != epoch:
            self._load_epoch(epoch)
        rows = self._rows[index.to(self.device)].float()
        return rows if self.scale == 1.0 else rows * self.scale
