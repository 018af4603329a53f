"""Untrusted files stay data: few-shot caches never run code, and an undecodable image fails fast with its name."""
from __future__ import annotations

import json
import os
import pickle
import random
import shlex

import pytest

import _dataset_fixtures  # noqa: F401  (repository root on sys.path, outdated disabled)
from datasets.cache import (JSON_FORMAT, FewShotCacheError, UnsafePickleError, cache_dirs, cached_few_shot,
                            encode_item_lists, find_cached, load_cache, load_pickle)
from datasets.items import Item
from datasets.paths import locate_dataset
from datasets.specs import get_spec
from datasets.image_io import UnreadableImageError, check_data_command, read_image
from datasets.synthetic import make_synthetic_dataset


class ShellPayload:
    """Unpickling this runs a shell command (what a crafted cache in a downloaded bundle would do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class OpenPayload:
    """Unpickling this creates a file through a builtin that is not on the allow list."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _images(tmp_path, n: int = 6):
    out = []
    for i in range(n):
        p = tmp_path / "img" / f"{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
        out.append(Item(str(p), i % 3, f"c{i % 3}", i % 2))
    return out


@pytest.mark.parametrize("payload_cls", [ShellPayload, OpenPayload])
def test_crafted_pickle_runs_nothing(tmp_path, payload_cls):
    ds = tmp_path / "eurosat"
    (ds / "split_fewshot").mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"train": [payload_cls(str(marker))], "val": []}, protocol=pickle.HIGHEST_PROTOCOL)
    # the payload is live: a plain unpickler runs it
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payload_cls(str(control))))
    assert control.exists()
    planted = ds / "split_fewshot" / "shot_1-seed_1.pkl"
    planted.write_bytes(payload)
    with pytest.raises(UnsafePickleError) as e:
        cached_few_shot(_images(tmp_path), [], 1, 1, cache_dirs(str(ds), None))
    msg = str(e.value)
    func = payload_cls(str(marker)).__reduce__()[0]
    assert str(planted) in msg and f"{func.__module__}.{func.__name__}" in msg and f"Delete {planted}" in msg
    assert "Nothing in the file was run" in msg
    assert not marker.exists()
    assert isinstance(e.value, FewShotCacheError)  # what callers already catch


def test_genuine_dassl_pickles_load_as_items(tmp_path):
    """CoOp's caches (lists of Dassl Datum, any protocol >= 2) and plain builtins load; Datum's init never runs."""
    Datum = pytest.importorskip("dassl.data.datasets").Datum
    items = _images(tmp_path)
    datums = [Datum(impath=it.impath, label=it.label, domain=it.domain, classname=it.classname) for it in items]
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"shot_2-seed_1.p{protocol}.pkl"
        path.write_bytes(pickle.dumps({"train": datums[:4], "val": datums[4:]}, protocol=protocol))
        assert load_cache(str(path), ("train", "val")) == {"train": items[:4], "val": items[4:]}
    # sets and frozensets reach the unpickler through builtins globals in protocol 2
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"s": {1, 2}, "f": frozenset({"a"}), "t": (1.5, None, True)}, protocol=2))
    assert load_pickle(str(plain)) == {"s": {1, 2}, "f": frozenset({"a"}), "t": (1.5, None, True)}
    # a moved dataset: Datum's file assert is not what reports it, check_cached_paths is (with the file to delete)
    os.remove(items[0].impath)
    path = tmp_path / "split_fewshot" / "shot_4-seed_1.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"train": datums[:4], "val": datums[4:]}, protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(FewShotCacheError, match=f"do not exist, e.g. {items[0].impath}.*Delete {path}"):
        cached_few_shot([], [], 4, 1, [str(path.parent)])


def test_json_cache_round_trip_and_preference(tmp_path, capsys):
    items = _images(tmp_path) + [Item(str(tmp_path / "img" / "0.jpg"), 7, "Café – ünïcode", 3)]
    path = tmp_path / "c.json"
    path.write_bytes(encode_item_lists({"train": items, "val": items[:2]}))
    assert json.loads(path.read_text())["format"] == JSON_FORMAT
    assert load_cache(str(path), ("train", "val")) == {"train": items, "val": items[:2]}
    # our JSON is preferred over CoOp's pickle when both exist, in any of the folders
    ds = tmp_path / "ds"
    random.seed(0)
    train_k, val_k = cached_few_shot(items[:6], items[:6], 1, 2, cache_dirs(str(ds), None))
    json_path = ds / "split_fewshot" / "shot_1-seed_2.json"
    assert json_path.is_file() and not (ds / "split_fewshot" / "shot_1-seed_2.pkl").exists()
    (ds / "split_fewshot" / "shot_1-seed_2.pkl").write_bytes(b"not read")
    assert find_cached("shot_1-seed_2.pkl", cache_dirs(str(ds), None)) == str(json_path)
    capsys.readouterr()
    assert cached_few_shot([], [], 1, 2, cache_dirs(str(ds), None)) == (train_k, val_k)
    assert f"Loading preprocessed few-shot data from {json_path}" in capsys.readouterr().out


@pytest.mark.parametrize("content, match", [
    ({"train": []}, "not a cache written by this project"),  # no format field
    ({"format": JSON_FORMAT, "val": []}, r"expected the lists \['train'\]"),
    ({"format": JSON_FORMAT, "train": [{"impath": 3, "label": 0}]}, "something other than image items"),
    ({"format": JSON_FORMAT, "train": [{"impath": "/a.jpg", "label": "0"}]}, "something other than image items"),
])
def test_bad_json_cache_names_the_file(tmp_path, content, match):
    path = tmp_path / "shot_1-seed_1.json"
    path.write_text(json.dumps(content))
    with pytest.raises(FewShotCacheError, match=match) as e:
        load_cache(str(path), ("train",))
    assert str(path) in str(e.value)


def test_read_image_names_the_file_and_the_check(tmp_path):
    make_synthetic_dataset(tmp_path, "eurosat", num_classes=2, per_class=2)
    images = sorted((tmp_path / "eurosat" / "2750").rglob("*.jpg"))
    assert read_image(str(images[0])).mode == "RGB"
    spec, root = locate_dataset(str(images[0]))
    assert (spec, root) == (get_spec("eurosat"), str(tmp_path))
    assert locate_dataset(str(tmp_path / "elsewhere" / "x.jpg")) is None
    images[1].write_bytes(b"this is not an image")
    with pytest.raises(UnreadableImageError) as e:
        read_image(str(images[1]))
    assert str(images[1]) in str(e.value) and f"python -m tools.check_data eurosat --root {tmp_path}" in str(e.value)
    assert not isinstance(e.value, OSError)  # an old Dassl's "IOError: retry" loop cannot catch it
    with pytest.raises(UnreadableImageError, match="does not exist"):
        read_image(str(tmp_path / "eurosat" / "2750" / "gone.jpg"))
    assert check_data_command("/nowhere/x.jpg") == "python -m tools.check_data DATASET --root $DATA"


# ------------------------------------------------------------------------------------------------------------------
# Through Dassl
# ------------------------------------------------------------------------------------------------------------------
def test_dassl_build_refuses_crafted_pickle(tmp_path):
    pytest.importorskip("dassl")
    from dassl.data import DataManager

    from _dataset_fixtures import make_cfg

    make_synthetic_dataset(tmp_path, "eurosat", num_classes=2, per_class=2)
    marker = tmp_path / "pwned"
    planted = tmp_path / "eurosat" / "split_fewshot" / "shot_1-seed_1.pkl"
    planted.parent.mkdir()
    planted.write_bytes(pickle.dumps({"train": [ShellPayload(str(marker))], "val": []}))
    with pytest.raises(UnsafePickleError, match=f"Delete {planted}"):
        DataManager(make_cfg(tmp_path, "EuroSAT", num_shots=1))
    assert not marker.exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_dassl_loader_error_names_bad_image(tmp_path, workers, single_thread):
    """An undecodable test image stops the test loader at once with the file and the check command (also from a
    DataLoader worker process)."""
    pytest.importorskip("dassl")
    import dassl.data.data_manager as dm_module
    from dassl.data import DataManager

    import datasets.dassl_base  # noqa: F401  (installs the reader)
    from _dataset_fixtures import make_cfg

    assert dm_module.read_image is read_image
    make_synthetic_dataset(tmp_path, "eurosat", num_classes=2, per_class=2)
    cfg = make_cfg(tmp_path, "EuroSAT")
    cfg.DATALOADER.NUM_WORKERS = workers
    dm = DataManager(cfg)
    bad = dm.dataset.test[-1].impath
    with open(bad, "r+b") as f:  # keep the JPEG header, cut the data: a truncated download
        f.truncate(300)
    with pytest.raises(UnreadableImageError) as e:
        for _ in dm.test_loader:
            pass
    assert bad in str(e.value) and f"python -m tools.check_data eurosat --root {tmp_path}" in str(e.value)
