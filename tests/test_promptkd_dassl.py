"""PromptKD through real Dassl on a tiny synthetic EuroSAT tree (5 classes: 3 base, 2 new) with tiny random CLIPs:
teacher training -> class vectors -> distillation -> eval base/new -> resume -> refusals."""
from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README): "
                                    "PromptKD Dassl integration tests skipped")

from datasets.synthetic import make_synthetic_dataset  # noqa: E402
from tests.dassl_runs import LabelGuardBatch, ROOT, first_batch_losses, interrupt_at_epoch, run_train_py  # noqa: E402

TEACHER_CFG = os.path.join(ROOT, "configs", "trainers", "PromptKD_Teacher", "tiny_vit_wide_ep2_cpu.yaml")
STUDENT_CFG = os.path.join(ROOT, "configs", "trainers", "PromptKD", "tiny_vit_ep2_cpu.yaml")
N, M = 5, 3  # classes, base classes = ceil(N/2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(str(root), "eurosat", num_classes=N, per_class=6, size=32, seed=0)
    return str(root)


@pytest.fixture(scope="module")
def teacher_dir(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("teacher") / "run")
    run_train_py(data, out, "PromptKD_Teacher", config=TEACHER_CFG,
                 opts=["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1"])
    return out


def student(data, out, teacher, subsample="base", opts=(), **kw):
    return run_train_py(data, out, "PromptKD", config=STUDENT_CFG,
                        opts=["DATASET.NUM_SHOTS", "0", "DATASET.SUBSAMPLE_CLASSES", subsample,
                              "TRAINER.PROMPTKD.TEACHER_CKPT", teacher, *opts], **kw)


def test_teacher_writes_checkpoint_and_all_class_vectors(teacher_dir):
    from trainers.core.class_dictionary import sha256_of

    ckpt_path = os.path.join(teacher_dir, "VLPromptLearner", "model.pth.tar-1")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["num_classes"] == M and ckpt["meta"]["depth_text"] == 2
    assert {"ctx", "vision_ctx", "text_deep.0", "vision_deep.0"} == set(ckpt["state_dict"])
    record = torch.load(os.path.join(teacher_dir, "class_vectors.pt"), weights_only=True)
    assert record["class_vectors"].shape == (N, 96) and len(record["classnames"]) == N  # base training, ALL classes
    assert record["checkpoint_sha256"] == sha256_of(ckpt_path) and record["template"] == "a photo of a {}."
    res = json.load(open(os.path.join(teacher_dir, "results.json")))
    assert res["num_classes"] == M and "labels" in res["regime"]["labels"]


def test_distill_then_eval_base_and_new_then_resume(data, teacher_dir, tmp_path, monkeypatch):
    from trainers.core.encoders import TextEncoder
    from trainers.promptkd import PromptKD

    calls = []
    original_forward = TextEncoder.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "forward", counting)
    out = str(tmp_path / "train_base")
    original_fb = interrupt_at_epoch(monkeypatch, PromptKD, 1)
    with pytest.raises(KeyboardInterrupt):
        student(data, out, teacher_dir)
    assert len(calls) == 1  # W was computed once; the teacher's text encoder never ran again
    monkeypatch.setattr(PromptKD, "forward_backward", original_fb)
    calls.clear()
    trainer = student(data, out, teacher_dir)  # resumes from model.pth.tar-1
    assert trainer.start_epoch == 1 and len(calls) == 1 and trainer.teacher.text_encoder_calls == 1
    assert not trainer.teacher.training
    # the distillation set is the unlabeled training split of ALL classes; the test set holds base classes only
    train_labels = {int(d.label) for d in trainer.train_loader_x.dataset.data_source}
    assert train_labels == set(range(N)) and len(trainer.train_loader_x.dataset) == N * 6
    assert trainer.num_classes == M
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert trainer.model(images, key="train").shape == (4, N)
        assert trainer.model(images, key="eval").shape == (4, M)
    # checkpoint = prompts + projector (+ BN statistics); the optimiser holds exactly the trainable tensors
    ckpt = torch.load(os.path.join(out, "VLPromptLearner", "model.pth.tar-2"), map_location="cpu",
                      weights_only=True)
    assert set(ckpt["state_dict"]) == set(trainer.learnable().state_dict())
    assert not any("class_vectors" in k or k.startswith("image_encoder") for k in ckpt["state_dict"])
    optimised = {id(p) for group in trainer.optim.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.learnable().parameters()}
    assert all(not p.requires_grad for p in trainer.model.image_encoder.parameters())
    base = json.load(open(os.path.join(out, "results.json")))
    assert base["subsample_classes"] == "base" and base["class_vector_rows"] == [0, M] and base["epoch"] == 2
    assert base["kd_weight"] == 1000.0 and base["teacher_text_encoder_calls"] == 1
    # PromptKD's fields come through the base's one atomic write (no re-read and rewrite a kill could interrupt)
    assert "write_results" not in vars(PromptKD) and base["modal"] and base["temperature"] > 0
    assert "transductive" in base["regime"]["images"] and base["regime"]["labels"] == "none"

    calls.clear()
    for subset, classes, rows in (("base", M, [0, M]), ("new", N - M, [M, N])):
        test_out = str(tmp_path / f"test_{subset}")
        ev = student(data, test_out, teacher_dir, subset, eval_only=True, model_dir=out, load_epoch=2)
        assert ev.teacher is None
        res = json.load(open(os.path.join(test_out, "results.json")))
        assert res["eval_only"] and res["num_classes"] == classes and res["class_vector_rows"] == rows
        with torch.no_grad():
            assert ev.model(images, key="eval").shape == (4, classes)
        if subset == "base":
            assert res["accuracy"] == pytest.approx(base["accuracy"])
    assert calls == []  # the teacher never runs at test time


def test_labels_are_never_read(data, teacher_dir, tmp_path):
    trainer = student(data, str(tmp_path / "r"), teacher_dir, opts=["OPTIM.MAX_EPOCH", "1"])

    trainer.batch_idx, trainer.num_batches = 0, 10
    trainer.forward_backward(LabelGuardBatch(img=torch.randn(4, 3, 32, 32), label=torch.zeros(4)))


def test_refusals(data, teacher_dir, tmp_path):
    ckpt = torch.load(os.path.join(teacher_dir, "VLPromptLearner", "model.pth.tar-1"), weights_only=True)
    # a teacher checkpoint with a missing prompt tensor
    broken = {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k != "text_deep.0"}}
    torch.save(broken, tmp_path / "missing.pth.tar")
    with pytest.raises(KeyError, match="text_encoder.transformer.resblocks.1.VPT_shallow"):
        student(data, str(tmp_path / "a"), str(tmp_path / "missing.pth.tar"))
    # another dataset's teacher (trained on 7 classes): class-count mismatch
    other = {**ckpt, "meta": {**ckpt["meta"], "num_classes": 7, "classnames": [f"c{i}" for i in range(7)]}}
    torch.save(other, tmp_path / "other.pth.tar")
    with pytest.raises(ValueError, match="another dataset's teacher"):
        student(data, str(tmp_path / "b"), str(tmp_path / "other.pth.tar"))
    # a reference-layout teacher trained on 7 classes (token_prefix rows)
    ref = {"state_dict": {**{f"prompt_learner.{k}": v for k, v in ckpt["state_dict"].items()},
                          "prompt_learner.token_prefix": torch.zeros(7, 1, 128)}}
    torch.save(ref, tmp_path / "ref.pth.tar")
    with pytest.raises(ValueError, match="trained on 7 classes"):
        student(data, str(tmp_path / "c"), str(tmp_path / "ref.pth.tar"))
    with pytest.raises(FileNotFoundError, match="model-best.pth.tar"):
        student(data, str(tmp_path / "d"), str(tmp_path / "nowhere"))
    # model selection on test data is refused
    with pytest.raises(ValueError, match="VAL_MODE"):
        student(data, str(tmp_path / "e"), teacher_dir, opts=["TEST.FINAL_MODEL", "best_val"])
    # --eval-only with nothing to read W from
    with pytest.raises(FileNotFoundError, match="--load-epoch"):
        student(data, str(tmp_path / "f"), teacher_dir, "new", eval_only=True, model_dir=str(tmp_path / "x"),
                load_epoch=2)


def test_kd_weight_table_and_eval_rows():
    from trainers.promptkd_parts import eval_rows, kd_weight_for

    assert kd_weight_for("DescribableTextures", "base2novel", -1.0)[0] == 200.0
    assert kd_weight_for("OxfordFlowers", "base2novel", -1.0)[0] == 200.0
    assert kd_weight_for("EuroSAT", "base2novel", -1.0)[0] == 1000.0
    assert kd_weight_for("DescribableTextures", "cross", -1.0)[0] == 1000.0
    assert kd_weight_for("DescribableTextures", "base2novel", 5.0)[0] == 5.0
    assert eval_rows("base", 37) == (0, 19) and eval_rows("new", 37) == (19, 37) and eval_rows("all", 10) == (0, 10)


def test_config_yamls_match_the_spec():
    import yaml

    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    for name, depth, modal in (("vit_b16_c2_ep20_batch8_4+4ctx", 9, "base2novel"),
                               ("vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets", 3, "cross")):
        path = os.path.join(ROOT, "configs", "trainers", "PromptKD", f"{name}.yaml")
        cfg = extend_cfg(get_cfg_default())
        cfg.merge_from_file(path)
        k = cfg.TRAINER.PROMPTKD
        assert (cfg.MODEL.BACKBONE.NAME, cfg.TRAINER.MODAL, k.PROMPT_DEPTH_VISION, k.N_CTX_VISION) == \
            ("ViT-B/16", modal, depth, 4)
        assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.TEST.FINAL_MODEL) == \
            (0.005, 20, 8, "last_step")
        assert (k.TEMPERATURE, k.KD_WEIGHT, k.PROJECT_LAYER, k.TEACHER_BACKBONE) == (1.0, -1.0, 2, "ViT-L/14")
    teacher = yaml.safe_load(open(os.path.join(ROOT, "configs", "trainers", "PromptKD_Teacher",
                                               "vit_l14_c2_ep20_batch8_4+4ctx.yaml")))
    assert teacher["MODEL"]["BACKBONE"]["NAME"] == "ViT-L/14" and teacher["OPTIM"]["LR"] == 0.005
    assert teacher["TRAINER"]["PROMPTSRC"]["TEXT_LOSS_WEIGHT"] == 25 and teacher["DATALOADER"]["TRAIN_X"][
        "BATCH_SIZE"] == 8


@pytest.mark.parametrize("mode", ["kd", "base_fewshot"])
def test_held_out_model_selection(data, teacher_dir, tmp_path, mode):
    out = str(tmp_path / mode)
    trainer = student(data, out, teacher_dir, opts=["TEST.FINAL_MODEL", "best_val", "TRAINER.PROMPTKD.VAL_MODE", mode])
    val_items = trainer.val_loader.dataset.data_source
    test_paths = {d.impath for d in trainer.dm.dataset.test}
    assert val_items and not any(d.impath in test_paths for d in val_items)  # never the test set
    if mode == "base_fewshot":  # at most 4 labelled images per BASE class
        labels = [int(d.label) for d in val_items]
        assert set(labels) <= set(range(M)) and max(labels.count(c) for c in set(labels)) <= 4
    best = torch.load(os.path.join(out, "VLPromptLearner", "model-best.pth.tar"), weights_only=True)
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["num_classes"] == M
    assert results["epoch"] == best["epoch"]  # the evaluated (best-validation) weights' epoch, not the last one


def test_eval_only_recomputes_class_vectors_from_the_teacher_when_missing(data, teacher_dir, tmp_path):
    out = str(tmp_path / "train")
    student(data, out, teacher_dir, opts=["OPTIM.MAX_EPOCH", "1"])
    os.remove(os.path.join(out, "class_vectors.pt"))
    ev = student(data, str(tmp_path / "new"), teacher_dir, "new", eval_only=True, model_dir=out, load_epoch=1)
    assert ev.text_encoder_calls == 1 and ev.teacher is None and ev.model.class_vectors.shape == (N, 96)
    with pytest.raises(RuntimeError, match="No class vectors"):
        student(data, str(tmp_path / "new2"), "", "new", eval_only=True, model_dir=out, load_epoch=1)


def test_domain_generalisation_halves(teacher_dir, tmp_path):
    root = str(tmp_path / "dg_data")
    make_synthetic_dataset(root, "imagenet_a", num_classes=4, per_class=4, size=32, seed=0)
    out = str(tmp_path / "dg")
    trainer = run_train_py(root, out, "PromptKD", dataset="imagenet_a", config=STUDENT_CFG,
                           opts=["DATASET.NUM_SHOTS", "0", "TRAINER.MODAL", "dg", "TRAINER.PROMPTKD.DG_SPLIT", "halves",
                                 "TRAINER.PROMPTKD.TEACHER_CKPT", teacher_dir, "OPTIM.MAX_EPOCH", "1"])
    adapt = {d.impath for d in trainer.train_loader_x.dataset.data_source}
    evaluate = {d.impath for d in trainer.test_loader.dataset.data_source}
    assert len(adapt) == len(evaluate) == 8 and not adapt & evaluate
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["num_samples"] == 8 and res["modal"] == "dg" and "half" in res["regime"]["images"]


def test_class_vectors_read_from_the_stage1_file(data, teacher_dir, tmp_path):
    vectors = os.path.join(teacher_dir, "class_vectors.pt")
    trainer = student(data, str(tmp_path / "cv"), teacher_dir,
                      opts=["OPTIM.MAX_EPOCH", "1", "TRAINER.PROMPTKD.CLASS_VECTORS", vectors])
    record = torch.load(vectors, weights_only=True)
    assert trainer.text_encoder_calls == 0 and torch.equal(trainer.model.class_vectors, record["class_vectors"])
    # a class-vector file computed from another checkpoint is refused
    ckpt = torch.load(os.path.join(teacher_dir, "VLPromptLearner", "model.pth.tar-1"), weights_only=True)
    ckpt["epoch"] = 99
    torch.save(ckpt, tmp_path / "other.pth.tar")
    with pytest.raises(ValueError, match="computed from teacher checkpoint"):
        student(data, str(tmp_path / "cv2"), str(tmp_path / "other.pth.tar"),
                opts=["OPTIM.MAX_EPOCH", "1", "TRAINER.PROMPTKD.CLASS_VECTORS", vectors])


def test_cached_and_online_distillation_see_the_same_targets(data, teacher_dir, tmp_path):
    """PromptKD's cache holds the teacher's image feature per keyed view (plus W and the scale, once): a cached run
    builds no teacher and computes the online run's loss on the same views."""
    from tools.build_teacher_cache import main as build_cache

    cache = str(tmp_path / "cache")
    opts = ["DATASET.NUM_SHOTS", "0", "DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.PROMPTKD.TEACHER_CKPT", teacher_dir]
    build_cache(["--root", data, "--seed", "1", "--trainer", "PromptKD", "--dataset-config-file",
                 os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"), "--config-file", STUDENT_CFG,
                 "--cache-dir", cache] + opts)
    assert sorted(os.listdir(cache)) == ["class_vectors.pt", "config.yaml", "epoch_000.rank000.pt",
                                         "epoch_001.rank000.pt", "meta.json"]
    meta = json.load(open(os.path.join(cache, "meta.json")))
    assert meta["kind"] == "teacher_features" and meta["width"] == 96 and meta["epochs"] == 2
    shard = torch.load(os.path.join(cache, "epoch_000.rank000.pt"), weights_only=True)
    assert shard["values"].shape == (meta["num_images"], 96) and shard["values"].dtype == torch.float16

    online = student(data, str(tmp_path / "online"), teacher_dir,
                     opts=["TRAINER.PROMPTKD.VIEW_KEYED_AUG", "True", "TRAIN.CHECKPOINT_FREQ", "0"])
    cached = student(data, str(tmp_path / "cached"), "",  # the cache names its teacher: no TEACHER_CKPT needed
                     opts=["TRAINER.PROMPTKD.TEACHER_CACHE", cache, "TRAIN.CHECKPOINT_FREQ", "0"])
    assert cached.teacher is None and cached.cache.teacher.kind == "teacher_features"
    assert meta["num_images"] == len(online.train_loader_x.dataset) > 0
    assert torch.equal(cached.model.class_vectors, online.model.class_vectors)
    assert float(cached.teacher_scale) == pytest.approx(float(online.teacher.logit_scale))
    assert cached.teacher_info["sha256"] == online.teacher_info["sha256"]
    res = json.load(open(os.path.join(str(tmp_path / "cached"), "results.json")))
    assert res["teacher"]["teacher_cache"] == cache and res["accuracy"] is not None
    assert os.path.isfile(os.path.join(str(tmp_path / "cached"), "class_vectors.pt"))  # --eval-only reads it

    cached.model.prompt_learner.load_state_dict(online.model.prompt_learner.state_dict())
    for epoch in (0, 1):
        (online_loss, cached_loss), batch = first_batch_losses((online, cached), epoch, eval_mode=True)
        assert float(online_loss) > 0
        assert torch.allclose(online_loss, cached_loss, rtol=5e-3, atol=1e-3), (epoch, online_loss, cached_loss)
        with torch.no_grad():
            assert torch.allclose(cached.cache.rows(epoch, batch.index), online.teacher.encode_image(batch.images),
                                  atol=2e-3)

    # settings that change the views, or a cached held-out KD validation, are refused
    with pytest.raises(Exception, match="other settings"):
        student(data, str(tmp_path / "seed2"), "", opts=["TRAINER.PROMPTKD.TEACHER_CACHE", cache], seed=2)
    with pytest.raises(ValueError, match="VAL_MODE kd"):
        student(data, str(tmp_path / "kdval"), "", opts=["TRAINER.PROMPTKD.TEACHER_CACHE", cache,
                                                          "TRAINER.PROMPTKD.VAL_MODE", "kd"])
