"""Shots actually used: a class shorter than NUM_SHOTS is warned at sampling and recorded as ``shots_used``.

Dassl's few-shot sampler keeps every image of a short class, so "16-shot" on a dataset with 8 images per class
trains on 8; the dataset says so, results.json records it and the results table flags the run.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

import _dataset_fixtures  # noqa: F401  (repository root on sys.path)
from datasets.items import Item
from datasets.sampling import sample_few_shot, shots_used
from datasets.synthetic import make_synthetic_dataset
from trainers.core.shots import shots_used_record


def items(sizes: dict[str, int]) -> list[Item]:
    return [Item(f"/x/{name}_{i}.jpg", label, name) for label, (name, n) in enumerate(sizes.items()) for i in range(n)]


def test_shots_used_names_the_short_classes(capsys: pytest.CaptureFixture[str]) -> None:
    sampled = sample_few_shot(items({"forest": 20, "river": 8, "sea": 3}), 16, rng=random.Random(0))
    assert shots_used(sampled, 16, "EuroSAT") == {"min": 3, "max": 16}
    out = capsys.readouterr().out
    assert "WARNING: EuroSAT: DATASET.NUM_SHOTS is 16 but 2 of 3 classes have fewer" in out
    assert "river (8), sea (3)" in out and "forest" not in out and "3-16 images per class" in out


def test_full_data_and_enough_images_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    data = items({"forest": 5, "river": 3})
    assert shots_used(data, -1, "EuroSAT") == {"min": 3, "max": 5}  # full data: nothing was asked
    assert shots_used(sample_few_shot(data, 2, rng=random.Random(0)), 2, "EuroSAT") == {"min": 2, "max": 2}
    assert capsys.readouterr().out == ""


def test_record_prefers_the_dataset_value_and_counts_a_fork_dataset() -> None:
    ours = SimpleNamespace(dataset=SimpleNamespace(shots_used={"min": 3, "max": 16}, train_x=[]))
    assert shots_used_record(ours) == {"min": 3, "max": 16}
    fork = SimpleNamespace(dataset=SimpleNamespace(train_x=[SimpleNamespace(label=y) for y in (0, 0, 1, 2, 2, 2)]))
    assert shots_used_record(fork) == {"min": 1, "max": 3}
    assert shots_used_record(None) is None


# ------------------------------------------------------------------------------------------------- through Dassl


def _trim_class(folder: str, label: int, keep: int) -> None:
    """Leave ``keep`` training images of class ``label`` in the split JSON (a class shorter than the others)."""
    path = os.path.join(folder, "split_zhou_EuroSAT.json")
    split = json.load(open(path))
    ours = [it for it in split["train"] if it[1] == label]
    split["train"] = [it for it in split["train"] if it[1] != label] + ours[:keep]
    json.dump(split, open(path, "w"))


def test_dataset_records_and_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: the Dassl dataset layer is untested")
    from dassl.data import DataManager

    from _dataset_fixtures import make_cfg

    folder = make_synthetic_dataset(str(tmp_path), "eurosat", num_classes=4, per_class=8, size=16)
    _trim_class(folder, 2, 3)
    random.seed(1)
    dm = DataManager(make_cfg(tmp_path, "EuroSAT", num_shots=6, seed=1))
    assert dm.dataset.shots_used == {"min": 3, "max": 6}
    out = capsys.readouterr().out
    assert "WARNING: EuroSAT: DATASET.NUM_SHOTS is 6 but 1 of 4 classes have fewer training images" in out
    assert "Herbaceous Vegetation Land (3)" in out


def test_results_json_records_shots_used_and_table_flags_it(tmp_path: Path, single_thread) -> None:
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: Dassl integration tests skipped")
    from tests.dassl_runs import run_train_py
    from tools import results as R

    data = tmp_path / "data"
    make_synthetic_dataset(str(data), "eurosat", num_classes=3, per_class=8, size=32)
    out = tmp_path / "output" / "eurosat" / "KDPL_CoOp" / "tiny_16shots" / "seed1"  # the few-shot layout
    run_train_py(str(data), str(out), "KDPL_CoOp", opts=["DATASET.NUM_SHOTS", "16", "OPTIM.MAX_EPOCH", "1"])
    record = json.loads((out / "results.json").read_text())
    assert record["num_shots"] == 16 and record["shots_used"] == {"min": 8, "max": 8}
    (table,), _ = R.build_tables(tmp_path / "output", "fewshot")
    assert table.rows[0]["shots_used_min"] == 8 and " †" in table.markdown
    assert any("asked for 16 shots but trained on 8-8 images per class" in w for w in table.warnings)
