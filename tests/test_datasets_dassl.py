"""Every registered dataset built through Dassl's DataManager from synthetic trees (skipped without Dassl)."""
from __future__ import annotations

import json
import os
import pickle
import random

import pytest

import _dataset_fixtures  # noqa: F401  (repository root on sys.path, outdated disabled)
from _dataset_fixtures import DOMAIN_CASES, make_cfg

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source: "
                                    "github.com/KaiyangZhou/Dassl.pytorch); the Dassl dataset layer is untested")

from dassl.data import DataManager  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum  # noqa: E402

import datasets  # noqa: E402
from datasets.cache import FewShotCacheError  # noqa: E402
from datasets.errors import DatasetError, DatasetNotFoundError  # noqa: E402
from datasets.dassl_base import register_dataset  # noqa: E402
from datasets.specs import SPECS  # noqa: E402
from datasets.synthetic import DOMAIN_LAYOUTS, make_synthetic_dataset, synthetic_classnames  # noqa: E402

SPEC_CASES = [(s.name, s.key) for s in SPECS] + [("ImageFolderDataset", "image_folder")] + \
    [(name, layout) for name, (layout, _) in DOMAIN_CASES.items()]


def build(cfg) -> DataManager:
    random.seed(cfg.SEED)  # what train.py's set_random_seed does before the dataset is built
    return DataManager(cfg)


def test_every_name_is_registered():
    names = set(DATASET_REGISTRY.registered_names())
    assert set(datasets.REGISTERED_NAMES) <= names
    assert len(datasets.REGISTERED_NAMES) == 20
    # re-registering the same class (double import) is a no-op instead of Dassl's KeyError
    cls = DATASET_REGISTRY.get("EuroSAT")
    assert register_dataset(cls) is cls and DATASET_REGISTRY.get("EuroSAT") is cls


@pytest.mark.parametrize("name,layout", SPEC_CASES)
def test_builds_through_datamanager(tmp_path, name, layout):
    n = None if layout in DOMAIN_LAYOUTS else 4  # domain sets use their whole fixed class list
    make_synthetic_dataset(tmp_path, layout, num_classes=n, per_class=4, size=16)
    dm = build(make_cfg(tmp_path, name))
    n_cls = n or len(DOMAIN_LAYOUTS[layout][0])
    expected_names = synthetic_classnames(layout, n_cls)
    assert dm.num_classes == n_cls
    assert dm.dataset.classnames == expected_names
    assert dm.lab2cname == dict(enumerate(expected_names))
    assert all(isinstance(d, Datum) and os.path.isfile(d.impath) for d in dm.dataset.test)
    batch = next(iter(dm.test_loader))
    assert tuple(batch["img"].shape[1:]) == (3, 32, 32)
    assert all(0 <= y < n_cls for y in batch["label"].tolist())
    if name == "ImageNet":
        assert dm.dataset.val is dm.dataset.test
    elif name.startswith("ImageNet"):
        assert dm.dataset.val is None and len(dm.dataset.test) == n_cls * 4


def test_few_shot_cache_written_at_coop_path_and_reused(tmp_path, capsys):
    make_synthetic_dataset(tmp_path, "eurosat", per_class=6)  # 6 train and 3 val images per class
    dm = build(make_cfg(tmp_path, "EuroSAT", num_shots=2, seed=3))
    cached = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_3.json"  # CoOp's name, written as JSON
    assert cached.is_file()
    data = json.loads(cached.read_text())
    assert set(data) == {"format", "train", "val"} and len(data["train"]) == 20 and len(data["val"]) == 20
    assert all(set(d) == {"impath", "label", "domain", "classname"} and os.path.isabs(d["impath"])
               for d in data["train"] + data["val"])
    assert [d["impath"] for d in data["train"]] == [d.impath for d in dm.dataset.train_x]
    capsys.readouterr()
    random.seed(12345)  # a different stream: the cached subset must still be used
    dm2 = DataManager(make_cfg(tmp_path, "EuroSAT", num_shots=2, seed=3))
    assert f"Loading preprocessed few-shot data from {cached}" in capsys.readouterr().out
    assert [d.impath for d in dm2.dataset.train_x] == [d.impath for d in dm.dataset.train_x]


def test_few_shot_matches_dassl_generate_fewshot_dataset(tmp_path):
    """Same seed -> the same subset as CoOp (Dassl's sampler on train, then on val with min(K, 4))."""
    make_synthetic_dataset(tmp_path, "dtd", num_classes=5, per_class=8)
    full = build(make_cfg(tmp_path, "DescribableTextures")).dataset
    ref = DatasetBase.__new__(DatasetBase)
    random.seed(7)
    ref_train = ref.generate_fewshot_dataset(full.train_x, num_shots=3)
    ref_val = ref.generate_fewshot_dataset(full.val, num_shots=min(3, 4))
    ours = build(make_cfg(tmp_path, "DescribableTextures", num_shots=3, seed=7)).dataset
    assert [d.impath for d in ours.train_x] == [d.impath for d in ref_train]
    assert [d.impath for d in ours.val] == [d.impath for d in ref_val]


def test_existing_coop_cache_is_reused(tmp_path):
    """A pickle written the way CoOp writes it (Datum objects, absolute paths) is loaded as is."""
    make_synthetic_dataset(tmp_path, "oxford_pets", num_classes=3, per_class=4)
    full = build(make_cfg(tmp_path, "OxfordPets")).dataset
    chosen = [Datum(impath=d.impath, label=d.label, classname=d.classname) for d in full.train_x[::4]]
    cache = tmp_path / "oxford_pets" / "split_fewshot"
    cache.mkdir()
    with open(cache / "shot_1-seed_1.pkl", "wb") as f:
        pickle.dump({"train": chosen, "val": chosen}, f, protocol=pickle.HIGHEST_PROTOCOL)
    ds = build(make_cfg(tmp_path, "OxfordPets", num_shots=1, seed=1)).dataset
    assert [d.impath for d in ds.train_x] == [d.impath for d in chosen]


def test_base_new_counts_and_names(tmp_path):
    make_synthetic_dataset(tmp_path, "stanford_cars", num_classes=7, per_class=4)
    names = synthetic_classnames("stanford_cars", 7)
    base = build(make_cfg(tmp_path, "StanfordCars", num_shots=2, subsample="base")).dataset
    new = build(make_cfg(tmp_path, "StanfordCars", num_shots=2, subsample="new")).dataset
    assert (base.num_classes, new.num_classes) == (4, 3)
    assert base.classnames == names[:4] and new.classnames == names[4:]
    assert len(base.train_x) == 8 and len(new.train_x) == 6  # 2 shots per class, sampled before the split
    assert {d.label for d in new.test} == {0, 1, 2} and len(new.test) == 3 * 2
    # the 16-shot base set is the base part of the all-class sample (protocols.md §2, "Order")
    every = build(make_cfg(tmp_path, "StanfordCars", num_shots=2)).dataset
    assert [d.impath for d in base.train_x] == [d.impath for d in every.train_x if d.label < 4]


def test_imagenet_cache_and_val_is_test(tmp_path, capsys):
    make_synthetic_dataset(tmp_path, "imagenet", num_classes=4, per_class=3)
    ds = build(make_cfg(tmp_path, "ImageNet", num_shots=2)).dataset
    assert ds.val is ds.test and len(ds.train_x) == 8
    fewshot = json.loads((tmp_path / "imagenet" / "split_fewshot" / "shot_2-seed_1.json").read_text())
    assert set(fewshot) == {"format", "train"}  # CoOp's ImageNet cache holds train only
    pre = json.loads((tmp_path / "imagenet" / "preprocessed.json").read_text())
    assert set(pre) == {"format", "train", "test"} and len(pre["train"]) == 12 and len(pre["test"]) == len(ds.test)
    capsys.readouterr()
    again = build(make_cfg(tmp_path, "ImageNet")).dataset
    assert "Loading preprocessed ImageNet lists" in capsys.readouterr().out and len(again.train_x) == 12


def test_read_only_dataset_folder_falls_back_to_output_dir(tmp_path, capsys):
    make_synthetic_dataset(tmp_path / "data", "eurosat", num_classes=2, per_class=3)
    (tmp_path / "data" / "eurosat" / "split_fewshot").write_text("blocked")  # cannot be created as a folder
    cfg = make_cfg(tmp_path / "data", "EuroSAT", num_shots=1)
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    build(cfg)
    fb = tmp_path / "out" / "data_cache" / "eurosat" / "split_fewshot" / "shot_1-seed_1.json"
    assert fb.is_file() and "fallback" in capsys.readouterr().out
    cfg2 = make_cfg(tmp_path / "data", "EuroSAT", num_shots=1, FEWSHOT_CACHE_DIR=str(tmp_path / "cachedir"))
    build(cfg2)
    assert (tmp_path / "cachedir" / "eurosat" / "split_fewshot" / "shot_1-seed_1.json").is_file()


def test_moved_data_root_with_old_cache_gives_clear_error(tmp_path):
    make_synthetic_dataset(tmp_path / "a", "eurosat", num_classes=2, per_class=3)
    build(make_cfg(tmp_path / "a", "EuroSAT", num_shots=1))
    os.rename(tmp_path / "a", tmp_path / "b")  # $DATA moved: the cached absolute paths are stale
    cached = tmp_path / "b" / "eurosat" / "split_fewshot" / "shot_1-seed_1.json"
    with pytest.raises(FewShotCacheError, match=f"{tmp_path / 'a'}.*Delete {cached}"):
        build(make_cfg(tmp_path / "b", "EuroSAT", num_shots=1))


def test_missing_images_and_folders_are_explained(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "caltech-101")):
        build(make_cfg(tmp_path, "Caltech101"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "pacs")):  # no Google Drive download attempt
        build(make_cfg(tmp_path, "PACSNamed"))
    make_synthetic_dataset(tmp_path, "food101", num_classes=2, per_class=2)
    victim = sorted((tmp_path / "food-101" / "images").rglob("*.jpg"))[0]
    victim.unlink()
    with pytest.raises(DatasetNotFoundError, match=f"1 of 8 image files.*{victim}"):
        build(make_cfg(tmp_path, "Food101"))


def test_pacs_label_order_is_checked(tmp_path):
    make_synthetic_dataset(tmp_path, "pacs", per_class=1)
    split = tmp_path / "pacs" / "splits" / "photo_train_kfold.txt"
    lines = split.read_text().splitlines()
    path0, _ = lines[0].rsplit(" ", 1)
    lines[0] = f"{path0} 2"  # a dog image labelled as class 2 (elephant)
    split.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="label order"):
        build(make_cfg(tmp_path, "PACSNamed"))


def test_domain_datasets_domains_and_few_shot_tag(tmp_path):
    make_synthetic_dataset(tmp_path, "imageclef_da", per_class=3)
    cfg = make_cfg(tmp_path, "ImageCLEFDA", num_shots=2, subsample="base")
    ds = build(cfg).dataset
    assert ds.num_classes == 6 and ds.classnames == ["aeroplane", "bike", "bird", "boat", "bottle", "bus"]
    assert len(ds.train_x) == 12 and {d.domain for d in ds.test} == {0, 1} and len(ds.test) == 2 * 6 * 3
    assert (tmp_path / "image_clef" / "split_fewshot" / "shot_2-seed_1-src_c.json").is_file()


def test_subsample_value_is_validated(tmp_path):
    make_synthetic_dataset(tmp_path, "eurosat", num_classes=2, per_class=2)
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        build(make_cfg(tmp_path, "EuroSAT", subsample="novel"))
