"""The protocol scripts for real: train, test base and new, skip, resume, and the results table (tiny CLIPs, CPU)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README): "
                                    "Dassl integration tests skipped")

from datasets.synthetic import make_synthetic_dataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The reference yamls with tiny models and one epoch on top (as a user would shrink a run).
TINY_KDPL = ("MODEL.BACKBONE.NAME tiny-vit INPUT.SIZE (32,32) OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 "
             "DATALOADER.TRAIN_X.BATCH_SIZE 4 DATALOADER.TEST.BATCH_SIZE 32 TRAINER.KDPL.TEACHER tiny-vit-wide "
             "TRAINER.KDPL.TEACHER_BACKEND tiny TRAINER.VPT.PROMPT_DEPTH_VISION 2 TRAINER.MAPLE.PROMPT_DEPTH 2 "
             "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 2 TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 2 "
             "TRAINER.PROMPTSRC.GPA_MEAN 1 TRAINER.PROMPTSRC.GPA_STD 1")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(str(root), "eurosat", num_classes=4, per_class=4, size=32, seed=3)
    return str(root)


def bash(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", **env}
    done = subprocess.run(["bash", script, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("trainer", ["KDPL_CoOp", "KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe", "KDPL_PromptSRC"])
def test_kdpl_base2new_script(trainer, data, tmp_path):
    out = str(tmp_path / "output")
    env = dict(DATA=data, OUTPUT=out, SHOTS="2", TRAINER=trainer, EXTRA_OPTS=TINY_KDPL)
    bash("scripts/kdpl/base2new.sh", "eurosat", "1", **env)
    cfg = {"KDPL_CoOp": "vit_b32_ctxv1", "KDPL_CoCoOp": "vit_b32_c4_ep10_batch1_ctxv1",
           "KDPL_VPT": "vit_b32_c2_ep5_batch4_4", "KDPL_MaPLe": "vit_b32_c2_ep5_batch4_2ctx",
           "KDPL_PromptSRC": "vit_b32_c2_ep20_batch4_4+4ctx"}[trainer]
    tail = f"eurosat/shots_2/{trainer}/{cfg}/seed1"
    train_dir = os.path.join(out, "base2new", "train_base", tail)
    assert os.path.isfile(os.path.join(train_dir, "log.txt"))
    assert os.path.isdir(os.path.join(train_dir, "tensorboard"))
    for phase, classes in (("test_base", 2), ("test_new", 2)):
        res = read(os.path.join(out, "base2new", phase, tail, "results.json"))
        assert res["trainer"] == trainer and res["num_classes"] == classes and res["eval_only"]
    again = bash("scripts/kdpl/base2new.sh", "eurosat", "1", **env)
    assert again.stdout.count("skip: results exist") == 3
    table = subprocess.run([sys.executable, "-m", "tools.results", os.path.join(out, "base2new")], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "| EuroSAT |" in table.stdout and f"{trainer} / {cfg}" in table.stdout


def test_kdpl_resume_and_class_agnostic_through_scripts(data, tmp_path):
    out = str(tmp_path / "output")
    dictionary = tmp_path / "names.csv"
    dictionary.write_text("ClassName\n" + "\n".join(f"thing {i}" for i in range(12)) + "\nforest\nriver\n")
    env = dict(DATA=data, OUTPUT=out, SHOTS="2", CA="1", TRAINER="KDPL_CoOp",
               EXTRA_OPTS=TINY_KDPL.replace("OPTIM.MAX_EPOCH 1", "OPTIM.MAX_EPOCH 2")
               + f" TRAIN.CHECKPOINT_FREQ 1 TRAINER.KDPL.K_MAX 4 TRAINER.KDPL.CA_DICTIONARY {dictionary}")
    bash("scripts/kdpl/base2new_train.sh", "eurosat", "1", **env)
    train_dir = os.path.join(out, "base2new/train_base/eurosat/shots_2/KDPL_CoOp-CA/vit_b32_ctxv1/seed1")
    # interrupted after epoch 1: the run dir has no results.json and no last checkpoint
    os.remove(os.path.join(train_dir, "results.json"))
    os.remove(os.path.join(train_dir, "prompt_learner", "model.pth.tar-2"))
    with open(os.path.join(train_dir, "prompt_learner", "checkpoint"), "w") as f:  # Dassl's pointer to the last one
        f.write("model.pth.tar-1\n")
    shutil.move(os.path.join(train_dir, "log.txt"), os.path.join(train_dir, "log.old"))
    resumed = bash("scripts/kdpl/base2new_train.sh", "eurosat", "1", **env)
    assert "resume:" in resumed.stdout
    log = open(os.path.join(train_dir, "log.txt")).read()
    assert "Found checkpoint" in log and "epoch [2/2]" in log and "epoch [1/2]" not in log
    bash("scripts/kdpl/base2new_test.sh", "eurosat", "1", **env)
    res = read(os.path.join(out, "base2new/test_new/eurosat/shots_2/KDPL_CoOp-CA/vit_b32_ctxv1/seed1/results.json"))
    assert res["regime"]["class_names"].startswith("none") and res["num_classes"] == 2


def test_promptkd_teacher_then_student_through_scripts(data, tmp_path):
    out = str(tmp_path / "output")
    env = dict(DATA=data, OUTPUT=out, TEACHER_CFG="tiny_vit_wide_ep2_cpu", CFG="tiny_vit_ep2_cpu",
               TEACHER_SHOTS="2")
    bash("scripts/promptkd/teacher_train.sh", "eurosat", "1", **env)
    cache_root = str(tmp_path / "cache")  # the student trains from an offline teacher cache the script builds
    bash("scripts/promptkd/base2new.sh", "eurosat", "1", TEACHER_CACHE_ROOT=cache_root, **env)
    tail = "eurosat/shots_0/PromptKD/tiny_vit_ep2_cpu/seed1"
    cache_dir = os.path.join(cache_root, "base2new", "train_base", tail)
    assert read(os.path.join(cache_dir, "meta.json"))["kind"] == "teacher_features"
    trained = read(os.path.join(out, "base2new", "train_base", tail, "results.json"))
    assert trained["teacher"]["teacher_cache"] == cache_dir
    base = read(os.path.join(out, "base2new", "test_base", tail, "results.json"))
    new = read(os.path.join(out, "base2new", "test_new", tail, "results.json"))
    assert base["num_classes"] == 2 and new["num_classes"] == 2
    table = subprocess.run([sys.executable, "-m", "tools.results", os.path.join(out, "base2new")], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "PromptKD / tiny_vit_ep2_cpu" in table.stdout and "| EuroSAT |" in table.stdout


def test_dfkd_four_modes_through_scripts_print_the_comparison(tmp_path):
    data = str(tmp_path / "data")
    make_synthetic_dataset(data, "pacs", num_classes=3, per_class=2, size=32, seed=4)
    out = str(tmp_path / "output")
    done = bash("scripts/dfkd/compare_modes.sh", "pacs", "1", DATA=data, OUTPUT=out, CFG="tiny_cpu")
    for trainer in ("DFKD_Handcrafted", "DFKD_Mix", "DFKD_Random", "DFKD_Contrastive"):
        res = read(os.path.join(out, "dfkd", "pacs", trainer, "tiny_cpu", "seed1", "results.json"))
        assert set(res["domains"]) == {"art_painting", "cartoon", "photo", "sketch"}
        assert trainer in done.stdout.split("### dfkd")[-1]
    synthetic = os.listdir(os.path.join(out, "dfkd_synthetic"))
    assert len(synthetic) == 4  # one cached synthetic set per prompt mode
