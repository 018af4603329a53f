"""KDPL trainers through real Dassl on a tiny synthetic EuroSAT tree with tiny random CLIPs."""
from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README): "
                                    "Dassl integration tests skipped")

from datasets.synthetic import make_synthetic_dataset  # noqa: E402
from tests.dassl_runs import LabelGuardBatch, interrupt_at_epoch, run_train_py  # noqa: E402
from trainers.core.trainer_parts import TrainBatch  # noqa: E402

KDPL_TRAINERS = ["KDPL_CoOp", "KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe", "KDPL_PromptSRC"]
BASE = ["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(str(root), "eurosat", num_classes=5, per_class=6, size=32, seed=0)
    return str(root)


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory):
    path = tmp_path_factory.mktemp("dict") / "names.csv"
    names = ["ClassName"] + [f"object {i}" for i in range(46)] + ["forest", "river", "highway", "sea or lake"]
    path.write_text("\n".join(names) + "\n")
    return str(path)


@pytest.mark.parametrize("name", KDPL_TRAINERS)
def test_train_then_evaluate_base_and_new(name, data, tmp_path):
    train_dir = str(tmp_path / "train")
    trainer = run_train_py(data, train_dir, name, opts=BASE + ["OPTIM.MAX_EPOCH", "1"])
    assert trainer.teacher is not None and not trainer.teacher.training
    ckpt_dir = os.path.join(train_dir, trainer.model_name)
    ckpt = torch.load(os.path.join(ckpt_dir, "model.pth.tar-1"), map_location="cpu", weights_only=True)
    learnable = dict(trainer.learnable().named_parameters())
    assert set(ckpt["state_dict"]) == set(trainer.learnable().state_dict())
    # the optimiser holds exactly the prompt learner's parameters
    optimised = {id(p) for group in trainer.optim.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in learnable.values()}
    assert all(not p.requires_grad for n, p in trainer.model.clip.named_parameters())
    base = json.load(open(os.path.join(train_dir, "results.json")))
    assert base["num_classes"] == 3 and base["subsample_classes"] == "base" and not base["eval_only"]

    for subset, classes in (("base", 3), ("new", 2)):
        out = str(tmp_path / f"test_{subset}")
        ev = run_train_py(data, out, name, opts=["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", subset],
                          eval_only=True, model_dir=train_dir, load_epoch=1)
        assert ev.teacher is None  # no teacher is built at test time
        res = json.load(open(os.path.join(out, "results.json")))
        assert res["eval_only"] and res["num_classes"] == classes and 0 <= res["accuracy"] <= 100
        assert res["epoch"] == 1
        if subset == "base":
            assert res["accuracy"] == pytest.approx(base["accuracy"])


def test_resume_after_interruption(data, tmp_path, monkeypatch):
    from trainers.kdpl import KDPL_CoOp

    out = str(tmp_path / "run")
    original = interrupt_at_epoch(monkeypatch, KDPL_CoOp, 1)
    with pytest.raises(KeyboardInterrupt):
        run_train_py(data, out, "KDPL_CoOp", opts=BASE)
    assert os.path.isfile(os.path.join(out, "prompt_learner", "model.pth.tar-1"))
    assert not os.path.exists(os.path.join(out, "results.json"))
    monkeypatch.setattr(KDPL_CoOp, "forward_backward", original)
    trainer = run_train_py(data, out, "KDPL_CoOp", opts=BASE)
    assert trainer.start_epoch == 1
    assert os.path.isfile(os.path.join(out, "prompt_learner", "model.pth.tar-2"))
    # the warm-up scheduler's successor came back from the checkpoint (epoch 2 runs at the cosine LR, not 1e-5)
    assert json.load(open(os.path.join(out, "results.json")))["epoch"] == 2
    assert trainer.sched.successor.last_epoch >= 1


def test_eval_only_without_checkpoint_fails_clearly(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="--load-epoch"):
        run_train_py(data, str(tmp_path / "t"), "KDPL_CoOp", opts=BASE, eval_only=True,
                     model_dir=str(tmp_path / "missing"), load_epoch=2)


def test_student_kl_to_teacher_decreases_on_fixed_images(data, tmp_path):
    trainer = run_train_py(data, str(tmp_path / "r"), "KDPL_CoOp",
                           opts=BASE + ["OPTIM.MAX_EPOCH", "1"])
    for group in trainer.optim.param_groups:  # the cosine schedule ended at 0 after training
        group["lr"] = 0.05
    teacher_state = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    clip_state = {k: v.clone() for k, v in trainer.model.clip.state_dict().items()}
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    trainer.set_model_mode("train")
    first = None
    for step in range(40):
        trainer.batch_idx, trainer.num_batches = 0, 10**6
        terms = trainer.forward_backward({"img": images, "label": torch.zeros(8, dtype=torch.long)})
        first = float(terms["loss symmetric KL"]) if first is None else first
    last = float(terms["loss symmetric KL"])
    assert last < 0.8 * first
    assert all(torch.equal(v, teacher_state[k]) for k, v in trainer.teacher.state_dict().items())
    assert all(torch.equal(v, clip_state[k]) for k, v in trainer.model.clip.state_dict().items())
    assert not trainer.teacher.training


def test_labels_are_never_read(data, tmp_path):
    trainer = run_train_py(data, str(tmp_path / "r"), "KDPL_CoOp", opts=BASE + ["OPTIM.MAX_EPOCH", "1"])

    trainer.batch_idx, trainer.num_batches = 0, 10
    trainer.forward_backward(LabelGuardBatch(img=torch.randn(2, 3, 32, 32), label=torch.zeros(2)))


@pytest.mark.parametrize("name", ["KDPL_CoOp", "KDPL_PromptSRC"])
def test_class_agnostic_training_and_dataset_eval(name, data, dictionary, tmp_path):
    out = str(tmp_path / "ca")
    opts = BASE + ["OPTIM.MAX_EPOCH", "1", "TRAINER.KDPL.CLASS_AGNOSTIC", "True", "TRAINER.KDPL.K_MAX", "8",
                   "TRAINER.KDPL.CA_DICTIONARY", dictionary]
    trainer = run_train_py(data, out, name, opts=opts)
    assert trainer.model.num_classes("train") == 50 and trainer.model.num_classes("eval") == 3
    assert trainer.teacher.class_features.shape[0] == 50 and trainer.k_max == 8
    assert trainer.teacher.text_encoder_calls == 1
    images = torch.randn(4, 3, 32, 32)
    teacher_logits, idx = trainer.teacher_targets(TrainBatch(images))
    assert teacher_logits.shape == (4, 8) and idx.unique().numel() == 8
    full = trainer.teacher.logits(images, trainer.model.logit_scale)
    assert set(full.argmax(-1).tolist()) <= set(idx.tolist()) or len(set(full.argmax(-1).tolist())) > 8
    # evaluation uses the dataset's classes and is independent of the dictionary
    with torch.no_grad():
        eval_logits = trainer.model(images, key="eval")
    trainer.model.register_class_set("train", [f"other {i}" for i in range(20)])
    with torch.no_grad():
        assert torch.equal(trainer.model(images, key="eval"), eval_logits)
    ckpt = torch.load(os.path.join(out, trainer.model_name, "model.pth.tar-1"), weights_only=True)
    assert ckpt["meta"]["class_agnostic"] is True and len(ckpt["meta"]["dictionary_sha256"]) == 64
    for subset, classes in (("base", 3), ("new", 2)):
        ev = run_train_py(data, str(tmp_path / subset), name, eval_only=True, model_dir=out, load_epoch=1,
                          opts=["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", subset])
        assert ev.model.num_classes("eval") == classes


def test_zero_shot_baseline(data, tmp_path):
    out = str(tmp_path / "zs")
    trainer = run_train_py(data, out, "ZeroshotCLIP_KD", opts=["DATASET.SUBSAMPLE_CLASSES", "new"], eval_only=True)
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["trainer"] == "ZeroshotCLIP_KD" and res["num_classes"] == 2
    assert not any(p.requires_grad for p in trainer.model.parameters())


def test_registration_and_config_keys_do_not_overwrite():
    from dassl.config import get_cfg_default
    from dassl.engine import TRAINER_REGISTRY
    from yacs.config import CfgNode as CN

    from trainers.config import extend_cfg

    for name in KDPL_TRAINERS + ["ZeroshotCLIP_KD"]:
        assert TRAINER_REGISTRY.get(name).__name__ == name
    cfg = get_cfg_default()
    assert "KDPL" in cfg.TRAINER and cfg.TRAINER.KDPL.K_MAX == 1000  # Dassl's defaults carry our keys
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 7
    extend_cfg(cfg)
    assert cfg.TRAINER.COOP.N_CTX == 7 and cfg.TRAINER.COOP.CTX_INIT == ""


def test_non_finite_loss_stops_training_before_saving(data, tmp_path, monkeypatch):
    from trainers.kdpl import KDPL_CoOp

    original = KDPL_CoOp.compute_loss

    def nan_loss(self, batch):
        loss, terms = original(self, batch)
        loss = loss * float("nan")
        return loss, {**terms, "loss symmetric KL": loss}

    monkeypatch.setattr(KDPL_CoOp, "compute_loss", nan_loss)
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match="NaN"):
        run_train_py(data, str(out), "KDPL_CoOp", opts=BASE)
    assert not (out / "prompt_learner").exists()


def test_promptsrc_gpa_is_the_gaussian_average_of_epoch_snapshots(data, tmp_path, monkeypatch):
    from trainers.kdpl import KDPL_PromptSRC
    from trainers.promptsrc import GaussianPromptAggregation, gaussian_weights

    snapshots = []
    original = GaussianPromptAggregation.end_epoch

    def recording(self, learnable, epoch, max_epoch):
        snapshots.append({k: v.detach().clone().float() for k, v in learnable.state_dict().items()})
        original(self, learnable, epoch, max_epoch)

    monkeypatch.setattr(GaussianPromptAggregation, "end_epoch", recording)
    opts = BASE + ["OPTIM.MAX_EPOCH", "3", "TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1",
                   "OPTIM.WARMUP_EPOCH", "0", "OPTIM.LR", "0.05"]
    trainer = run_train_py(data, str(tmp_path / "gpa"), "KDPL_PromptSRC", opts=opts)
    from trainers.core.clip_models import load_clip

    clip_before = load_clip("tiny-vit").model.state_dict()  # deterministic: the weights training started from
    weights = gaussian_weights(3, 2, 1)
    final = trainer.learnable().state_dict()
    assert len(snapshots) == 3 and not torch.equal(snapshots[0]["ctx"], snapshots[2]["ctx"])
    for key, value in final.items():
        expected = sum(w * snap[key] for w, snap in zip(weights, snapshots))
        assert torch.allclose(value.float(), expected, atol=1e-6), key
    saved = torch.load(os.path.join(str(tmp_path / "gpa"), "VLPromptLearner", "model.pth.tar-3"), weights_only=True)
    assert torch.allclose(saved["state_dict"]["ctx"], final["ctx"])  # the saved last checkpoint is the GPA model
    assert all(torch.equal(v, clip_before[k]) for k, v in trainer.model.clip.state_dict().items())


def test_same_seed_gives_identical_runs_on_cpu(data, tmp_path):
    runs = [run_train_py(data, str(tmp_path / f"run{i}"), "KDPL_CoOp", opts=BASE + ["OPTIM.MAX_EPOCH", "1"])
            for i in range(2)]
    first, second = (r.learnable().state_dict()["ctx"] for r in runs)
    assert torch.equal(first, second)
    results = [json.load(open(os.path.join(str(tmp_path / f"run{i}"), "results.json"))) for i in range(2)]
    assert results[0]["accuracy"] == results[1]["accuracy"]
    other = run_train_py(data, str(tmp_path / "seed0"), "KDPL_CoOp", seed=0, opts=BASE + ["OPTIM.MAX_EPOCH", "1"])
    assert other.cfg.SEED == 0  # seed 0 is honoured, not ignored
    assert not torch.equal(other.learnable().state_dict()["ctx"], first)
