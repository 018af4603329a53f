"""CoOp-compatible entry point: the same flags, config merge order and output layout as CoOp/CoCoOp/MaPLe/PromptSRC.

    python train.py --root $DATA --seed 1 --trainer KDPL_CoOp \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/KDPL_CoOp/vit_b32_ctxv1.yaml \
        --output-dir output/... DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

DASSL_MISSING = (
    "Dassl.pytorch is not installed. It is not on the package registry; install it from source (v0.6.3):\n"
    "  git clone https://github.com/KaiyangZhou/Dassl.pytorch && cd Dassl.pytorch && git checkout c61a1b5\n"
    "  pip install -r requirements.txt && pip install --no-build-isolation -e .\n"
    "(see README.md, 'Install')."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=str, default="", help="path to the datasets ($DATA)")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from")
    p.add_argument("--seed", type=int, default=-1, help="seed; any value >= 0 (0 included) fixes it")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="trainer config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    p.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line")
    return p


def reset_cfg(cfg, args) -> None:
    """Argparse values override the yaml files (CoOp's order)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed >= 0:  # CoOp's `if args.seed:` silently ignores seed 0
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def check_files(args) -> None:
    for flag, path in (("--config-file", args.config_file), ("--dataset-config-file", args.dataset_config_file)):
        if path and not os.path.isfile(path):
            sys.exit(f"error: {flag} {path} does not exist")


def check_trainer_name(name: str, available) -> None:
    """Refuse an unknown trainer with the closest registered name, ignoring case (Dassl's own suggestion is
    case-sensitive: it answers ``KDPL_Coop`` with ``KDPL_CoCoOp``)."""
    import difflib

    available = sorted(available)
    if name in available:
        return
    by_lower = {n.lower(): n for n in available}
    if name.lower() in by_lower:
        hint = f"did you mean {by_lower[name.lower()]!r}? Trainer names are case-sensitive"
    else:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else "no close match"
    sys.exit(f"error: unknown trainer {name!r} ({hint}). Registered trainers: {', '.join(available)}")


def setup_cfg(args):
    from dassl.config import get_cfg_default

    from datasets.config import add_dataset_config
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    add_dataset_config(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


def run(args, log_to_file: bool = True):
    """Build the trainer for parsed ``args`` and train or evaluate; returns the trainer (tests use it in-process)."""
    import torch
    from dassl.engine import TRAINER_REGISTRY, build_trainer
    from dassl.utils import collect_env_info, set_random_seed, setup_logger

    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers and their config keys)

    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if log_to_file:
        setup_logger(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print("*** Config ***")
    print(cfg)
    if log_to_file:
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info()}\n")
    os.makedirs(cfg.OUTPUT_DIR or ".", exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR or ".", "config.yaml"), "w") as f:
        f.write(cfg.dump())

    check_trainer_name(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    trainer = build_trainer(cfg)
    trainer.config_name = os.path.splitext(os.path.basename(args.config_file))[0] if args.config_file else None
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    elif not args.no_train:
        trainer.train()
    return trainer


def record_failure(exc: BaseException) -> None:
    """Write the traceback of the exception that stops a run into its log.txt. Dassl's logger tees stdout only, so
    without this the log ends without saying why the run stopped; the console still gets Python's own report."""
    log = getattr(sys.stdout, "file", None)  # dassl.utils.Logger, once setup_logger ran
    if log is None or log.closed or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return
    log.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    log.flush()


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_files(args)
    sys.modules.setdefault("outdated", None)
    try:
        import dassl  # noqa: F401
    except ImportError:
        sys.exit(DASSL_MISSING)
    try:
        run(args)
    except BaseException as exc:
        record_failure(exc)
        raise


if __name__ == "__main__":
    main()
