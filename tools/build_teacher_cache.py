"""Build the offline teacher cache of a KDPL or PromptKD run: the teacher's output for every training view of every
epoch (KDPL: cosine similarities to the training classes, read at the student's logit scale; PromptKD: the teacher's
image feature, W stored once beside it), plus, for a student with a frozen image tower (KDPL_CoOp / CoCoOp), that
student's features of the same views in the cache's ``student/`` part.

Takes train.py's arguments (same config, dataset, seed and opts as the training run) plus ``--cache-dir``; the
training run then uses ``TRAINER.KDPL.TEACHER_CACHE <dir>`` (or ``TRAINER.PROMPTKD.TEACHER_CACHE``) and never builds
the teacher's image tower. Views are keyed by (seed, epoch, image index), so the cached targets are exactly those an
online run computes for the same views. A KDPL cache's teacher part depends on no student: run the builder with each
KDPL trainer of a table and the teacher runs once; later calls add only epochs the cache lacks (a longer schedule)
and student parts it lacks. Shards across processes, GPUs and nodes with torchrun (each rank takes images
``rank::world_size``); re-running skips finished shards:

    torchrun --nproc_per_node 8 -m tools.build_teacher_cache --root $DATA --seed 1 --trainer KDPL_CoOp \
        --dataset-config-file configs/datasets/imagenet.yaml \
        --config-file configs/trainers/KDPL_CoOp/vit_b32_ctxv1.yaml --cache-dir cache/imagenet_s1 DATASET.NUM_SHOTS 16
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from trainers.core.teacher_cache import (META, TeacherCacheError, check_meta, complete_epochs, read_meta, save_shard,
                                         shard_path, student_part_dir, write_meta)


def cache_node_of(trainer_name: str) -> str:
    """The config node of a trainer's cache keys; a clear error for trainers without an offline cache."""
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import TRAINER_REGISTRY
    from trainers.offline_cache import supports_teacher_cache

    names = sorted(TRAINER_REGISTRY.registered_names())
    supported = [n for n in names if supports_teacher_cache(TRAINER_REGISTRY.get(n))]
    if trainer_name not in supported:
        raise SystemExit(f"--trainer {trainer_name!r} has no offline teacher cache; it exists for: "
                         f"{', '.join(supported)}.")
    return TRAINER_REGISTRY.get(trainer_name).cache_node


def plan_part(folder: str, meta: Dict[str, Any], epochs: int, rank: int, world: int) -> Optional[List[int]]:
    """The epochs this rank still has to write into one part of a cache (``meta`` without coverage keys); None when
    the part already covers ``epochs`` (whatever number of processes built it). A part built for other settings, or
    extended by another number of processes than built it, is refused: shards are never mixed."""
    if os.path.isfile(os.path.join(folder, META)):
        existing = read_meta(folder)
        check_meta(existing, meta, folder)
        if len(complete_epochs(folder, existing)) >= epochs:
            return None
        if int(existing.get("world_size", 1)) != world:
            raise TeacherCacheError(f"The teacher cache at {folder} was built by {existing.get('world_size')} "
                                    f"processes; extend it with as many (this run has {world}).")
    return [e for e in range(epochs) if not os.path.isfile(shard_path(folder, e, rank))]


def main(argv: Optional[List[str]] = None) -> str:
    import train

    parser = train.build_parser()
    parser.add_argument("--cache-dir", required=True, help="folder to write the cache into")
    parser.add_argument("--epochs", type=int, default=0, help="epochs to cache (default: OPTIM.MAX_EPOCH)")
    args = parser.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    node = cache_node_of(args.trainer)
    args.opts = list(args.opts or []) + [f"TRAINER.{node}.VIEW_KEYED_AUG", "True", f"TRAINER.{node}.TEACHER_CACHE", ""]
    args.no_train = True
    args.output_dir = args.output_dir or args.cache_dir  # where train.py writes the merged config.yaml
    trainer = train.run(args, log_to_file=False)

    cache_dir = args.cache_dir
    epochs = args.epochs or trainer.max_epoch
    topk, scale = trainer.cache_topk(), trainer.cache_row_scale()
    # the teacher part, then the student part of a frozen student image tower (KDPL_CoOp / CoCoOp)
    parts = {"teacher": (cache_dir, {**trainer.cache_meta(), "topk": topk})}
    if topk > 0:
        parts["teacher"][1]["residual_scale"] = round(scale, 4)
    student_meta = trainer.student_cache_meta()
    if student_meta is not None:
        parts["student"] = (student_part_dir(cache_dir, student_meta), student_meta)
    todo = {name: plan_part(folder, meta, epochs, rank, world) for name, (folder, meta) in parts.items()}
    for name, (folder, _) in parts.items():
        if todo[name] is None:
            print(f"The {name} part of the teacher cache at {folder} covers {epochs} epochs; nothing to do")
    todo = {name: epochs_left for name, epochs_left in todo.items() if epochs_left}
    if not todo:
        return cache_dir
    teacher = trainer.build_online_teacher().to(trainer.device) if "teacher" in todo else None
    dataset = trainer.train_loader_x.dataset

    def write_part_meta(name: str) -> None:
        """Never lowers the epoch count (another builder of a longer schedule may write the same cache)."""
        folder, meta = parts[name]
        old = int(read_meta(folder)["epochs"]) if os.path.isfile(os.path.join(folder, META)) else 0
        write_meta(folder, {"num_images": len(dataset), **meta, "epochs": max(epochs, old), "world_size": world})

    if rank == 0:
        if teacher is not None:
            trainer.write_cache_files(cache_dir, teacher)
        for name in todo:
            write_part_meta(name)
    indices = list(range(rank, len(dataset), world))
    cfg = trainer.cfg
    for epoch in range(epochs):
        names = [name for name, epochs_left in todo.items() if epoch in epochs_left]
        if not names:
            print(f"epoch {epoch + 1}: shards exist, skipped")
            continue
        dataset.epoch = epoch
        loader = DataLoader(Subset(dataset, indices), batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                            num_workers=cfg.DATALOADER.NUM_WORKERS, shuffle=False)
        index: List[torch.Tensor] = []
        rows: Dict[str, List[torch.Tensor]] = {name: [] for name in names}
        for batch in tqdm(loader, desc=f"teacher cache epoch {epoch + 1}/{epochs} rank {rank}", disable=rank > 0):
            images = batch["img"].to(trainer.device)
            index.append(batch["index"])
            if "teacher" in rows:
                rows["teacher"].append(trainer.cache_rows(teacher, images).cpu())
            if "student" in rows:
                rows["student"].append(trainer.student_cache_rows(images).cpu())
        for name, values in rows.items():
            folder = parts[name][0]
            path = save_shard(folder, epoch, rank, torch.cat(index), torch.cat(values),
                              topk if name == "teacher" else 0, scale)
            print(f"epoch {epoch + 1}: {len(indices)} views of the {name} part cached in {path}")
    if rank == 0:  # again: a builder of a shorter schedule running at the same time may have written its count
        for name in todo:
            write_part_meta(name)
    return cache_dir


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
