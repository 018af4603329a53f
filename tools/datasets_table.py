"""The one place that maps dataset keys (yaml/directory names) to Dassl ``DATASET.NAME``s.

Scripts name datasets by key (``configs/datasets/<key>.yaml``, output directories); trainers write the
Dassl class name into ``results.json``. Everything that needs to translate between them, or needs the
protocol target lists, imports this module so the lists exist once.
"""
from __future__ import annotations

# key -> Dassl DATASET.NAME, in the order papers print their tables (protocols.md §1).
DATASETS: dict[str, str] = {
    "imagenet": "ImageNet",
    "caltech101": "Caltech101",
    "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars",
    "oxford_flowers": "OxfordFlowers",
    "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft",
    "sun397": "SUN397",
    "dtd": "DescribableTextures",
    "eurosat": "EuroSAT",
    "ucf101": "UCF101",
    "imagenetv2": "ImageNetV2",
    "imagenet_sketch": "ImageNetSketch",
    "imagenet_a": "ImageNetA",
    "imagenet_r": "ImageNetR",
}

# Multi-domain benchmarks of the data-free method (configs/datasets/<key>.yaml names the class-named classes).
DOMAIN_DATASETS: dict[str, str] = {
    "pacs": "PACSNamed",
    "vlcs": "VLCSNamed",
    "visda17": "VisDA17Named",
    "imageclef_da": "ImageCLEFDA",
}

NAME_TO_KEY: dict[str, str] = {name: key for key, name in {**DATASETS, **DOMAIN_DATASETS}.items()}

# Column headers for the printed tables (short enough for a wide markdown table).
SHORT_NAMES: dict[str, str] = {
    "imagenet": "ImageNet",
    "caltech101": "Caltech101",
    "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102",
    "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft",
    "sun397": "SUN397",
    "dtd": "DTD",
    "eurosat": "EuroSAT",
    "ucf101": "UCF101",
    "imagenetv2": "-V2",
    "imagenet_sketch": "-Sketch",
    "imagenet_a": "-A",
    "imagenet_r": "-R",
}

BASE2NEW_DATASETS: tuple[str, ...] = tuple(list(DATASETS)[:11])
XD_SOURCE = "imagenet"
XD_TARGETS: tuple[str, ...] = BASE2NEW_DATASETS[1:]
DG_TARGETS: tuple[str, ...] = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

_CASEFOLD: dict[str, str] = {**{k.lower(): k for k in {**DATASETS, **DOMAIN_DATASETS}},
                              **{n.lower(): k for n, k in NAME_TO_KEY.items()}}


def to_key(name: str) -> str:
    """Return the dataset key for a key or a Dassl name (case-insensitive); unknown names pass through.

    Unknown names pass through so custom datasets still aggregate under their directory name.
    """
    return _CASEFOLD.get(name.lower(), name)


def to_name(key: str) -> str:
    """Return the Dassl ``DATASET.NAME`` for a key (or a name); unknown keys pass through."""
    key = to_key(key)
    return DATASETS.get(key) or DOMAIN_DATASETS.get(key, key)


def order_key(key: str) -> tuple[int, str]:
    """Sort key: known datasets in table order, then the rest alphabetically."""
    keys = list(DATASETS)
    return (keys.index(key), key) if key in DATASETS else (len(keys), key)


def short_name(key: str) -> str:
    """Header used in printed tables."""
    return SHORT_NAMES.get(key, key)
