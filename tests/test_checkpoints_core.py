"""trainers.core.checkpoints without Dassl: atomic files, pruning, the newest loadable checkpoint, random states that
survive ``torch.load(weights_only=True)``, and timings added over processes."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from trainers.core.checkpoints import (atomic_torch_save, atomic_write, atomic_write_json, capture_rng_state,
                                       checkpoint_epochs, merge_timings, newest_loadable, prune_checkpoints,
                                       read_pointer, remove_stale_temp_files, restore_rng_state, write_pointer)


def ckpt(epoch: int) -> dict:
    return {"state_dict": {"w": torch.full((2,), float(epoch))}, "epoch": epoch}


def load(path: str):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / "results.json")
    atomic_write_json(path, {"accuracy": 1.5})

    def failing(f):
        f.write(b'{"accuracy": 2')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, failing)
    assert open(path).read() == '{\n  "accuracy": 1.5\n}' and os.listdir(tmp_path) == ["results.json"]


def test_remove_stale_temp_files_touches_only_our_temporaries(tmp_path):
    for name in (".model.pth.tar-3.123.0a1b2c3d.tmp", "model.pth.tar-3", ".hidden", "notes.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temp_files(str(tmp_path)) == [str(tmp_path / ".model.pth.tar-3.123.0a1b2c3d.tmp")]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "model.pth.tar-3", "notes.tmp"]


def test_prune_keeps_the_newest_and_never_later_or_best_files(tmp_path):
    for epoch in (1, 2, 3, 4, 9):
        atomic_torch_save(ckpt(epoch), str(tmp_path / f"model.pth.tar-{epoch}"))
    (tmp_path / "model-best.pth.tar").write_bytes(b"best")
    removed = prune_checkpoints(str(tmp_path), newest=4, keep=2)
    assert sorted(os.path.basename(p) for p in removed) == ["model.pth.tar-1", "model.pth.tar-2"]
    assert checkpoint_epochs(str(tmp_path)) == [9, 4, 3] and (tmp_path / "model-best.pth.tar").exists()
    assert prune_checkpoints(str(tmp_path), newest=4, keep=0) == []  # 0 keeps everything


def test_newest_loadable_skips_truncated_and_mismatched_files(tmp_path):
    folder = tmp_path / "prompt_learner"
    for epoch in (1, 2, 3):
        atomic_torch_save(ckpt(epoch), str(folder / f"model.pth.tar-{epoch}"))
    newest = folder / "model.pth.tar-3"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    atomic_torch_save(ckpt(5), str(folder / "model.pth.tar-2"))  # renamed file: holds epoch 5
    epoch, loaded, warnings = newest_loadable({"m": str(folder)}, load)
    assert epoch == 1 and torch.equal(loaded["m"]["state_dict"]["w"], torch.ones(2))
    assert len(warnings) == 2 and "model.pth.tar-3 cannot be loaded" in warnings[0] and "epoch 5" in warnings[1]
    assert newest_loadable({"m": str(tmp_path / "empty")}, load) == (None, {}, [])


def test_newest_loadable_needs_the_epoch_in_every_model_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for epoch in (1, 2):
        atomic_torch_save(ckpt(epoch), str(a / f"model.pth.tar-{epoch}"))
    atomic_torch_save(ckpt(1), str(b / "model.pth.tar-1"))
    epoch, loaded, warnings = newest_loadable({"a": str(a), "b": str(b)}, load)
    assert epoch == 1 and set(loaded) == {"a", "b"} and "model.pth.tar-2 is missing" in warnings[0]


def test_pointer_round_trip(tmp_path):
    assert read_pointer(str(tmp_path)) is None
    write_pointer(str(tmp_path), "model.pth.tar-4")
    assert read_pointer(str(tmp_path)) == "model.pth.tar-4"
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-4\n"  # Dassl's format


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in NumPy's state
    random.gauss(0, 1)
    path = str(tmp_path / "rng.pt")
    atomic_torch_save({"rng": capture_rng_state()}, path)
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.randint(1 << 30),
                torch.rand(3), torch.randperm(10))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    assert restore_rng_state(load(path)["rng"]) == []
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.randint(1 << 30),
           torch.rand(3), torch.randperm(10))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4]) and torch.equal(got[5], expected[5])


def test_merge_timings_adds_totals_and_keeps_each_epoch_once():
    prior = {"epoch1_s": 2.0, "epoch2_s": 3.0, "train_s": 6.0, "teacher_build_s": 1.0}
    current = {"epoch2_s": 3.5, "epoch3_s": 4.0, "train_s": 8.0, "teacher_build_s": 1.5}
    assert merge_timings(prior, current) == {"epoch1_s": 2.0, "epoch2_s": 3.5, "epoch3_s": 4.0, "train_s": 14.0,
                                             "teacher_build_s": 2.5}
