"""Helpers for in-process Dassl runs through train.py (one pytest process: Dassl's import is slow)."""
from __future__ import annotations

import os
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = os.path.join(ROOT, "configs", "trainers", "KDPL_CoOp", "tiny_vit_ep2_cpu.yaml")


def run_train_py(data: str, out: str, trainer: str, dataset: str = "eurosat", config: str = TINY_CFG,
                 opts: Optional[List[str]] = None, eval_only: bool = False, model_dir: str = "",
                 load_epoch: Optional[int] = None, seed: int = 1):
    """Run train.py's pipeline in-process (without the stdout tee) and return the trainer."""
    import train

    argv = ["--root", data, "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", f"{dataset}.yaml"),
            "--config-file", config, "--output-dir", out]
    if eval_only:
        argv += ["--eval-only", "--model-dir", model_dir]
        if load_epoch is not None:
            argv += ["--load-epoch", str(load_epoch)]
    argv += list(opts or [])
    return train.run(train.build_parser().parse_args(argv), log_to_file=False)


def interrupt_at_epoch(monkeypatch, trainer_cls, epoch: int = 1):
    """Make ``trainer_cls`` raise KeyboardInterrupt when training reaches ``epoch`` (0-based), as a killed job would;
    returns the original ``forward_backward`` so a test can restore it."""
    original = trainer_cls.forward_backward

    def interrupted(self, batch):
        if self.epoch == epoch:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(trainer_cls, "forward_backward", interrupted)
    return original


class LabelGuardBatch(dict):
    """A batch whose label must not be read (distillation is label-free)."""

    def __getitem__(self, key):
        if key == "label":
            raise AssertionError("the label was read")
        return super().__getitem__(key)


def first_batch_losses(trainers, epoch: int, eval_mode: bool = False):
    """Each trainer's loss on the first 8 views of ``epoch`` (keyed views: the same images for every trainer), without
    gradients; returns (losses, the last trainer's parsed batch)."""
    import torch

    losses, parsed = [], None
    for trainer in trainers:
        trainer.epoch = epoch
        trainer.before_epoch()
        if eval_mode:  # e.g. PromptKD's projector BatchNorm: the same statistics in every trainer
            trainer.set_model_mode("eval")
        batch = next(iter(torch.utils.data.DataLoader(trainer.train_loader_x.dataset, batch_size=8)))
        parsed = trainer.parse_batch_train(batch)
        with torch.no_grad():
            losses.append(trainer.compute_loss(parsed)[0])
    return losses, parsed


def run_killed(epoch: int, batch: int, timeout: int = 300, **run_kwargs):
    """Run :func:`run_train_py` (``run_kwargs``) in a fresh process that SIGKILLs itself just before step ``batch`` of
    ``epoch`` (both 0-based) trains, as the OOM killer or a preempting scheduler would: no exception, no cleanup.
    Test-only (the hook is installed in that process alone); returns the finished ``subprocess.CompletedProcess``."""
    import json
    import subprocess
    import sys

    code = "import json, sys; from tests.dassl_runs import _killed_run; _killed_run(json.loads(sys.argv[1]))"
    spec = json.dumps({"epoch": epoch, "batch": batch, "run": run_kwargs})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, spec], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _killed_run(spec: dict) -> None:
    """The child of :func:`run_killed`."""
    import signal
    import sys

    sys.modules.setdefault("outdated", None)  # as train.main: no registry-probing thread
    import torch

    from trainers.base import PromptDistillTrainer

    torch.set_num_threads(1)  # as the single_thread fixture: the same float reductions as the in-process runs
    original = PromptDistillTrainer.forward_backward

    def forward_backward(self, batch):
        if self.epoch == spec["epoch"] and self.batch_idx == spec["batch"]:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, batch)

    PromptDistillTrainer.forward_backward = forward_backward
    run_train_py(**spec["run"])
