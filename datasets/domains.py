"""Domain benchmarks for DFKD (dfkd.md §5): ImageCLEF-DA (new) and class-named variants of Dassl's PACS, VLCS
and VisDA17. Requires Dassl.

Dassl's VLCS leaves class names empty and its PACS/VisDA17 take them from folder names; prompt-based methods need
the fixed, prompt-ready lists of ``datasets.specs``. The ``*Named`` classes read the data with Dassl's own loader,
check that every label indexes the expected name, fill the names in, and then apply the shared few-shot (seeded,
cached, cache name tagged with the source domains) and base/new pipeline.
"""
from __future__ import annotations

import os

from dassl.data.datasets import DatasetBase
from dassl.data.datasets.da.visda17 import VisDA17
from dassl.data.datasets.dg.pacs import PACS
from dassl.data.datasets.dg.vlcs import VLCS

from .domain_readers import check_label_names, read_imageclef
from .items import Item
from .paths import require_dir
from .specs import IMAGECLEF_CLASSNAMES, IMAGECLEF_DOMAINS, PACS_CLASSNAMES, VISDA17_CLASSNAMES, VLCS_CLASSNAMES
from .dassl_base import PipelineMixin, dataset_root, from_datum, register_dataset, verify_images

__all__ = ["ImageCLEFDA", "PACSNamed", "VLCSNamed", "VisDA17Named", "DOMAIN_CLASSNAMES", "domain_cache_tag"]

DOMAIN_CLASSNAMES = {"PACS": PACS_CLASSNAMES, "VLCS": VLCS_CLASSNAMES, "VisDA17": VISDA17_CLASSNAMES,
                     "ImageCLEFDA": IMAGECLEF_CLASSNAMES}


def domain_cache_tag(cfg) -> str:
    """Few-shot cache names of multi-domain sets carry the source domains (one file per source combination)."""
    return "src_" + "+".join(cfg.DATASET.SOURCE_DOMAINS)


@register_dataset
class ImageCLEFDA(PipelineMixin, DatasetBase):
    """ImageCLEF-DA (our layout, dfkd.md §5): ``$DATA/image_clef/{c,i,p}.txt`` with lines
    "<path relative to image_clef/> <label>", 12 classes in the order of ``IMAGECLEF_CLASSNAMES``.

    train = all images of the source domains (no held-out val: the benchmark has none), test = all images of the
    target domains. DATASET.SOURCE_DOMAINS / TARGET_DOMAINS take c, i, p.
    """

    dataset_dir = "image_clef"
    domains = list(IMAGECLEF_DOMAINS)

    def __init__(self, cfg):
        self.dataset_dir = os.path.join(dataset_root(cfg), type(self).dataset_dir)
        self.check_input_domains(cfg.DATASET.SOURCE_DOMAINS, cfg.DATASET.TARGET_DOMAINS)
        train = read_imageclef(self.dataset_dir, cfg.DATASET.SOURCE_DOMAINS)
        test = read_imageclef(self.dataset_dir, cfg.DATASET.TARGET_DOMAINS)
        verify_images(train + test, f"ImageCLEFDA ({self.dataset_dir})")
        self._finish(cfg, train, [], test, self.dataset_dir, cache_tag=domain_cache_tag(cfg))


class NamedDomainMixin(PipelineMixin):
    """Run Dassl's loader, then replace class names by the fixed list after checking the label order."""

    fixed_classnames: tuple = ()

    def __init__(self, cfg):
        base = next(c for c in type(self).__mro__ if c.__module__.startswith("dassl."))
        folder = os.path.join(dataset_root(cfg), base.dataset_dir)
        # Dassl would try to download a missing folder from Google Drive; fail with the path instead
        require_dir(folder, f"{base.__name__} dataset folder",
                    hint=f"DATASET.ROOT is {dataset_root(cfg)}; see Dassl's DATASETS.md for {base.__name__}.")
        super().__init__(cfg)  # Dassl's loader: sets self._train_x, ... as Datum lists
        names = self.fixed_classnames
        lists = []
        for what, data in (("train", self._train_x), ("val", self._val), ("test", self._test)):
            items = from_datum(data or [])
            check_label_names(items, names, f"{base.__name__} {what}")
            lists.append([Item(it.impath, it.label, names[it.label], it.domain) for it in items])
        self._finish(cfg, lists[0], lists[1], lists[2], folder, cache_tag=domain_cache_tag(cfg),
                     train_u=self._train_u)


@register_dataset
class PACSNamed(NamedDomainMixin, PACS):
    """Dassl's PACS (``$DATA/pacs``) with the fixed class names dog ... person, order checked."""

    fixed_classnames = PACS_CLASSNAMES


@register_dataset
class VLCSNamed(NamedDomainMixin, VLCS):
    """Dassl's VLCS (``$DATA/VLCS``), which sets no class names, with bird, car, chair, dog, person."""

    fixed_classnames = VLCS_CLASSNAMES


@register_dataset
class VisDA17Named(NamedDomainMixin, VisDA17):
    """Dassl's VisDA17 (``$DATA/visda17``) with its 12 class names checked against image_list.txt labels."""

    fixed_classnames = VISDA17_CLASSNAMES
