"""CoOp-family datasets for Dassl, plus ImageCLEF-DA, class-named PACS/VLCS/VisDA17 and a generic image folder.

``import datasets`` registers every dataset into ``dassl.data.datasets.DATASET_REGISTRY`` when Dassl is installed
(the one line a CoOp fork needs instead of its ``import datasets.<name>`` list). Without Dassl, the parsing, split,
few-shot, cache and synthetic-data modules (``datasets.specs``, ``.readers``, ``.splits``, ``.sampling``,
``.cache``, ``.config``, ``.synthetic``, ...) still import and work; only registration is skipped.
"""
from __future__ import annotations

import importlib.util
import sys

from .config import DATASET_DEFAULTS, add_dataset_config, dataset_option
from .errors import DatasetError, DatasetNotFoundError
from .items import Item, Splits
from .sampling import sample_few_shot, subsample_classes
from .specs import SPECS, get_spec

__all__ = ["DASSL_AVAILABLE", "REGISTERED_NAMES", "SPECS", "DATASET_DEFAULTS", "add_dataset_config",
           "dataset_option", "DatasetError", "DatasetNotFoundError", "Item", "Splits", "get_spec",
           "sample_few_shot", "subsample_classes"]

#: DATASET.NAME values this package registers (when Dassl is importable)
REGISTERED_NAMES = tuple(s.name for s in SPECS) + ("ImageFolderDataset", "ImageCLEFDA", "PACSNamed", "VLCSNamed",
                                                   "VisDA17Named")

# Registration needs Dassl; absence is normal (core use, CI without Dassl), but a Dassl that is installed and fails
# to import must surface its error rather than silently leave the registry empty.
DASSL_AVAILABLE = importlib.util.find_spec("dassl") is not None
if DASSL_AVAILABLE:
    sys.modules.setdefault("outdated", None)  # disable wilds/ogb's network version checks
    from . import benchmarks, domains, image_folder  # noqa: F401,E402  (registers the classes)
