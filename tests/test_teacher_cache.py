"""Offline teacher cache: keyed views, shards, and cached == online targets on the same views."""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from trainers.core.teacher_cache import (TeacherCache, TeacherCacheError, check_meta, save_shard, student_part_dir,
                                         write_meta)
from trainers.core.views import ViewSampler, apply_view


def test_views_are_keyed_by_seed_epoch_and_index():
    sampler = ViewSampler(seed=3)
    a = sampler.params(0, 5, 64, 48)
    assert a == sampler.params(0, 5, 64, 48)
    draws = {sampler.params(e, i, 64, 48) for e in range(3) for i in range(10)}
    assert len(draws) > 25  # different epochs and images get different views
    assert ViewSampler(seed=4).params(0, 5, 64, 48) != a
    for top, left, h, w, flip in draws:
        assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64 and flip in (0, 1)
        assert 0.08 * 64 * 48 * 0.8 <= h * w <= 64 * 48
    img = Image.new("RGB", (64, 48), (120, 30, 200))
    out = apply_view(img, a, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out[0], torch.full((32, 32), (120 / 255 - 0.5) / 0.5), atol=1e-2)


@pytest.mark.parametrize("scale", [20.0, 2.0])  # peaked rows (residual mass clamped) and flat ones
def test_shards_round_trip_full_and_topk(tmp_path, scale):
    """Rows are stored unscaled (cosines) and read back times the reader's scale; top-k rows keep the others'
    probability mass measured at that scale."""
    torch.manual_seed(0)
    cos = torch.randn(6, 10).half().float()  # what the shards hold
    logits = scale * cos
    full, top = str(tmp_path / "full"), str(tmp_path / "top")
    for folder, k in ((full, 10), (top, 3)):
        write_meta(folder, {"num_images": 6, "width": 10, "epochs": 1, "teacher": "t", "topk": k,
                            "residual_scale": scale})
        save_shard(folder, 0, 0, torch.tensor([0, 2, 4]), cos[[0, 2, 4]], k, scale)
        save_shard(folder, 0, 1, torch.tensor([1, 3, 5]), cos[[1, 3, 5]], k, scale)
    rows = TeacherCache(full, torch.device("cpu"), scale=scale).lookup(0, torch.tensor([5, 0]))
    assert torch.allclose(rows, logits[[5, 0]])
    sparse = TeacherCache(top, torch.device("cpu"), scale=scale).lookup(0, torch.arange(6))
    assert torch.isfinite(sparse).all() and torch.equal(sparse.argmax(1), logits.argmax(1))
    # top-3 classes keep their probabilities; the other 7 share the rest uniformly
    p_full, p_top = logits.softmax(1), sparse.softmax(1)
    kept = logits.topk(3, dim=1).indices
    assert torch.allclose(p_top.gather(1, kept), p_full.gather(1, kept), atol=2e-2)
    rest = torch.ones_like(p_top, dtype=torch.bool).scatter(1, kept, False)
    expected_rest = (1 - p_full.gather(1, kept).sum(1)).clamp(min=1e-6) / 7
    assert torch.allclose(p_top[rest].view(6, 7), expected_rest.unsqueeze(1).expand(6, 7), rtol=2e-2, atol=1e-9)
    from trainers.core.losses import symmetric_kl
    assert torch.isfinite(symmetric_kl(sparse, torch.randn(6, 10))[0])  # both KL directions stay finite
    # whole rows serve any scale; top-k rows only the scale their residual mass was measured at
    assert torch.allclose(TeacherCache(full, torch.device("cpu"), scale=1.0).lookup(0, torch.tensor([3])),
                          cos[[3]].half().float())
    with pytest.raises(TeacherCacheError, match=f"top-3 .* scale {scale:g}, but this run reads it at scale 5"):
        TeacherCache(top, torch.device("cpu"), scale=5.0)
    with pytest.raises(TeacherCacheError, match="epoch 2"):
        TeacherCache(full, torch.device("cpu")).lookup(1, torch.tensor([0]))


def test_student_parts_are_keyed_by_the_student(tmp_path):
    """A student's frozen image features live in their own sub-folder, named by what they depend on."""
    folder = str(tmp_path / "s")
    meta = {"kind": "student_features", "width": 16, "student": "ViT-B/32", "student_weights": "",
            "student_prec": "fp16", "student_compute": "float16"}
    part = student_part_dir(folder, meta)
    assert os.path.dirname(part) == os.path.join(folder, "student")
    assert os.path.basename(part).startswith("ViT-B-32.fp16.")
    assert student_part_dir(folder, dict(meta)) == part  # stable
    assert student_part_dir(folder, {**meta, "student_prec": "bf16", "student_compute": "bfloat16"}) != part
    assert student_part_dir(folder, {**meta, "student": "RN50"}) != part
    feats = torch.randn(4, 16)
    write_meta(part, {**meta, "num_images": 4, "epochs": 1})
    save_shard(part, 0, 0, torch.tensor([3, 1, 0, 2]), feats)
    got = TeacherCache(part, torch.device("cpu"), expected=meta).lookup(0, torch.tensor([0, 3]))
    assert torch.equal(got, feats[[2, 0]].half().float())


def test_incomplete_mismatched_or_old_cache_is_refused(tmp_path):
    folder = str(tmp_path / "c")
    write_meta(folder, {"num_images": 4, "width": 3, "epochs": 1, "teacher": "big"})
    save_shard(folder, 0, 0, torch.tensor([0, 1]), torch.randn(2, 3), 3)
    with pytest.raises(TeacherCacheError, match="lacks 2 images"):
        TeacherCache(folder, torch.device("cpu")).lookup(0, torch.tensor([0]))
    with pytest.raises(TeacherCacheError, match="teacher: cache 'big' vs run 'other'"):
        TeacherCache(folder, torch.device("cpu"), expected={"teacher": "other"})
    with pytest.raises(TeacherCacheError, match="build_teacher_cache"):
        TeacherCache(str(tmp_path / "none"), torch.device("cpu"))
    check_meta({"a": 1}, {"a": 1}, folder)
    old = tmp_path / "old"  # layout 1: rows at the student's scale, student features inline
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"num_images": 4, "width": 3, "epochs": 1, "student_features": True}))
    with pytest.raises(TeacherCacheError, match="layout 1, written by an older version.*rebuild"):
        TeacherCache(str(old), torch.device("cpu"))


def test_cached_and_online_training_see_the_same_targets(tmp_path):
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: Dassl integration tests skipped")
    from datasets.synthetic import make_synthetic_dataset
    from tests.dassl_runs import ROOT, TINY_CFG, first_batch_losses, run_train_py
    from tools.build_teacher_cache import main as build_cache

    data = str(tmp_path / "data")
    make_synthetic_dataset(data, "eurosat", num_classes=4, per_class=6, size=40, seed=2)
    opts = ["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base"]
    cache = str(tmp_path / "cache")
    build_cache(["--root", data, "--seed", "1", "--trainer", "KDPL_CoOp", "--dataset-config-file",
                 os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"), "--config-file", TINY_CFG,
                 "--cache-dir", cache] + opts)
    assert sorted(os.listdir(cache)) == ["config.yaml", "epoch_000.rank000.pt", "epoch_001.rank000.pt", "meta.json",
                                         "student"]

    online = run_train_py(data, str(tmp_path / "online"), "KDPL_CoOp",
                          opts=opts + ["TRAINER.KDPL.VIEW_KEYED_AUG", "True", "TRAIN.CHECKPOINT_FREQ", "0"])
    cached = run_train_py(data, str(tmp_path / "cached"), "KDPL_CoOp",
                          opts=opts + ["TRAINER.KDPL.TEACHER_CACHE", cache, "TRAIN.CHECKPOINT_FREQ", "0"])
    assert cached.teacher is None and cached.cache.teacher is not None
    assert cached.cache.student is not None  # CoOp's image tower is frozen: its features are cached too
    for trainer in (online, cached):
        trainer.model.prompt_learner.load_state_dict(online.model.prompt_learner.state_dict())
    for epoch in (0, 1):
        (online_loss, cached_loss), batch = first_batch_losses((online, cached), epoch)
        assert float(online_loss) > 0
        assert torch.allclose(online_loss, cached_loss, rtol=5e-3, atol=1e-4), (epoch, online_loss, cached_loss)
        features = cached.cache.student_features(epoch, batch.index)
        with torch.no_grad():
            assert torch.allclose(features, online.model.encode_image(batch.images), atol=2e-3)
    # a run with other settings refuses the cache
    with pytest.raises(Exception, match="other settings"):
        run_train_py(data, str(tmp_path / "other"), "KDPL_CoOp", seed=2,
                     opts=opts + ["TRAINER.KDPL.TEACHER_CACHE", cache])


def test_one_cache_serves_every_kdpl_trainer(tmp_path, monkeypatch):
    """The teacher part depends on no student: a cache built by KDPL_CoOp trains KDPL_MaPLe (its targets equal the
    online run's on the same keyed views) and a rerun with another student LR, without building a teacher; the
    builder asked again by other trainers has nothing to do, and extends a cache to more epochs without redoing any."""
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: Dassl integration tests skipped")
    from datasets.synthetic import make_synthetic_dataset
    from tests.dassl_runs import ROOT, TINY_CFG, first_batch_losses, run_train_py
    from tools.build_teacher_cache import main as build_cache
    from trainers.core.teacher_cache import TeacherCacheError
    from trainers.kdpl import KDPLTrainer

    data = str(tmp_path / "data")
    make_synthetic_dataset(data, "eurosat", num_classes=4, per_class=5, size=40, seed=3)
    opts = ["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base"]
    cache = str(tmp_path / "cache")

    def builder(trainer, *extra):
        return build_cache(["--root", data, "--seed", "1", "--trainer", trainer, "--dataset-config-file",
                            os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"), "--config-file", TINY_CFG,
                            "--cache-dir", cache, "--output-dir", str(tmp_path / f"cfg_{trainer}"), *extra] + opts)

    builder("KDPL_CoOp", "--epochs", "1")
    meta = json.load(open(os.path.join(cache, "meta.json")))
    assert meta["epochs"] == 1 and not {"student", "logit_scale", "student_features"} & set(meta)
    (student_part,) = os.listdir(os.path.join(cache, "student"))
    assert student_part.startswith("tiny-vit.fp32.")
    one_epoch = ["OPTIM.MAX_EPOCH", "1", "TRAIN.CHECKPOINT_FREQ", "0"]
    online = run_train_py(data, str(tmp_path / "online"), "KDPL_MaPLe",
                          opts=opts + one_epoch + ["TRAINER.KDPL.VIEW_KEYED_AUG", "True"])

    def no_teacher(self):
        raise AssertionError("a teacher was built although the cache holds its rows")

    monkeypatch.setattr(KDPLTrainer, "build_online_teacher", no_teacher)
    cached = run_train_py(data, str(tmp_path / "cached"), "KDPL_MaPLe",
                          opts=opts + one_epoch + ["TRAINER.KDPL.TEACHER_CACHE", cache])
    assert cached.teacher is None and cached.cache.teacher is not None
    assert cached.cache.student is None  # MaPLe prompts its image tower: nothing of CoOp's student part applies
    cached.model.prompt_learner.load_state_dict(online.model.prompt_learner.state_dict())
    (online_loss, cached_loss), _ = first_batch_losses((online, cached), 0)
    assert float(online_loss) > 0
    assert torch.allclose(online_loss, cached_loss, rtol=5e-3, atol=1e-4), (online_loss, cached_loss)
    shard = os.path.join(cache, "epoch_000.rank000.pt")
    stamp = os.stat(shard).st_mtime_ns
    rerun = run_train_py(data, str(tmp_path / "rerun"), "KDPL_MaPLe",
                         opts=opts + one_epoch + ["TRAINER.KDPL.TEACHER_CACHE", cache, "OPTIM.LR", "0.01"])
    assert rerun.teacher is None and os.path.isfile(os.path.join(str(tmp_path / "rerun"), "results.json"))
    builder("KDPL_MaPLe", "--epochs", "1")
    builder("KDPL_CoCoOp", "--epochs", "1")  # CoCoOp's frozen tower is CoOp's: the same student part
    assert os.listdir(os.path.join(cache, "student")) == [student_part] and os.stat(shard).st_mtime_ns == stamp
    # a run training longer than the cache covers is refused; the builder extends the cache by the missing epoch
    with pytest.raises(TeacherCacheError, match="covers 1 epochs; this run trains 2"):
        run_train_py(data, str(tmp_path / "two"), "KDPL_MaPLe", opts=opts + ["TRAINER.KDPL.TEACHER_CACHE", cache])
    monkeypatch.undo()
    builder("KDPL_MaPLe")
    assert json.load(open(os.path.join(cache, "meta.json")))["epochs"] == 2
    assert os.path.isfile(os.path.join(cache, "epoch_001.rank000.pt")) and os.stat(shard).st_mtime_ns == stamp


def test_topk_cache_trains_with_finite_losses_and_ca_needs_k_max(tmp_path):
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: Dassl integration tests skipped")
    from datasets.synthetic import make_synthetic_dataset
    from tests.dassl_runs import ROOT, TINY_CFG, run_train_py
    from tools.build_teacher_cache import main as build_cache

    data = str(tmp_path / "data")
    make_synthetic_dataset(data, "eurosat", num_classes=6, per_class=4, size=40, seed=2)
    opts = ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]  # 3 base classes
    args = ["--root", data, "--seed", "1", "--trainer", "KDPL_CoOp", "--dataset-config-file",
            os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"), "--config-file", TINY_CFG]
    cache = str(tmp_path / "top1")
    build_cache(args + ["--cache-dir", cache, "TRAINER.KDPL.CACHE_TOPK", "1"] + opts)
    shard = torch.load(os.path.join(cache, "epoch_000.rank000.pt"), weights_only=True)
    assert shard["values"].shape[1] == 1 and shard["classes"].shape[1] == 1 and "residual" in shard
    # a rerun finds the cache complete and builds no teacher
    assert build_cache(args + ["--cache-dir", cache, "TRAINER.KDPL.CACHE_TOPK", "1"] + opts) == cache
    trainer = run_train_py(data, str(tmp_path / "run"), "KDPL_CoOp",
                           opts=opts + ["TRAINER.KDPL.TEACHER_CACHE", cache])  # NaN/Inf would abort the run
    assert trainer.teacher is None and os.path.isfile(os.path.join(str(tmp_path / "run"), "results.json"))
    # a differently configured rebuild into the same folder is refused instead of mixing shards
    with pytest.raises(Exception, match="other settings"):
        build_cache(args + ["--cache-dir", cache, "--seed", "2"] + opts)

    dictionary = tmp_path / "names.csv"
    dictionary.write_text("ClassName\n" + "\n".join(f"thing {i}" for i in range(12)) + "\n")
    with pytest.raises(ValueError, match="TRAINER.KDPL.CACHE_TOPK 4 < K_MAX 8"):
        build_cache(args + ["--cache-dir", str(tmp_path / "ca"), "TRAINER.KDPL.CACHE_TOPK", "4",
                            "TRAINER.KDPL.CLASS_AGNOSTIC", "True", "TRAINER.KDPL.K_MAX", "8",
                            "TRAINER.KDPL.CA_DICTIONARY", str(dictionary)] + opts)


def test_builder_shards_by_rank_like_torchrun(tmp_path, monkeypatch):
    """Two ranks (RANK / WORLD_SIZE as torchrun sets them) write disjoint shards whose union equals one process's."""
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: Dassl integration tests skipped")
    from datasets.synthetic import make_synthetic_dataset
    from tests.dassl_runs import ROOT, TINY_CFG
    from tools.build_teacher_cache import main as build_cache

    data = str(tmp_path / "data")
    make_synthetic_dataset(data, "eurosat", num_classes=4, per_class=5, size=40, seed=4)
    args = ["--root", data, "--seed", "1", "--trainer", "KDPL_CoOp", "--dataset-config-file",
            os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"), "--config-file", TINY_CFG, "--epochs", "1",
            "DATASET.NUM_SHOTS", "4"]
    single, sharded = str(tmp_path / "single"), str(tmp_path / "sharded")
    build_cache(args[:-2] + ["--cache-dir", single] + args[-2:])
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        build_cache(args[:-2] + ["--cache-dir", sharded, "--output-dir", str(tmp_path / f"cfg{rank}")] + args[-2:])
    parts = [torch.load(os.path.join(sharded, f"epoch_000.rank00{r}.pt"), weights_only=True) for r in (0, 1)]
    index = [set(p["index"].tolist()) for p in parts]
    assert not index[0] & index[1] and len(index[0] | index[1]) == 16
    one = TeacherCache(single, torch.device("cpu")).lookup(0, torch.arange(16))
    two = TeacherCache(sharded, torch.device("cpu")).lookup(0, torch.arange(16))
    assert torch.allclose(one, two, atol=2e-2) and float(one.abs().max()) > 0
    assert TeacherCache(sharded, torch.device("cpu")).meta["world_size"] == 2
