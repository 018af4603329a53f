"""The Dassl layer shared by every dataset class: Item <-> Datum, the few-shot/base-new pipeline, registration.

Imported only when Dassl is installed (see ``datasets/__init__.py``). The pipeline is CoOp's, in CoOp's order:
read lists -> few-shot sample train (K) and val (min(K, 4)) with the CoOp cache file -> base/new subsample ->
``DatasetBase.__init__`` (which derives num_classes / lab2cname / classnames from train_x only).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence

sys.modules.setdefault("outdated", None)  # wilds/ogb (imported by dassl.data) start network version checks

from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase  # noqa: E402

from .cache import FEWSHOT_SUBDIR, cache_dirs, cached_few_shot, fallback_root  # noqa: E402
from .config import dataset_option  # noqa: E402
from .errors import DatasetNotFoundError  # noqa: E402
from .image_io import install_image_reader  # noqa: E402
from .items import Item  # noqa: E402
from .sampling import shots_used, subsample_classes  # noqa: E402

__all__ = ["to_datum", "from_datum", "verify_images", "register_dataset", "PipelineMixin", "dataset_root",
           "cfg_cache_dirs"]

# Dassl's loaders read images through our reader: an undecodable file fails at once, naming itself and the data check.
install_image_reader()


def from_datum(datums: Sequence) -> List[Item]:
    """Dassl Datum (e.g. from a CoOp cache pickle) -> Item."""
    return [Item(d.impath, int(d.label), d.classname, d.domain) for d in datums]


def to_datum(items: Sequence[Item]) -> List[Datum]:
    """Item -> Datum without re-checking the file (callers verified it: :func:`verify_images` or a directory scan).

    Dassl's ``Datum.__init__`` asserts ``isfile`` per item with an unhelpful AssertionError; building the object
    directly keeps the attributes (and so the pickles) identical to ``Datum(impath, label, domain, classname)``.
    """
    out = []
    for it in items:
        d = Datum.__new__(Datum)
        d._impath, d._label, d._domain, d._classname = it.impath, it.label, it.domain, it.classname
        out.append(d)
    return out


def verify_images(items: Sequence[Item], what: str, hint: str = "") -> None:
    """Raise a clear error naming missing image files (the check Datum's assert would do, with a message)."""
    missing = [it.impath for it in items if not os.path.isfile(it.impath)]
    if missing:
        raise DatasetNotFoundError(
            f"{what}: {len(missing)} of {len(items)} image files listed are missing, e.g. {missing[0]}. "
            "Check that the images were extracted into the expected folder." + (f"\n{hint}" if hint else ""))


def register_dataset(cls):
    """Register ``cls`` by its name; a second import of this package (or a fork's class of the same name) must not
    crash with Dassl's KeyError, so an existing entry is replaced only if it is the same class re-imported."""
    names = DATASET_REGISTRY.registered_names()
    if cls.__name__ in names:
        existing = DATASET_REGISTRY.get(cls.__name__)
        if existing is cls:
            return cls
        if existing.__qualname__ == cls.__qualname__ and existing.__module__.split(".")[-1] == \
                cls.__module__.split(".")[-1]:
            DATASET_REGISTRY.register(cls, force=True)
        else:
            print(f"Dataset {cls.__name__} is already registered by {existing.__module__}; keeping that one "
                  f"(ours is {cls.__module__}.{cls.__qualname__}).")
        return cls
    DATASET_REGISTRY.register(cls)
    return cls


def dataset_root(cfg) -> str:
    return os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))


def cfg_cache_dirs(cfg, dataset_dir: str, subdir: str = FEWSHOT_SUBDIR) -> List[str]:
    """Cache folders for ``dataset_dir``: its own ``subdir``, then the fallback root chosen by cfg / env / output."""
    fallback = fallback_root(dataset_option(cfg, "FEWSHOT_CACHE_DIR"), getattr(cfg, "OUTPUT_DIR", ""))
    return cache_dirs(dataset_dir, fallback, subdir)


class PipelineMixin:
    """Few-shot (cached) + base/new + DatasetBase init, written once for every dataset class."""

    def _finish(self, cfg, train: List[Item], val: List[Item], test: List[Item], dataset_dir: str,
                cache_tag: str = "", val_is_test: bool = False, train_u: Optional[list] = None,
                few_shot: bool = True) -> None:
        """Apply NUM_SHOTS (cache at ``<dataset_dir>/split_fewshot``) and SUBSAMPLE_CLASSES, then init Dassl.

        ``val_is_test`` (ImageNet): val is the test set, never sampled, and the cache holds only "train" (CoOp).
        """
        num_shots = int(cfg.DATASET.NUM_SHOTS)
        if few_shot and num_shots >= 1:
            dirs = cfg_cache_dirs(cfg, dataset_dir)
            train, val = cached_few_shot(train, val, num_shots, cfg.SEED, dirs, tag=cache_tag,
                                         with_val=not val_is_test)
        subsample = dataset_option(cfg, "SUBSAMPLE_CLASSES")
        if val_is_test:
            train, test = subsample_classes(train, test, subsample=subsample)
            val = test
        else:
            train, val, test = subsample_classes(train, val, test, subsample=subsample)
        if not train:
            raise DatasetNotFoundError(f"{type(self).__name__}: the training list is empty under {dataset_dir}.")
        asked = num_shots if few_shot else 0
        self.shots_used = shots_used(train, asked, type(self).__name__)  # read by trainers into results.json
        test_d = to_datum(test)
        val_d = test_d if val_is_test else (to_datum(val) if val else None)
        DatasetBase.__init__(self, train_x=to_datum(train), train_u=train_u, val=val_d, test=test_d)
