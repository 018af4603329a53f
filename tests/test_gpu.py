"""GPU precision check (``pytest -m gpu`` on a CUDA machine; skipped without CUDA): every trainer trains two steps on
one batch in fp16 (half weights, as the reference), amp (fp16 autocast + GradScaler) and bf16 (bf16 weights + bf16
autocast), with its teacher in another precision where it has its own key: the losses are finite and the loss after
the update is below the first (a step whose update amp's GradScaler skipped does not count). Tiny random CLIPs and
synthetic data, as the CPU tests; ``benchmarks/targets.sh cuda`` times the real shapes.
"""
from __future__ import annotations

import math
from typing import List

import pytest
import torch

from tests.precision_runs import TRAINING_TRAINERS, low_precision_dtypes, make_data, record_steps, run_trainer
from trainers.core.precision import weight_dtype

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with `pytest -m gpu`)")]

PRECISIONS = ["fp16", "amp", "bf16"]
#: learning rates at which one step on one batch lowers the loss (PromptKD's KD weight 1000 needs a small one)
LR = {"PromptKD": "0.001"}


def two_steps(trainer, monkeypatch) -> List[float]:
    """Train ``trainer`` (built with --no-train) on its first batch until one update was applied (amp's GradScaler
    skips the update of a step whose scaled gradients overflow, and lowers its scale), then one more step; returns
    the loss before each step (the last one after an update)."""
    with record_steps(monkeypatch) as steps:
        trainer.before_train()  # builds the teacher (and DFKD's synthetic set)
        trainer.epoch = 0
        trainer.before_epoch()
        trainer.set_model_mode("train")
        trainer.num_batches = 10 ** 6  # no LR-scheduler step inside
        batch = next(iter(trainer.train_loader_x))
        for trainer.batch_idx in range(6):
            scale = trainer.scaler.get_scale() if trainer.scaler is not None else None
            trainer.forward_backward(batch)
            if scale is None or trainer.scaler.get_scale() >= scale:  # the update was applied
                break
        trainer.batch_idx += 1
        trainer.forward_backward(batch)
    trainer.close_writer()
    return steps.losses


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed")
    return make_data(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def promptkd_teacher(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("promptkd_teacher") / "run")
    run_trainer("PromptKD_Teacher", "fp32", data, out, cuda=True)
    return out


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("name", TRAINING_TRAINERS)
def test_every_trainer_trains_two_steps_on_cuda(name, prec, data, promptkd_teacher, tmp_path, monkeypatch):
    trainer = run_trainer(name, prec, data, str(tmp_path / "run"), cuda=True, teacher_dir=promptkd_teacher,
                          no_train=True, opts=["OPTIM.LR", LR.get(name, "0.005")])
    assert trainer.device.type == "cuda" and trainer.precision == prec
    assert (trainer.scaler is not None) == (prec == "amp")  # loss scaling for fp16 autocast only
    expected = {torch.float32} if prec == "amp" else {weight_dtype(prec)}
    assert low_precision_dtypes(trainer.model) == expected
    losses = two_steps(trainer, monkeypatch)
    assert 2 <= len(losses) <= 7 and all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses
