"""Build the offline teacher cache of a KDPL or PromptKD run: the teacher's output for every training view of every
epoch (KDPL: logits over the training classes; PromptKD: the teacher's image feature, W stored once beside it).

Takes train.py's arguments (same config, dataset, seed and opts as the training run) plus ``--cache-dir``; the
training run then uses ``TRAINER.KDPL.TEACHER_CACHE <dir>`` (or ``TRAINER.PROMPTKD.TEACHER_CACHE``) and never builds
the teacher's image tower. Views are keyed by (seed, epoch, image index), so the cached targets are exactly those an
online run computes for the same views. Shards across processes, GPUs and nodes with torchrun (each rank takes images
``rank::world_size``); re-running skips finished shards:

    torchrun --nproc_per_node 8 -m tools.build_teacher_cache --root $DATA --seed 1 --trainer KDPL_CoOp \
        --dataset-config-file configs/datasets/imagenet.yaml --config-file configs/trainers/KDPL_CoOp/vit_b32_ctxv1.yaml \
        --cache-dir cache/imagenet_s1 DATASET.NUM_SHOTS 16
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm


def cache_node_of(trainer_name: str) -> str:
    """The config node of a trainer's cache keys; a clear error for trainers without an offline cache."""
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import TRAINER_REGISTRY
    from trainers.cache_mixin import OfflineTeacherCacheMixin

    names = sorted(TRAINER_REGISTRY.registered_names())
    supported = [n for n in names if issubclass(TRAINER_REGISTRY.get(n), OfflineTeacherCacheMixin)]
    if trainer_name not in supported:
        raise SystemExit(f"--trainer {trainer_name!r} has no offline teacher cache; it exists for: "
                         f"{', '.join(supported)}.")
    return TRAINER_REGISTRY.get(trainer_name).cache_node


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
    from trainers.core.teacher_cache import META, check_meta, read_meta, save_shard, write_meta

    cache_dir = args.cache_dir
    epochs = args.epochs or trainer.max_epoch
    topk = trainer.cache_topk()
    meta = {**trainer.cache_meta(), "epochs": epochs, "topk": topk, "world_size": world}
    resuming = os.path.isfile(os.path.join(cache_dir, META))
    if resuming:  # never mix shards of different settings
        check_meta(read_meta(cache_dir), meta, cache_dir)
    shards = [os.path.join(cache_dir, f"epoch_{epoch:03d}.rank{rank:03d}.pt") for epoch in range(epochs)]
    todo = [epoch for epoch in range(epochs) if not os.path.isfile(shards[epoch])]
    if resuming and not todo:
        print(f"The teacher cache at {cache_dir} is complete for rank {rank} ({epochs} epochs); nothing to do")
        return cache_dir
    teacher = trainer.build_online_teacher().to(trainer.device)
    if rank == 0:
        trainer.write_cache_files(cache_dir, teacher)
        write_meta(cache_dir, meta)
    dataset = trainer.train_loader_x.dataset
    indices = list(range(rank, len(dataset), world))
    cfg = trainer.cfg
    for epoch in range(epochs):
        shard = shards[epoch]
        if epoch not in todo:
            print(f"epoch {epoch + 1}: shard exists ({shard}), skipped")
            continue
        dataset.epoch = epoch
        loader = DataLoader(Subset(dataset, indices), batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                            num_workers=cfg.DATALOADER.NUM_WORKERS, shuffle=False)
        index, rows, student = [], [], []
        for batch in tqdm(loader, desc=f"teacher cache epoch {epoch + 1}/{epochs} rank {rank}", disable=rank > 0):
            images = batch["img"].to(trainer.device)
            values, features = trainer.cache_rows(teacher, images)
            index.append(batch["index"])
            rows.append(values.cpu())
            if features is not None:
                student.append(features.cpu())
        save_shard(cache_dir, epoch, rank, torch.cat(index), torch.cat(rows), topk,
                   torch.cat(student) if student else None)
        print(f"epoch {epoch + 1}: {len(indices)} views cached in {shard}")
    return cache_dir


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
