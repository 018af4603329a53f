"""Build the offline teacher cache for a KDPL run: the teacher's logits for every training view of every epoch.

Takes train.py's arguments (same config, dataset, seed and opts as the training run) plus ``--cache-dir``; the
training run then uses ``TRAINER.KDPL.TEACHER_CACHE <dir>`` and never builds the teacher. Views are keyed by
(seed, epoch, image index), so the cached targets are exactly those an online run computes for the same views.
Shards across processes, GPUs and nodes with torchrun (each rank takes images ``rank::world_size``); re-running
skips finished shards:

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


def main(argv: Optional[List[str]] = None) -> str:
    import train

    parser = train.build_parser()
    parser.add_argument("--cache-dir", required=True, help="folder to write the cache into")
    parser.add_argument("--epochs", type=int, default=0, help="epochs to cache (default: OPTIM.MAX_EPOCH)")
    args = parser.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    args.opts = list(args.opts or []) + ["TRAINER.KDPL.VIEW_KEYED_AUG", "True", "TRAINER.KDPL.TEACHER_CACHE", ""]
    args.no_train = True
    args.output_dir = args.output_dir or args.cache_dir  # where train.py writes the merged config.yaml
    trainer = train.run(args, log_to_file=False)
    from trainers.core.teacher_cache import save_shard, write_meta

    cache_dir = args.cache_dir
    meta = trainer.cache_meta()
    epochs = args.epochs or trainer.max_epoch
    topk = int(trainer.kdpl.CACHE_TOPK) or meta["num_classes"]
    # a frozen student image tower (CoOp, CoCoOp) is cached too: a cached step then runs no image tower at all
    student_features = not trainer.model.prompt_learner.has_vision_prompts
    if rank == 0:
        write_meta(cache_dir, {**meta, "epochs": epochs, "topk": topk, "world_size": world,
                               "student_features": student_features})
    trainer.model.register_class_set("train", trainer.training_classnames())
    teacher = trainer.build_online_teacher().to(trainer.device)
    dataset = trainer.train_loader_x.dataset
    indices = list(range(rank, len(dataset), world))
    cfg = trainer.cfg
    for epoch in range(epochs):
        shard = os.path.join(cache_dir, f"epoch_{epoch:03d}.rank{rank:03d}.pt")
        if os.path.isfile(shard):
            print(f"epoch {epoch + 1}: shard exists ({shard}), skipped")
            continue
        dataset.epoch = epoch
        loader = DataLoader(Subset(dataset, indices), batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                            num_workers=cfg.DATALOADER.NUM_WORKERS, shuffle=False)
        index, logits, student = [], [], []
        for batch in tqdm(loader, desc=f"teacher cache epoch {epoch + 1}/{epochs} rank {rank}", disable=rank > 0):
            images = batch["img"].to(trainer.device)
            index.append(batch["index"])
            logits.append(teacher.logits(images, trainer.model.logit_scale).cpu())
            if student_features:
                with torch.no_grad():
                    student.append(trainer.model.encode_image(images).cpu())
        save_shard(cache_dir, epoch, rank, torch.cat(index), torch.cat(logits), topk,
                   torch.cat(student) if student_features else None)
        print(f"epoch {epoch + 1}: {len(indices)} views cached in {shard}")
    return cache_dir


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
