"""Synthesise (or finish) the DFKD synthetic set of a config without training a student.

    python -m tools.synthesize --root $DATA --trainer DFKD_Contrastive \
        --dataset-config-file configs/datasets/pacs.yaml \
        --config-file configs/trainers/DFKD_Contrastive/vit_b32.yaml \
        DATASET.SOURCE_DOMAINS "['photo']" DATASET.TARGET_DOMAINS "['art_painting','cartoon','photo','sketch']"

Same flags and config merge as train.py, so the set lands exactly where the trainer will look for it (the cache
key is built from the same config). The run is resumable: interrupt it and start it again. ``--classnames``
("dog,elephant" or a file with one name per line) skips reading the dataset; the style dictionary is then
filtered against the configured domains only, which can give a different set than the trainer's.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence


def read_classnames(value: str) -> List[str]:
    """Comma-separated names, or a file with one name per line."""
    if os.path.isfile(value):
        with open(value) as f:
            return [line.strip() for line in f if line.strip()]
    return [n.strip() for n in value.split(",") if n.strip()]


def main(argv: Optional[Sequence[str]] = None) -> str:
    sys.modules.setdefault("outdated", None)
    import train

    parser = train.build_parser()
    parser.description = __doc__
    parser.add_argument("--classnames", default="", help="'a,b,c' or a file; default: the dataset's class names")
    args = parser.parse_args(argv)
    train.check_files(args)
    try:
        import dassl  # noqa: F401
    except ImportError:
        sys.exit(train.DASSL_MISSING)
    import torch

    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers and their config keys)
    from trainers.core.domain_eval import benchmark_domains
    from trainers.dfkd import MODES_BY_TRAINER
    from trainers.dfkd_synthesis import ensure_synthetic_set, prompt_classnames

    cfg = train.setup_cfg(args)
    if cfg.TRAINER.NAME not in MODES_BY_TRAINER:
        sys.exit(f"error: --trainer must be one of {sorted(MODES_BY_TRAINER)} (got {cfg.TRAINER.NAME!r})")
    if args.classnames:
        names, dataset = read_classnames(args.classnames), None
    else:
        from dassl.data.datasets import build_dataset

        dataset = build_dataset(cfg)
        names = [dataset.lab2cname[i] for i in range(dataset.num_classes)]
    names = prompt_classnames(names, cfg.TRAINER.DFKD.CLASSNAMES_FILE)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
    path = ensure_synthetic_set(cfg, MODES_BY_TRAINER[cfg.TRAINER.NAME], names, benchmark_domains(cfg, dataset),
                                device)
    print(f"Synthetic set ready: {path}")
    return path


if __name__ == "__main__":
    main()
