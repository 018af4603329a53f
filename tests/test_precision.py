"""Precision on CPU: bf16 weights and amp (bf16 autocast) run for real, through every trainer; fp16 falls back to fp32.

Each trainer trains one short epoch in bf16 and in amp on tiny random CLIPs: finite losses computed in fp32, learnable
parameters that changed, bf16 student weights (bf16) or an active bf16 autocast over fp32 weights (amp), a teacher in
another precision than the student whose logits stay fp32, and a bf16 student reading fp16 rows of a teacher cache.
"""
from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from torch import nn

from tests.precision_runs import TRAINING_TRAINERS, learnable_params, low_precision_dtypes, make_data, record_steps, \
    run_trainer
from trainers.core import precision
from trainers.core.precision import (autocast, cast_to_precision, compute_dtype, full_precision, needs_grad_scaler,
                                     resolve_precision)

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------- the rules
def test_resolve_precision_on_cpu(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bf16, amp and fp32 resolve without a warning
        assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "amp", "BF16")] == ["fp32", "bf16", "amp", "bf16"]
    with pytest.warns(UserWarning, match="teacher: fp16 is not used on CPU .*slow or missing.*using fp32"):
        assert resolve_precision("fp16", CPU, "teacher") == "fp32"
    with pytest.raises(ValueError, match="Unknown precision 'fp8' for the student"):
        resolve_precision("fp8", CPU, "student")
    # the probe runs once per device and precision and draws no random number (a seeded run stays the same run)
    precision._unsupported.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("amp", CPU) == "amp"
    assert torch.equal(torch.rand(3), expected)
    # where the tiny probe fails (a torch build without bf16 CPU kernels), the fallback names the reason
    monkeypatch.setattr(precision, "_unsupported", lambda device, prec: "no bf16 kernel for conv2d")
    with pytest.warns(UserWarning, match="precision bf16 does not run on cpu .*no bf16 kernel for conv2d.*fp32"):
        assert resolve_precision("bf16", CPU) == "fp32"


def test_autocast_and_scaler_rules():
    a, b = torch.randn(3, 4), torch.randn(4, 2)
    for prec in ("amp", "bf16"):
        with autocast(CPU, prec):
            assert (a @ b).dtype == torch.bfloat16
            with autocast(CPU, "fp32"):  # an fp32 module inside a mixed-precision step keeps fp32
                assert (a @ b).dtype == torch.float32
            with full_precision(CPU):
                assert (a @ b).dtype == torch.float32
    with autocast(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32
    cuda = torch.device("cuda")  # the rules only; nothing runs on it
    assert compute_dtype(CPU, "amp") == torch.bfloat16 and compute_dtype(cuda, "amp") == torch.float16
    assert compute_dtype(CPU, "fp32") == torch.float32 and compute_dtype(cuda, "fp16") == torch.float16
    assert needs_grad_scaler(cuda, "amp")
    assert not any(needs_grad_scaler(CPU, p) for p in precision.PRECISIONS)
    assert not any(needs_grad_scaler(cuda, p) for p in ("fp32", "fp16", "bf16"))


def test_cast_keeps_normalisation_layers_fp32():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5), nn.LayerNorm(5))
    model(torch.randn(2, 3, 6, 6))
    cast_to_precision(model, "bf16")
    assert model[0].weight.dtype == model[3].weight.dtype == torch.bfloat16
    assert model[1].weight.dtype == model[1].running_mean.dtype == model[4].weight.dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert torch.isfinite(model(torch.randn(2, 3, 6, 6)).float()).all()
    assert cast_to_precision(nn.Linear(2, 2), "amp").weight.dtype == torch.float32


def test_an_fp32_teacher_keeps_fp32_inside_a_bf16_step():
    """The teacher's own precision holds inside the student's autocast: fp32 logits, equal to those outside it."""
    from trainers.core.clip_models import load_clip
    from trainers.core.teacher import FrozenTeacher

    torch.manual_seed(0)
    teacher = FrozenTeacher(load_clip("tiny-vit-wide", backend="tiny"), 32, (0.5,) * 3, (0.5,) * 3, precision="fp32")
    teacher.set_class_texts(["a photo of a cat.", "a photo of a dog."])
    images = torch.randn(2, 3, 32, 32)
    outside = teacher.logits(images, 10.0)
    with autocast(CPU, "amp"):
        inside = teacher.logits(images, 10.0)
    assert inside.dtype == torch.float32 and torch.equal(inside, outside)
    bf16 = FrozenTeacher(load_clip("tiny-vit-wide", backend="tiny"), 32, (0.5,) * 3, (0.5,) * 3, precision="bf16")
    bf16.set_class_texts(["a photo of a cat.", "a photo of a dog."])
    assert bf16.model.visual.conv1.weight.dtype == torch.bfloat16 and bf16.model.ln_final.weight.dtype == torch.float32
    logits = bf16.logits(images, 10.0)
    assert logits.dtype == torch.float32 and torch.allclose(logits, outside, atol=0.5)


# ------------------------------------------------------------------------------------ every trainer, on CPU
pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: the precision runs through the trainers "
                                        "skipped")
    return make_data(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def promptkd_teacher(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("promptkd_teacher") / "run")
    run_trainer("PromptKD_Teacher", "fp32", data, out)
    return out


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.mark.parametrize("prec", ["bf16", "amp"])
@pytest.mark.parametrize("name", TRAINING_TRAINERS)
def test_every_trainer_trains_in_bf16_and_amp_on_cpu(name, prec, data, promptkd_teacher, runs_dir, monkeypatch):
    out = str(runs_dir / f"{name}_{prec}")
    # bf16 convolutions are ~10x slower than fp32 on CPUs without native bf16: a light DFKD student keeps this short
    opts = ["TRAINER.DFKD.STUDENT", "shufflenet_v2_x0_5"] if name.startswith("DFKD_") else []
    with record_steps(monkeypatch) as steps:
        trainer = run_trainer(name, prec, data, out, teacher_dir=promptkd_teacher, opts=opts)
    assert trainer.precision == prec and trainer.scaler is None  # no GradScaler on CPU: bf16 autocast needs none
    assert steps.losses and all(math.isfinite(v) for v in steps.losses)
    assert steps.loss_dtypes == {torch.float32}  # losses (the KL) in fp32
    changed = [k for k, v in learnable_params(trainer).items() if not torch.equal(v, steps.initial[k])]
    assert changed, "no learnable parameter changed"
    assert steps.autocast == {(True, torch.bfloat16)}
    assert torch.bfloat16 in steps.student_outputs  # the student's layers computed in bf16
    weights = low_precision_dtypes(trainer.model)
    assert weights == ({torch.bfloat16} if prec == "bf16" else {torch.float32})
    if trainer.teacher is not None:  # a teacher in its own precision, its logits fp32
        teacher_weights = low_precision_dtypes(trainer.teacher.model)  # its CLIP
        if name == "PromptKD":  # one PREC key for student and teacher (the reference's)
            assert teacher_weights == weights
        else:
            assert teacher_weights == ({torch.float32} if prec == "bf16" else {torch.bfloat16})
        if name != "PromptKD_Teacher":
            assert steps.teacher_logits == {torch.float32}
    result = os.path.join(out, "results.json")
    assert os.path.isfile(result)


@pytest.mark.parametrize("prec", ["bf16", "amp"])
def test_zeroshot_evaluates_in_bf16_and_amp_on_cpu(prec, data, runs_dir):
    import json

    out = str(runs_dir / f"zeroshot_{prec}")
    trainer = run_trainer("ZeroshotCLIP_KD", prec, data, out, eval_only=True)
    assert trainer.precision == prec
    assert low_precision_dtypes(trainer.model) == ({torch.bfloat16} if prec == "bf16" else {torch.float32})
    assert 0 <= json.load(open(os.path.join(out, "results.json")))["accuracy"] <= 100


def test_fp16_cache_rows_feed_a_bf16_student(data, runs_dir, monkeypatch):
    """A KDPL cache holds fp16 rows; a bf16 student (its own student part: bf16 features) trains from it without a
    teacher, and its first-batch loss matches the online bf16 run's on the same keyed views."""
    from tests.dassl_runs import ROOT, TINY_CFG, first_batch_losses
    from tools.build_teacher_cache import main as build_cache
    from trainers.kdpl import KDPLTrainer

    cache = str(runs_dir / "cache")
    opts = ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.COOP.PREC", "bf16",
            "USE_CUDA", "False"]
    build_cache(["--root", data["eurosat"], "--seed", "1", "--trainer", "KDPL_CoOp", "--dataset-config-file",
                 os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"), "--config-file", TINY_CFG, "--epochs", "1",
                 "--cache-dir", cache, "--output-dir", str(runs_dir / "cache_cfg")] + opts)
    (part,) = os.listdir(os.path.join(cache, "student"))
    assert part.startswith("tiny-vit.bf16.")
    shard = torch.load(os.path.join(cache, "epoch_000.rank000.pt"), weights_only=True)
    assert shard["values"].dtype == torch.float16
    online = run_trainer("KDPL_CoOp", "bf16", data, str(runs_dir / "online_bf16"),
                         opts=["TRAINER.KDPL.VIEW_KEYED_AUG", "True", "TRAINER.KDPL.TEACHER_PREC", "fp32"])
    monkeypatch.setattr(KDPLTrainer, "build_online_teacher", lambda self: pytest.fail("a teacher was built"))
    cached = run_trainer("KDPL_CoOp", "bf16", data, str(runs_dir / "cached_bf16"),
                         opts=["TRAINER.KDPL.TEACHER_CACHE", cache, "TRAINER.KDPL.TEACHER_PREC", "fp32"])
    assert cached.teacher is None and cached.cache.student is not None
    assert low_precision_dtypes(cached.model) == {torch.bfloat16}
    cached.model.prompt_learner.load_state_dict(online.model.prompt_learner.state_dict())
    with autocast(CPU, "bf16"):  # as the training step
        (online_loss, cached_loss), _ = first_batch_losses((online, cached), 0)
    assert online_loss.dtype == cached_loss.dtype == torch.float32 and float(online_loss) > 0
    assert torch.allclose(online_loss, cached_loss, rtol=2e-2, atol=1e-3), (online_loss, cached_loss)
