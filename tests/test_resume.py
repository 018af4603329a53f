"""Crash-safe, exactly resumable runs: a run SIGKILLed mid-epoch and rerun ends bit-identical (CPU) to an
uninterrupted one; damaged checkpoints and stale pointers never block a rerun; only the newest checkpoints are kept;
results.json adds timings over processes and records the true epoch; PromptSRC's GPA sum survives a resume."""
from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README): "
                                    "Dassl integration tests skipped")

from datasets.synthetic import make_synthetic_dataset  # noqa: E402
from tests.dassl_runs import ROOT, TINY_CFG, interrupt_at_epoch, run_killed, run_train_py  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py

# A shipped config (TRAIN.CHECKPOINT_FREQ left at Dassl's 0) shrunk to tiny CLIPs, 3 epochs of 3 steps; two loader
# workers, whose seeds come from torch's global generator. On the CPU (the bit-identical claim is for the CPU).
SHIPPED = os.path.join(ROOT, "configs", "trainers", "KDPL_CoOp", "vit_b32_ctxv1.yaml")
OPTS = ["USE_CUDA", "False", "MODEL.BACKBONE.NAME", "tiny-vit", "INPUT.SIZE", "(32,32)", "OPTIM.MAX_EPOCH", "3",
        "DATALOADER.NUM_WORKERS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "32",
        "TRAINER.KDPL.TEACHER", "tiny-vit-wide", "TRAINER.KDPL.TEACHER_BACKEND", "tiny",
        "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base"]
FOLDER = "prompt_learner"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(str(root), "eurosat", num_classes=5, per_class=6, size=32, seed=0)
    return str(root)


def run(data: str, out: str, opts=(), trainer: str = "KDPL_CoOp", config: str = SHIPPED, base_opts=OPTS):
    return run_train_py(data, out, trainer, config=config, opts=list(base_opts) + list(opts))


def state_of(trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.learnable().state_dict().items()}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def results(out: str) -> dict:
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def files(out: str, folder: str = FOLDER) -> set:
    return set(os.listdir(os.path.join(out, folder)))


def pointer(out: str, folder: str = FOLDER) -> str:
    with open(os.path.join(out, folder, "checkpoint")) as f:
        return f.read().strip()


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run: (output dir, final learnable tensors, results.json)."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    trainer = run(data, out)
    return out, state_of(trainer), results(out)


def test_sigkill_mid_epoch_then_rerun_ends_bit_identical(data, reference, tmp_path):
    ref_out, ref_state, ref_res = reference
    # every epoch saved by default, only the newest two kept, the pointer names the last
    assert files(ref_out) == {"checkpoint", "model.pth.tar-2", "model.pth.tar-3"}
    assert pointer(ref_out) == "model.pth.tar-3"
    assert ref_res["train_processes"] == 1 and not ref_res["resumed"] and not ref_res["eval_only"]

    out = str(tmp_path / "run")
    killed = run_killed(1, 1, data=data, out=out, trainer="KDPL_CoOp", config=SHIPPED, opts=OPTS)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "epoch [2/3] batch [1/3]" in killed.stdout and "epoch [2/3] batch [2/3]" not in killed.stdout  # mid-epoch
    assert files(out) == {"checkpoint", "model.pth.tar-1"} and not os.path.exists(os.path.join(out, "results.json"))
    first = load(os.path.join(out, FOLDER, "model.pth.tar-1"))["resume"]
    assert set(first["rng"]) == {"python", "numpy", "torch", "cuda"}

    trainer = run(data, out)  # the rerun restarts epoch 2 from the end of epoch 1
    assert trainer.start_epoch == 1
    assert_same_tensors(state_of(trainer), ref_state)
    res = results(out)
    for key in ("accuracy", "macro_f1", "error"):
        assert res[key] == ref_res[key], key
    mine, theirs = load(os.path.join(out, FOLDER, "model.pth.tar-3")), load(os.path.join(ref_out, FOLDER,
                                                                                         "model.pth.tar-3"))
    for k, v in theirs["optimizer"]["state"].items():  # SGD momentum buffers too
        assert torch.equal(mine["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"])
    # results.json: both processes' timings, the true epoch
    assert res["epoch"] == 3 and res["resumed"] and res["train_processes"] == 2 and not res["eval_only"]
    assert res["timings"]["epoch1_s"] == first["timings"]["epoch1_s"]  # from the killed process
    assert {"epoch1_s", "epoch2_s", "epoch3_s", "train_s", "teacher_build_s"} <= set(res["timings"])
    assert res["timings"]["teacher_build_s"] > first["timings"]["teacher_build_s"]  # built twice, both counted
    assert files(out) == {"checkpoint", "model.pth.tar-2", "model.pth.tar-3"}


def test_rerun_of_finished_run_records_true_epoch_and_adds_timings(data, reference, tmp_path):
    ref_out, _, ref_res = reference
    out = str(tmp_path / "run")
    shutil.copytree(ref_out, out)
    os.remove(os.path.join(out, "results.json"))  # killed between the last checkpoint and results.json
    saved = load(os.path.join(out, FOLDER, "model.pth.tar-3"))["resume"]["timings"]
    trainer = run(data, out)
    assert trainer.start_epoch == 3
    res = results(out)
    assert res["epoch"] == 3 and res["resumed"] and not res["eval_only"] and res["train_processes"] == 2
    assert res["accuracy"] == ref_res["accuracy"]
    for k in ("epoch1_s", "epoch2_s", "epoch3_s"):
        assert res["timings"][k] == ref_res["timings"][k]
    assert res["timings"]["train_s"] > saved["train_s"] and res["timings"]["teacher_build_s"] > saved["teacher_build_s"]


def test_damaged_checkpoints_and_stale_pointer_fall_back_and_complete(data, reference, tmp_path, capsys):
    ref_out, ref_state, ref_res = reference

    def unfinished(name: str) -> str:
        out = str(tmp_path / name)
        shutil.copytree(ref_out, out)
        os.remove(os.path.join(out, "results.json"))
        return out

    # (a) a truncated newest checkpoint, which the pointer names
    out = unfinished("truncated")
    newest = os.path.join(out, FOLDER, "model.pth.tar-3")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    trainer = run(data, out)
    log = capsys.readouterr().out
    assert f"Warning: {newest} cannot be loaded" in log and "now names model.pth.tar-2" in log
    assert trainer.start_epoch == 2
    assert_same_tensors(state_of(trainer), ref_state)
    assert results(out)["accuracy"] == ref_res["accuracy"] and pointer(out) == "model.pth.tar-3"

    # (b) a pointer naming a checkpoint that is gone
    out = unfinished("stale")
    os.remove(os.path.join(out, FOLDER, "model.pth.tar-3"))
    trainer = run(data, out)
    assert "named model.pth.tar-3; it now names model.pth.tar-2" in capsys.readouterr().out
    assert trainer.start_epoch == 2
    assert_same_tensors(state_of(trainer), ref_state)

    # (c) an empty model folder (a kill during the first save leaves at most a temporary file): from scratch, the
    # same result; TRAIN.KEEP_CHECKPOINTS 0 keeps every checkpoint
    out = str(tmp_path / "empty")
    os.makedirs(os.path.join(out, FOLDER))
    leftover = os.path.join(out, FOLDER, ".model.pth.tar-1.4242.0123abcd.tmp")
    with open(leftover, "wb") as f:
        f.write(b"PK\x03\x04 partial")
    trainer = run(data, out, ["TRAIN.KEEP_CHECKPOINTS", "0"])
    log = capsys.readouterr().out
    assert "no loadable checkpoint" in log and f"Removed {leftover}" in log
    assert trainer.start_epoch == 0
    assert_same_tensors(state_of(trainer), ref_state)
    assert files(out) == {"checkpoint", "model.pth.tar-1", "model.pth.tar-2", "model.pth.tar-3"}


def test_gpa_sum_survives_resume_with_explicit_checkpoint_freq(data, tmp_path, monkeypatch):
    from trainers.kdpl import KDPL_PromptSRC

    opts = ["USE_CUDA", "False", "OPTIM.MAX_EPOCH", "3", "TRAINER.PROMPTSRC.GPA_MEAN", "2",
            "TRAINER.PROMPTSRC.GPA_STD", "1", "TRAIN.CHECKPOINT_FREQ", "2", "DATASET.NUM_SHOTS", "4",
            "DATASET.SUBSAMPLE_CLASSES", "base"]
    folder = KDPL_PromptSRC.model_name
    reference_out = str(tmp_path / "reference")
    ref_state = state_of(run(data, reference_out, trainer="KDPL_PromptSRC", config=TINY_CFG, base_opts=opts))
    assert files(reference_out, folder) == {"checkpoint", "model.pth.tar-2", "model.pth.tar-3"}

    out = str(tmp_path / "run")
    original = interrupt_at_epoch(monkeypatch, KDPL_PromptSRC, 2)
    with pytest.raises(KeyboardInterrupt):
        run(data, out, trainer="KDPL_PromptSRC", config=TINY_CFG, base_opts=opts)
    assert files(out, folder) == {"checkpoint", "model.pth.tar-2"}  # CHECKPOINT_FREQ 2 is respected
    ckpt = load(os.path.join(out, folder, "model.pth.tar-2"))
    assert set(ckpt["resume"]["gpa_sum"]) == set(ckpt["state_dict"])  # epochs 1 and 2, weighted
    monkeypatch.setattr(KDPL_PromptSRC, "forward_backward", original)
    trainer = run(data, out, trainer="KDPL_PromptSRC", config=TINY_CFG, base_opts=opts)
    assert trainer.start_epoch == 2
    assert_same_tensors(state_of(trainer), ref_state)  # the GPA average of all three epochs
