"""Shared by tests/test_precision.py (CPU: bf16, amp) and tests/test_gpu.py (CUDA: fp16, amp, bf16): one in-process
run of any trainer of this package in a chosen precision on tiny random CLIPs and synthetic data, and a record of what
happened inside its training steps (losses, autocast, output dtypes, the teacher's logits)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set

import torch
from torch import nn

from tests.dassl_runs import ROOT, TINY_CFG

KDPL_TRAINERS = ["KDPL_CoOp", "KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe", "KDPL_PromptSRC"]
DFKD_TRAINERS = ["DFKD_Handcrafted", "DFKD_Mix", "DFKD_Random", "DFKD_Contrastive"]
#: every trainer that trains, in an order that can run PromptKD after its teacher fixture
TRAINING_TRAINERS = KDPL_TRAINERS + ["PromptKD_Teacher", "PromptKD"] + DFKD_TRAINERS
PROMPTKD_TEACHER_CFG = os.path.join(ROOT, "configs", "trainers", "PromptKD_Teacher", "tiny_vit_wide_ep2_cpu.yaml")
PROMPTKD_CFG = os.path.join(ROOT, "configs", "trainers", "PromptKD", "tiny_vit_ep2_cpu.yaml")
PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
#: the other precision the teacher runs in, beside a student in each precision (never the student's own)
OTHER_TEACHER_PREC = {"fp32": "bf16", "fp16": "fp32", "bf16": "fp32", "amp": "bf16"}


def make_data(root: str) -> Dict[str, str]:
    """A tiny EuroSAT tree (4 classes: 2 base, 2 new) and a tiny PACS tree (2 classes), 32 px."""
    from datasets.synthetic import make_synthetic_dataset

    eurosat, pacs = os.path.join(root, "eurosat"), os.path.join(root, "pacs")
    make_synthetic_dataset(eurosat, "eurosat", num_classes=4, per_class=4, size=32, seed=0)
    make_synthetic_dataset(pacs, "pacs", num_classes=2, per_class=2, size=32, seed=0)
    return {"eurosat": eurosat, "pacs": pacs}


def precision_node(name: str) -> str:
    """The config node whose PREC key sets a trainer's student precision."""
    from dassl.engine import TRAINER_REGISTRY

    import trainers  # noqa: F401  (registers the trainers)

    return TRAINER_REGISTRY.get(name).precision_node


def run_trainer(name: str, prec: str, data: Dict[str, str], out: str, cuda: bool = False, teacher_dir: str = "",
                opts: Optional[List[str]] = None, no_train: bool = False, eval_only: bool = False):
    """train.py's pipeline in-process for ``name`` with its student in ``prec`` (and the teacher, where it has its own
    key, in :data:`OTHER_TEACHER_PREC`), one epoch, no LR warm-up; returns the trainer."""
    import train

    node = precision_node(name)
    extra = [f"TRAINER.{node}.PREC", prec, "USE_CUDA", str(cuda), "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"]
    if name.startswith("KDPL_"):
        config, dataset, root = TINY_CFG, "eurosat", data["eurosat"]
        extra += ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", "0.05",
                  "TRAINER.KDPL.TEACHER_PREC", OTHER_TEACHER_PREC[prec]]
    elif name == "PromptKD_Teacher":
        config, dataset, root = PROMPTKD_TEACHER_CFG, "eurosat", data["eurosat"]
        extra += ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", "0.05"]
    elif name == "PromptKD":  # its teacher runs in the student's PREC (the reference's one key)
        config, dataset, root = PROMPTKD_CFG, "eurosat", data["eurosat"]
        extra += ["DATASET.NUM_SHOTS", "0", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", "0.05",
                  "TRAINER.PROMPTKD.TEACHER_CKPT", teacher_dir]
    elif name.startswith("DFKD_"):
        config = os.path.join(ROOT, "configs", "trainers", name, "tiny_cpu.yaml")
        dataset, root = "pacs", data["pacs"]
        extra += ["DATASET.SOURCE_DOMAINS", "['photo']", "DATASET.TARGET_DOMAINS", str(PACS_DOMAINS),
                  "TRAINER.DFKD.SYN_CACHE_DIR", os.path.join(os.path.dirname(out), "dfkd_synthetic"),
                  "TRAINER.DFKD.TEACHER_PREC", OTHER_TEACHER_PREC[prec],
                  "TRAINER.DFKD.SYN_PRECISION", "fp32" if prec == "fp32" else "bf16"]
    elif name == "ZeroshotCLIP_KD":
        config, dataset, root = TINY_CFG, "eurosat", data["eurosat"]
        extra += ["DATASET.NUM_SHOTS", "0", "DATASET.SUBSAMPLE_CLASSES", "new"]
    else:
        raise KeyError(f"no tiny setup for trainer {name!r}")
    argv = ["--root", root, "--seed", "1", "--trainer", name,
            "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", f"{dataset}.yaml"),
            "--config-file", config, "--output-dir", out]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--no-train"] if no_train else []
    return train.run(train.build_parser().parse_args(argv + extra + list(opts or [])), log_to_file=False)


def low_precision_dtypes(model: nn.Module) -> Set[torch.dtype]:
    """dtypes of a model's parameters outside normalisation layers (which stay fp32 in every precision)."""
    from trainers.core.precision import _NORMS

    return {p.dtype for m in model.modules() if not isinstance(m, _NORMS) for p in m.parameters(recurse=False)}


def learnable_params(trainer) -> Dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in trainer.learnable().named_parameters()}


@dataclass
class StepRecord:
    """What the training steps of a run did."""

    losses: List[float] = field(default_factory=list)
    loss_dtypes: Set[torch.dtype] = field(default_factory=set)
    autocast: Set[Any] = field(default_factory=set)  # (enabled, dtype) seen inside compute_loss
    student_outputs: Set[torch.dtype] = field(default_factory=set)  # of the student's Linear / Conv2d layers
    teacher_logits: Set[torch.dtype] = field(default_factory=set)
    initial: Optional[Dict[str, torch.Tensor]] = None


@contextlib.contextmanager
def record_steps(monkeypatch) -> Iterator[StepRecord]:
    """Record every training step of the runs made inside the block (see :class:`StepRecord`)."""
    from trainers.base import PromptDistillTrainer
    from trainers.core.teacher import FrozenTeacher

    record = StepRecord()
    step, logits = PromptDistillTrainer.forward_backward, FrozenTeacher.logits
    active = []

    def forward_backward(self, batch):
        if record.initial is None:
            record.initial = learnable_params(self)
            for module in self.model.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    module.register_forward_hook(
                        lambda m, i, out: record.student_outputs.add(out.dtype) if active else None)
            compute_loss = self.compute_loss

            def recorded_loss(batch):
                device = self.device.type
                record.autocast.add((torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)))
                loss, terms = compute_loss(batch)
                record.losses.append(float(loss))
                record.loss_dtypes.add(loss.dtype)
                return loss, terms

            self.compute_loss = recorded_loss
        active.append(True)
        try:
            return step(self, batch)
        finally:
            active.pop()

    def teacher_logits(self, *args, **kwargs):
        out = logits(self, *args, **kwargs)
        record.teacher_logits.add(out.dtype)
        return out

    monkeypatch.setattr(PromptDistillTrainer, "forward_backward", forward_backward)
    monkeypatch.setattr(FrozenTeacher, "logits", teacher_logits)
    yield record
