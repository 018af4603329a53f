"""Dataset parsing, splits, few-shot, caches and synthetic trees, without Dassl (datasets.readers & co.)."""
from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import _dataset_fixtures  # noqa: F401  (repository root on sys.path)
from datasets.cache import (FewShotCacheError, atomic_write_bytes, cache_dirs, cached_few_shot, encode_item_lists,
                            fallback_root, fewshot_cache_name, find_cached, load_cache, load_pickle, write_cache)
from datasets.config import DATASET_DEFAULTS, add_dataset_config, dataset_option
from datasets.domain_readers import check_label_names, read_image_folder, read_imageclef
from datasets.errors import DatasetError, DatasetNotFoundError, SplitGenerationError
from datasets.items import Item
from datasets.readers import read_benchmark
from datasets.sampling import base_new_labels, few_shot_splits, sample_few_shot, subsample_classes
from datasets.specs import HF_REUPLOAD, IMAGECLEF_CLASSNAMES, SPECS, SPECS_BY_KEY, get_spec
from datasets.synthetic import LAYOUTS, main as synthetic_main, make_synthetic_dataset, synthetic_classnames

JSON_KEYS = [s.key for s in SPECS if s.kind == "split_json"]


# ------------------------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------------------------
def test_spec_table_matches_protocol():
    expected = {  # key: (NAME, folder, classes, base m) from protocols.md §1 and §3
        "imagenet": ("ImageNet", "imagenet", 1000, 500), "caltech101": ("Caltech101", "caltech-101", 100, 50),
        "oxford_pets": ("OxfordPets", "oxford_pets", 37, 19),
        "stanford_cars": ("StanfordCars", "stanford_cars", 196, 98),
        "oxford_flowers": ("OxfordFlowers", "oxford_flowers", 102, 51), "food101": ("Food101", "food-101", 101, 51),
        "fgvc_aircraft": ("FGVCAircraft", "fgvc_aircraft", 100, 50), "sun397": ("SUN397", "sun397", 397, 199),
        "dtd": ("DescribableTextures", "dtd", 47, 24), "eurosat": ("EuroSAT", "eurosat", 10, 5),
        "ucf101": ("UCF101", "ucf101", 101, 51), "imagenetv2": ("ImageNetV2", "imagenetv2", 1000, 500),
        "imagenet_sketch": ("ImageNetSketch", "imagenet-sketch", 1000, 500),
        "imagenet_a": ("ImageNetA", "imagenet-adversarial", 200, 100),
        "imagenet_r": ("ImageNetR", "imagenet-rendition", 200, 100),
    }
    assert {s.key: (s.name, s.folder, s.num_classes, s.base_count) for s in SPECS} == expected
    assert get_spec("eurosat") is get_spec("EuroSAT")
    assert SPECS_BY_KEY["stanford_cars"].split_relative_to == "folder"
    for key in ("imagenet", "oxford_pets") + tuple(JSON_KEYS):
        assert os.path.isfile(os.path.join(_dataset_fixtures.ROOT, "configs", "datasets", f"{key}.yaml"))
    for s in SPECS:
        with open(os.path.join(_dataset_fixtures.ROOT, "configs", "datasets", f"{s.key}.yaml")) as f:
            assert f'NAME: "{s.name}"' in f.read()


# ------------------------------------------------------------------------------------------------------------------
# Parsing every layout from synthetic trees
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", JSON_KEYS)
def test_split_json_layouts(tmp_path, key):
    spec = SPECS_BY_KEY[key]
    folder = make_synthetic_dataset(tmp_path, key, num_classes=5, per_class=4)
    assert folder == str(tmp_path / spec.folder)
    splits = read_benchmark(spec, str(tmp_path))
    assert [len(splits.train), len(splits.val), len(splits.test)] == [20, 10, 10]
    names = synthetic_classnames(key, 5)
    for items in splits.as_tuple():
        assert sorted({it.label for it in items}) == [0, 1, 2, 3, 4]
        assert all(it.classname == names[it.label] for it in items)
        assert all(os.path.isabs(it.impath) and os.path.isfile(it.impath) for it in items)
    with open(os.path.join(folder, spec.split_file)) as f:
        rel = json.load(f)["test"][0][0]
    if key == "stanford_cars":  # relative to the dataset folder, not an image dir
        assert rel.startswith("cars_test/")
        assert splits.test[0].impath == os.path.join(folder, rel)
    else:
        assert splits.test[0].impath == os.path.join(folder, spec.image_dir, rel)


def test_eurosat_synthetic_uses_real_names(tmp_path):
    make_synthetic_dataset(tmp_path, "eurosat")
    splits = read_benchmark(get_spec("EuroSAT"), str(tmp_path))
    assert splits.train[0].classname == "Annual Crop Land"
    assert "/2750/AnnualCrop/" in splits.train[0].impath
    assert len({it.label for it in splits.train}) == 10


def test_fgvc_aircraft(tmp_path):
    make_synthetic_dataset(tmp_path, "fgvc_aircraft", num_classes=3, per_class=2)
    splits = read_benchmark(get_spec("fgvc_aircraft"), str(tmp_path))
    with open(tmp_path / "fgvc_aircraft" / "variants.txt") as f:
        variants = [line.strip() for line in f]
    assert [len(x) for x in splits.as_tuple()] == [6, 3, 3]
    assert all(it.classname == variants[it.label] for it in splits.train)
    assert all(os.path.dirname(it.impath) == str(tmp_path / "fgvc_aircraft" / "images") for it in splits.test)


def test_imagenet_labels_and_val_is_test(tmp_path):
    make_synthetic_dataset(tmp_path, "imagenet", num_classes=4, per_class=2)
    splits = read_benchmark(get_spec("imagenet"), str(tmp_path))
    assert splits.val is splits.test  # the official val set is the test set (never select on it)
    folders = sorted(os.listdir(tmp_path / "imagenet" / "images" / "train"))
    assert all(os.path.basename(os.path.dirname(it.impath)) == folders[it.label] for it in splits.train)
    assert [it.classname for it in splits.test[::1]][:1] == [synthetic_classnames("imagenet", 4)[0]]
    assert (len(splits.train), len(splits.test)) == (8, 4)


def test_imagenet_val_without_class_folders_is_explained(tmp_path):
    make_synthetic_dataset(tmp_path, "imagenet", num_classes=2, per_class=1)
    val = tmp_path / "imagenet" / "images" / "val"
    for d in list(val.iterdir()):
        for f in d.iterdir():
            f.rename(val / f.name)
        d.rmdir()
    with pytest.raises(DatasetError, match="class folders.*CoOp#60"):
        read_benchmark(get_spec("imagenet"), str(tmp_path))


@pytest.mark.parametrize("key", ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"])
def test_imagenet_variants(tmp_path, key):
    make_synthetic_dataset(tmp_path, key, num_classes=4, per_class=2)
    spec = SPECS_BY_KEY[key]
    splits = read_benchmark(spec, str(tmp_path))
    assert splits.val == [] and splits.train is splits.test and len(splits.test) == 8
    assert sorted({it.label for it in splits.test}) == [0, 1, 2, 3]
    names = synthetic_classnames(key, 4)
    assert [next(it.classname for it in splits.test if it.label == k) for k in range(4)] == names
    if key == "imagenetv2":
        assert all(os.path.basename(os.path.dirname(it.impath)) == str(it.label) for it in splits.test)
    if key in ("imagenet_a", "imagenet_r"):  # classnames.txt lists 8 wnids; the 4 folders are relabelled 0..3
        with open(tmp_path / spec.folder / "classnames.txt") as f:
            assert len(f.readlines()) == 8


def test_imageclef_lists(tmp_path):
    make_synthetic_dataset(tmp_path, "imageclef_da", per_class=2)
    items = read_imageclef(str(tmp_path / "image_clef"), ["p", "c"])
    assert len(items) == 2 * 12 * 2
    assert {it.domain for it in items if "/p/" in it.impath} == {0}
    assert {it.domain for it in items if "/c/" in it.impath} == {1}
    assert all(it.classname == IMAGECLEF_CLASSNAMES[it.label] for it in items)
    with pytest.raises(ValueError, match="domain"):
        read_imageclef(str(tmp_path / "image_clef"), ["x"])


def test_image_folder_split_layout_and_flat_layout(tmp_path):
    make_synthetic_dataset(tmp_path, "image_folder", num_classes=3, per_class=4)
    s = read_image_folder(str(tmp_path / "image_folder"))
    assert [len(x) for x in s.as_tuple()] == [12, 6, 6]
    assert [it.classname for it in s.train[::4]] == ["apple", "bicycle", "castle"]

    flat = make_synthetic_dataset(tmp_path, "image_folder_flat", num_classes=3, per_class=6)  # 12 per class
    with open(os.path.join(flat, "classnames.txt"), "w") as f:
        f.write("apple red apple\n")
    a = read_image_folder(flat, split_seed=3)
    b = read_image_folder(flat, split_seed=3)
    c = read_image_folder(flat, split_seed=4)
    assert [len(x) for x in a.as_tuple()] == [18, 6, 12]  # 50/20/30 of 12 per class (round: 6, 2, 4)
    assert [it.impath for it in a.train] == [it.impath for it in b.train]
    assert [it.impath for it in a.train] != [it.impath for it in c.train]
    assert {it.classname for it in a.train} == {"red apple", "bicycle", "castle"}
    os.makedirs(os.path.join(flat, "split_fewshot"))  # the few-shot cache folder is not a class
    assert {it.label for it in read_image_folder(flat).train} == {0, 1, 2}


def test_check_label_names():
    good = [Item("/x/dog/1.jpg", 0), Item("/x/elephant/2.jpg", 1), Item("/x/3/2.jpg", 2)]
    check_label_names(good, ["dog", "elephant", "giraffe"], "PACS")
    with pytest.raises(DatasetError, match="label order"):
        check_label_names([Item("/x/elephant/1.jpg", 0)], ["dog", "elephant"], "PACS")


# ------------------------------------------------------------------------------------------------------------------
# Errors that name paths
# ------------------------------------------------------------------------------------------------------------------
def test_missing_dataset_folder_names_path_and_sources(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        read_benchmark(get_spec("OxfordPets"), str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "oxford_pets") in msg and str(tmp_path) in msg
    assert "DATASETS.md" in msg and HF_REUPLOAD in msg and "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs" in msg


def test_missing_image_dir_and_split_json(tmp_path):
    (tmp_path / "eurosat").mkdir()
    with pytest.raises(DatasetNotFoundError, match="image directory.*" + str(tmp_path / "eurosat" / "2750")):
        read_benchmark(get_spec("EuroSAT"), str(tmp_path))
    (tmp_path / "eurosat" / "2750").mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        read_benchmark(get_spec("EuroSAT"), str(tmp_path))
    assert str(tmp_path / "eurosat" / "split_zhou_EuroSAT.json") in str(e.value)
    assert "drive.google.com" in str(e.value)


def test_missing_classnames_txt(tmp_path):
    make_synthetic_dataset(tmp_path, "imagenet_sketch", num_classes=2, per_class=1)
    os.remove(tmp_path / "imagenet-sketch" / "classnames.txt")
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "imagenet-sketch" / "classnames.txt")) as e:
        read_benchmark(get_spec("ImageNetSketch"), str(tmp_path))
    assert "copy $DATA/imagenet/classnames.txt" in str(e.value)


def test_split_generation_only_behind_flag_seeded(tmp_path, capsys):
    for r in ("a", "b"):
        make_synthetic_dataset(tmp_path / r, "dtd", num_classes=3, per_class=4)  # 8 images per class
        os.remove(tmp_path / r / "dtd" / "split_zhou_DescribableTextures.json")
    spec = get_spec("dtd")
    with pytest.raises(DatasetNotFoundError):
        read_benchmark(spec, str(tmp_path / "a"))
    state = random.getstate()
    a = read_benchmark(spec, str(tmp_path / "a"), generate_split=True, split_seed=5)
    assert random.getstate() == state  # the global stream (few-shot sampling) is untouched
    assert "GENERATING" in capsys.readouterr().out
    b = read_benchmark(spec, str(tmp_path / "b"), generate_split=True, split_seed=5)
    rel = lambda items, r: [os.path.relpath(it.impath, tmp_path / r) for it in items]  # noqa: E731
    assert rel(a.train, "a") == rel(b.train, "b") and [len(x) for x in a.as_tuple()] == [12, 6, 6]
    written = tmp_path / "a" / "dtd" / "split_zhou_DescribableTextures.json"
    assert written.is_file()
    again = read_benchmark(spec, str(tmp_path / "a"))  # now read from the written file
    assert [it.impath for it in again.test] == [it.impath for it in a.test]
    make_synthetic_dataset(tmp_path / "c", "oxford_pets", num_classes=2, per_class=2)
    os.remove(tmp_path / "c" / "oxford_pets" / "split_zhou_OxfordPets.json")
    with pytest.raises(SplitGenerationError, match="not supported"):
        read_benchmark(get_spec("oxford_pets"), str(tmp_path / "c"), generate_split=True)


# ------------------------------------------------------------------------------------------------------------------
# Base / new
# ------------------------------------------------------------------------------------------------------------------
def _items(labels, domain=0):
    return [Item(f"/img/{i}_{y}.jpg", y, f"c{y}", domain) for i, y in enumerate(labels)]


def test_subsample_odd_37_classes():
    labels = list(range(37))
    random.Random(0).shuffle(labels)  # first-seen order must not matter: labels are sorted
    train, test = _items(labels * 2), _items(labels)
    b_train, b_test = subsample_classes(train, test, subsample="base")
    n_train, n_test = subsample_classes(train, test, subsample="new")
    assert sorted({it.label for it in b_train}) == list(range(19))
    assert sorted({it.label for it in n_train}) == list(range(18))
    assert len(b_test) == 19 and len(n_test) == 18 and len(b_train) == 38
    assert {it.classname for it in b_test} == {f"c{y}" for y in range(19)}  # names follow the items
    assert all(it.classname == f"c{it.label + 19}" for it in n_test)  # new class 0 was label 19
    assert base_new_labels(range(37), "base") == list(range(19))


def test_subsample_filters_every_list_by_first_and_validates():
    train, val, test = _items([0, 2, 4, 6], domain=2), _items([0, 6]), _items([0, 2, 4, 6, 8])
    b = subsample_classes(train, val, test, subsample="base")  # train labels {0,2,4,6}: base {0,2}
    assert [[it.label for it in x] for x in b] == [[0, 1], [0], [0, 1]]
    assert b[0][0].domain == 2
    n = subsample_classes(train, val, test, subsample="new")  # new {4,6}; test label 8 is dropped
    assert [[it.label for it in x] for x in n] == [[0, 1], [1], [0, 1]]
    same = subsample_classes(train, test, subsample="all")
    assert same == (train, test)
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES.*'bas'"):
        subsample_classes(train, subsample="bas")


# ------------------------------------------------------------------------------------------------------------------
# Few-shot
# ------------------------------------------------------------------------------------------------------------------
def test_few_shot_counts_semantics_and_seeding():
    items = _items([0] * 10 + [1] * 3 + [2] * 6)
    random.seed(1)
    a = sample_few_shot(items, 4)
    random.seed(1)
    b = sample_few_shot(items, 4)
    random.seed(2)
    c = sample_few_shot(items, 4)
    assert a == b and a != c
    counts = {y: sum(it.label == y for it in a) for y in (0, 1, 2)}
    assert counts == {0: 4, 1: 3, 2: 4}  # a short class keeps all its items
    assert len(set(a)) == len(a)  # without replacement
    rep = sample_few_shot(items, 4, repeat=True, rng=random.Random(0))
    assert sum(it.label == 1 for it in rep) == 4
    assert sample_few_shot(items, 0) == items and sample_few_shot(items, -1) == items
    # Dassl semantics: labels in first-seen order, one random.sample per full label from the global stream
    random.seed(7)
    expected = random.sample(items[:10], 4) + items[10:13] + random.sample(items[13:], 4)
    random.seed(7)
    assert sample_few_shot(items, 4) == expected


def test_few_shot_val_gets_at_most_4():
    train, val = _items([0] * 20 + [1] * 20), _items([0] * 10 + [1] * 10)
    random.seed(0)
    t, v = few_shot_splits(train, val, 16)
    assert len(t) == 32 and len(v) == 8
    t1, v1 = few_shot_splits(train, val, 2)
    assert len(t1) == 4 and len(v1) == 4


# ------------------------------------------------------------------------------------------------------------------
# Caches
# ------------------------------------------------------------------------------------------------------------------
def test_atomic_write_replaces_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "f.pkl"
    atomic_write_bytes(str(path), pickle.dumps({"a": 1}))
    atomic_write_bytes(str(path), pickle.dumps({"a": 2}))
    assert load_pickle(str(path)) == {"a": 2}
    assert os.listdir(path.parent) == ["f.pkl"]

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(str(path), b"partial")
    monkeypatch.undo()
    assert load_pickle(str(path)) == {"a": 2}  # the old file is intact, the temporary file is gone
    assert os.listdir(path.parent) == ["f.pkl"]


def test_corrupt_cache_is_explained(tmp_path):
    bad = tmp_path / "shot_1-seed_1.pkl"
    bad.write_bytes(b"\x80\x05not a pickle")
    with pytest.raises(FewShotCacheError, match=f"Delete {bad}"):
        load_pickle(str(bad))


def test_fallback_root_order(tmp_path, monkeypatch):
    monkeypatch.delenv("FEWSHOT_CACHE_DIR", raising=False)
    assert fallback_root("", "") is None
    assert fallback_root("", str(tmp_path)) == str(tmp_path / "data_cache")
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "env"))
    assert fallback_root("", str(tmp_path)) == str(tmp_path / "env")
    assert fallback_root(str(tmp_path / "cfg"), str(tmp_path)) == str(tmp_path / "cfg")
    assert cache_dirs("/data/eurosat", "/fb") == ["/data/eurosat/split_fewshot", "/fb/eurosat/split_fewshot"]
    assert fewshot_cache_name(16, 1) == "shot_16-seed_1.pkl"


def _blocked_dataset_dir(tmp_path):
    """A dataset folder whose split_fewshot cannot be created (a file is in the way): unwritable even for root."""
    ds = tmp_path / "data" / "eurosat"
    ds.mkdir(parents=True)
    (ds / "split_fewshot").write_text("not a directory")
    return ds


def test_cached_few_shot_writes_reuses_and_falls_back(tmp_path, capsys):
    imgs = []
    for i in range(12):
        p = tmp_path / "img" / f"{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
        imgs.append(Item(str(p), i % 3, f"c{i % 3}"))
    # normal case: CoOp's file name, as JSON, inside the dataset folder
    ok = tmp_path / "data2" / "eurosat"
    ok.mkdir(parents=True)
    random.seed(1)
    t, v = cached_few_shot(imgs, imgs[:6], 2, 1, cache_dirs(str(ok), None))
    assert (ok / "split_fewshot" / "shot_2-seed_1.json").is_file()
    assert load_cache(str(ok / "split_fewshot" / "shot_2-seed_1.json"), ("train", "val")) == {"train": t, "val": v}
    # read-only dataset folder: falls back and says so, then reuses the fallback file without sampling
    ds = _blocked_dataset_dir(tmp_path)
    dirs = cache_dirs(str(ds), str(tmp_path / "fallback"))
    capsys.readouterr()
    random.seed(1)
    t1, v1 = cached_few_shot(imgs, imgs[:6], 2, 1, dirs)
    out = capsys.readouterr().out
    fb = tmp_path / "fallback" / "eurosat" / "split_fewshot" / "shot_2-seed_1.json"
    assert fb.is_file() and f"fallback {fb}" in out and str(ds / "split_fewshot") in out
    assert (t1, v1) == (t, v)  # same seed, same subset
    state = random.getstate()
    t2, v2 = cached_few_shot(imgs, imgs[:6], 2, 1, dirs)
    assert random.getstate() == state and (t2, v2) == (t1, v1)
    assert f"Loading preprocessed few-shot data from {fb}" in capsys.readouterr().out
    # nowhere writable: warns, still returns the sample
    assert write_cache({"train": []}, "x.pkl", cache_dirs(str(ds), None)) is None
    assert "FEWSHOT_CACHE_DIR" in capsys.readouterr().out


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_dataset_folder_permissions(tmp_path):
    ds = tmp_path / "data" / "dtd"
    ds.mkdir(parents=True)
    os.chmod(ds, 0o555)
    try:
        path = write_cache({"train": []}, "shot_1-seed_1.pkl", cache_dirs(str(ds), str(tmp_path / "fb")))
        assert path == str(tmp_path / "fb" / "dtd" / "split_fewshot" / "shot_1-seed_1.json")
    finally:
        os.chmod(ds, 0o755)


def test_cached_lists_with_missing_images(tmp_path):
    ds = tmp_path / "eurosat"
    (ds / "split_fewshot").mkdir(parents=True)
    cached = ds / "split_fewshot" / "shot_1-seed_1.json"
    cached.write_bytes(encode_item_lists({"train": [Item("/moved/away/1.jpg", 0)], "val": []}))
    with pytest.raises(FewShotCacheError) as e:
        cached_few_shot([], [], 1, 1, cache_dirs(str(ds), None))
    assert f"Delete {cached}" in str(e.value) and "/moved/away/1.jpg" in str(e.value)
    assert find_cached("shot_1-seed_1.pkl", cache_dirs(str(ds), None)) == str(cached)


# ------------------------------------------------------------------------------------------------------------------
# Config, synthetic data, import without Dassl
# ------------------------------------------------------------------------------------------------------------------
def test_add_dataset_config_only_adds_missing_keys():
    yacs = pytest.importorskip("yacs.config", reason="yacs not installed")
    cfg = yacs.CfgNode()
    cfg.DATASET = yacs.CfgNode()
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"  # a fork's extend_cfg already added it
    add_dataset_config(cfg)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base"
    assert cfg.DATASET.GENERATE_SPLIT is False and cfg.DATASET.FEWSHOT_CACHE_DIR == ""
    bare = yacs.CfgNode()
    bare.DATASET = yacs.CfgNode()
    assert dataset_option(bare, "SPLIT_SEED") == DATASET_DEFAULTS["SPLIT_SEED"]


def test_synthetic_images_are_class_dependent_and_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", "eurosat", num_classes=3, per_class=4, size=16, seed=0)
    b = make_synthetic_dataset(tmp_path / "b", "eurosat", num_classes=3, per_class=4, size=16, seed=0)
    splits = read_benchmark(get_spec("eurosat"), str(tmp_path / "a"))
    means = {}
    for it in splits.train:
        arr = np.asarray(Image.open(it.impath).convert("RGB"), dtype=np.float32)
        assert arr.shape == (16, 16, 3)
        means.setdefault(it.label, []).append(arr.mean(axis=(0, 1)))
    centres = {k: np.mean(v, axis=0) for k, v in means.items()}
    within = max(np.abs(m - centres[k]).max() for k, v in means.items() for m in v)
    between = min(np.abs(centres[i] - centres[j]).max() for i in centres for j in centres if i < j)
    assert between > 2 * within
    rel = os.path.relpath(splits.train[0].impath, a)
    assert open(os.path.join(a, rel), "rb").read() == open(os.path.join(b, rel), "rb").read()


def test_synthetic_cli_and_all_layouts(tmp_path, capsys):
    path = synthetic_main(["--root", str(tmp_path), "--layout", "eurosat", "--num-classes", "2", "--per-class", "2"])
    assert path == str(tmp_path / "eurosat") and "Wrote synthetic eurosat" in capsys.readouterr().out
    assert read_benchmark(get_spec("eurosat"), str(tmp_path)).train[0].classname == "Annual Crop Land"
    for layout in LAYOUTS:
        assert os.path.isdir(make_synthetic_dataset(tmp_path / "all", layout, per_class=1, size=8))
    with pytest.raises(ValueError, match="Unknown layout"):
        make_synthetic_dataset(tmp_path, "mnist")
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_dataset(tmp_path, "pacs", num_classes=8)


def test_core_imports_without_dassl():
    code = ("import sys; sys.modules['dassl'] = None\n"
            "import datasets, datasets.synthetic, datasets.cache, datasets.sampling, datasets.readers\n"
            "import datasets.domain_readers, datasets.image_io\n"
            "assert datasets.DASSL_AVAILABLE is False\n"
            "assert 'torch' not in sys.modules\n"
            "print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=_dataset_fixtures.ROOT, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
