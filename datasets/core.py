"""Dataset parsing without Dassl: items, the dataset table, readers and clear errors.

Everything here works on plain :class:`Item` objects so that it can be tested (and used by tools) without
Dassl installed. The Dassl layer (:mod:`datasets.dassl_base`) converts items to ``dassl`` ``Datum`` objects
at the very end. On-disk formats follow KaiyangZhou/CoOp ``DATASETS.md`` exactly (see
``shared/specs/protocols.md`` §1), so an existing ``$DATA`` folder works unchanged.
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

__all__ = [
    "Item", "Splits", "DatasetSpec", "SPECS", "SPECS_BY_KEY", "SPECS_BY_NAME", "get_spec",
    "DatasetError", "DatasetNotFoundError", "SplitGenerationError",
    "COOP_DATASETS_MD", "HF_REUPLOAD",
    "PACS_CLASSNAMES", "VLCS_CLASSNAMES", "VISDA17_CLASSNAMES", "IMAGECLEF_CLASSNAMES", "IMAGECLEF_DOMAINS",
    "dataset_paths", "locate_dataset", "require_dir", "require_file", "list_dirs", "list_files",
    "read_split_json", "write_split_json", "read_classnames_txt", "read_fgvc_aircraft",
    "read_imagenet", "read_imagenet_variant", "read_class_folders", "read_benchmark",
    "read_image_list", "read_imageclef", "read_image_folder",
    "generate_split_from_folders", "check_label_names",
]

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
HF_REUPLOAD = "https://huggingface.co/zhengli97/prompt_learning_dataset"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One labelled image; mirrors dassl ``Datum`` (impath, label, domain, classname) without its file check."""

    impath: str
    label: int
    classname: str = ""
    domain: int = 0

    def with_label(self, label: int) -> "Item":
        return Item(self.impath, label, self.classname, self.domain)


@dataclass
class Splits:
    """train / val / test lists of items. ``val`` may equal ``test`` (ImageNet) or be empty (test-only sets)."""

    train: List[Item]
    val: List[Item]
    test: List[Item]

    def as_tuple(self) -> Tuple[List[Item], List[Item], List[Item]]:
        return self.train, self.val, self.test


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------
class DatasetError(RuntimeError):
    """Base class for dataset problems the user must fix (paths, formats, caches)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder, image folder, split file or class-name file is missing."""


class SplitGenerationError(DatasetError):
    """A split file is missing and generating one was not allowed or is not supported."""


# --------------------------------------------------------------------------------------------------------------
# The dataset table (protocols.md §1)
# --------------------------------------------------------------------------------------------------------------
def _gdrive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=sharing"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a CoOp-family dataset lives and how it is read.

    ``kind`` picks the reader: ``split_json`` (published ``split_zhou_*.json``), ``fgvc`` (official txt files),
    ``imagenet`` (class folders + classnames.txt), ``imagenet_variant`` (test-only, see ``variant_labels``).
    """

    key: str  # configs/datasets/<key>.yaml
    name: str  # DATASET.NAME, the registered class name
    folder: str  # folder under $DATA
    image_dir: str  # image folder inside ``folder`` ("" = the folder itself)
    kind: str
    num_classes: int
    split_file: str = ""
    split_relative_to: str = "image_dir"  # "image_dir" or "folder" (StanfordCars)
    split_url: str = ""  # Google Drive link of the published split (CoOp DATASETS.md)
    source: str = ""  # where the images come from
    # split generation from class folders (only behind DATASET.GENERATE_SPLIT): ignored folders and renames
    generate_from_folders: bool = False
    ignored_folders: Tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    variant_labels: str = ""  # "index_folders" (V2: folder k = label k) or "sorted_folders" (Sketch, A, R)

    @property
    def base_count(self) -> int:
        """Number of base classes m = ceil(n / 2) of the full dataset (protocols.md §3)."""
        return -(-self.num_classes // 2)


CALTECH_RENAME = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAME = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}

SPECS: Tuple[DatasetSpec, ...] = (
    DatasetSpec("imagenet", "ImageNet", "imagenet", "images", "imagenet", 1000,
                source="https://image-net.org (train/ and val/ as class folders n*)"),
    DatasetSpec("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_json", 100,
                "split_zhou_Caltech101.json", split_url=_gdrive("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
                source="http://www.vision.caltech.edu/Image_Datasets/Caltech101/101_ObjectCategories.tar.gz",
                generate_from_folders=True, ignored_folders=("BACKGROUND_Google", "Faces_easy"),
                rename=CALTECH_RENAME),
    DatasetSpec("oxford_pets", "OxfordPets", "oxford_pets", "images", "split_json", 37,
                "split_zhou_OxfordPets.json", split_url=_gdrive("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
                source="https://www.robots.ox.ac.uk/~vgg/data/pets/"),
    DatasetSpec("stanford_cars", "StanfordCars", "stanford_cars", "", "split_json", 196,
                "split_zhou_StanfordCars.json", split_relative_to="folder",
                split_url=_gdrive("1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
                source="http://ai.stanford.edu/~jkrause/cars/car_dataset.html (official links are often dead)"),
    DatasetSpec("oxford_flowers", "OxfordFlowers", "oxford_flowers", "jpg", "split_json", 102,
                "split_zhou_OxfordFlowers.json", split_url=_gdrive("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
                source="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    DatasetSpec("food101", "Food101", "food-101", "images", "split_json", 101,
                "split_zhou_Food101.json", split_url=_gdrive("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
                source="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/", generate_from_folders=True),
    DatasetSpec("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", "fgvc", 100,
                source="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz "
                       "(keep data/ and rename it fgvc_aircraft/)"),
    DatasetSpec("sun397", "SUN397", "sun397", "SUN397", "split_json", 397,
                "split_zhou_SUN397.json", split_url=_gdrive("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
                source="http://vision.princeton.edu/projects/2010/SUN/ (official link reported dead)"),
    DatasetSpec("dtd", "DescribableTextures", "dtd", "images", "split_json", 47,
                "split_zhou_DescribableTextures.json", split_url=_gdrive("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
                source="https://www.robots.ox.ac.uk/~vgg/data/dtd/", generate_from_folders=True),
    DatasetSpec("eurosat", "EuroSAT", "eurosat", "2750", "split_json", 10,
                "split_zhou_EuroSAT.json", split_url=_gdrive("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
                source="http://madm.dfki.de/files/sentinel/EuroSAT.zip", generate_from_folders=True,
                rename=EUROSAT_RENAME),
    DatasetSpec("ucf101", "UCF101", "ucf101", "UCF-101-midframes", "split_json", 101,
                "split_zhou_UCF101.json", split_url=_gdrive("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
                source=f"UCF-101-midframes.zip, {_gdrive('10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O')}"),
    DatasetSpec("imagenetv2", "ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                "imagenet_variant", 1000, variant_labels="index_folders",
                source="https://github.com/modestyachts/ImageNetV2 (matched-frequency)"),
    DatasetSpec("imagenet_sketch", "ImageNetSketch", "imagenet-sketch", "images", "imagenet_variant", 1000,
                variant_labels="sorted_folders",
                source="https://github.com/HaohanWang/ImageNet-Sketch"),
    DatasetSpec("imagenet_a", "ImageNetA", "imagenet-adversarial", "imagenet-a", "imagenet_variant", 200,
                variant_labels="sorted_folders",
                source="https://github.com/hendrycks/natural-adv-examples"),
    DatasetSpec("imagenet_r", "ImageNetR", "imagenet-rendition", "imagenet-r", "imagenet_variant", 200,
                variant_labels="sorted_folders", source="https://github.com/hendrycks/imagenet-r"),
)
SPECS_BY_NAME: Dict[str, DatasetSpec] = {s.name: s for s in SPECS}
SPECS_BY_KEY: Dict[str, DatasetSpec] = {s.key: s for s in SPECS}


def get_spec(name_or_key: str) -> DatasetSpec:
    """Look a dataset up by DATASET.NAME (``EuroSAT``) or yaml key (``eurosat``)."""
    spec = SPECS_BY_NAME.get(name_or_key) or SPECS_BY_KEY.get(name_or_key)
    if spec is None:
        raise KeyError(f"Unknown dataset {name_or_key!r}; known: {sorted(SPECS_BY_NAME)}")
    return spec


# Fixed class lists of the domain benchmarks (dfkd.md §5). Dassl's VLCS sets no class names; its PACS takes the
# folder name; ImageCLEF-DA is not in Dassl. Orders equal Dassl's label order (PACS split files, sorted VLCS folders,
# VisDA image_list labels) and the order of common DA code for ImageCLEF-DA.
PACS_CLASSNAMES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
VLCS_CLASSNAMES = ("bird", "car", "chair", "dog", "person")
VISDA17_CLASSNAMES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
                      "skateboard", "train", "truck")
IMAGECLEF_CLASSNAMES = ("aeroplane", "bike", "bird", "boat", "bottle", "bus", "car", "dog", "horse", "monitor",
                        "motorbike", "people")
IMAGECLEF_DOMAINS = ("c", "i", "p")


# --------------------------------------------------------------------------------------------------------------
# Paths and messages
# --------------------------------------------------------------------------------------------------------------
def _where_to_get(spec: Optional[DatasetSpec]) -> str:
    if spec is None:
        return ""
    lines = [f"How to get {spec.name}: see {COOP_DATASETS_MD} (section {spec.name})."]
    if spec.source:
        lines.append(f"  images: {spec.source}")
    if spec.split_file and spec.split_url:
        lines.append(f"  {spec.split_file}: {spec.split_url}")
    elif spec.kind in ("imagenet", "imagenet_variant"):
        lines.append(f"  classnames.txt: {_gdrive('1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF')} "
                     "(copy $DATA/imagenet/classnames.txt into each ImageNet variant folder)")
    if spec.name != "ImageNet":
        lines.append(f"  a prepared copy of 14 datasets (not ImageNet): {HF_REUPLOAD}")
    return "\n".join(lines)


def require_dir(path: str, what: str, spec: Optional[DatasetSpec] = None, hint: str = "") -> str:
    """Return ``path`` if it is a directory, else raise an error naming it, its parent and where to get it."""
    if not os.path.isdir(path):
        parent = os.path.dirname(os.path.normpath(path))
        msg = f"{what} not found: expected the directory {path} (inside {parent})."
        extra = "\n".join(x for x in (hint, _where_to_get(spec)) if x)
        raise DatasetNotFoundError(msg + ("\n" + extra if extra else ""))
    return path


def require_file(path: str, what: str, spec: Optional[DatasetSpec] = None, hint: str = "") -> str:
    """Return ``path`` if it is a file, else raise an error naming it, its folder and where to get it."""
    if not os.path.isfile(path):
        msg = f"{what} not found: expected the file {path} (in folder {os.path.dirname(path)})."
        extra = "\n".join(x for x in (hint, _where_to_get(spec)) if x)
        raise DatasetNotFoundError(msg + ("\n" + extra if extra else ""))
    return path


def dataset_paths(spec: DatasetSpec, root: str) -> Tuple[str, str]:
    """(dataset folder, image dir) under ``root`` = cfg.DATASET.ROOT, after checking both exist."""
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = require_dir(os.path.join(root, spec.folder), f"{spec.name} dataset folder", spec,
                              hint=f"DATASET.ROOT is {root}; {spec.name} must be in its sub-folder '{spec.folder}/'.")
    image_dir = os.path.join(dataset_dir, spec.image_dir) if spec.image_dir else dataset_dir
    require_dir(image_dir, f"{spec.name} image directory", spec)
    return dataset_dir, image_dir


def locate_dataset(path: str) -> Optional[Tuple[DatasetSpec, str]]:
    """(spec, DATASET.ROOT) of the SPECS dataset whose image folder holds ``path``, else None.

    Inverts :func:`dataset_paths` so that an error about one file can name the dataset and root to check.
    """
    parts = os.path.abspath(path).split(os.sep)
    for spec in SPECS:
        inner = [spec.folder] + ([p for p in spec.image_dir.split("/") if p] if spec.image_dir else [])
        for i in range(len(parts) - len(inner) - 1, 0, -1):  # the innermost match; the file name is not a folder
            if parts[i:i + len(inner)] == inner:
                return spec, os.sep.join(parts[:i]) or os.sep
    return None


def list_dirs(path: str) -> List[str]:
    """Sorted non-hidden sub-directory names (the label order of class-folder datasets)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def list_files(path: str) -> List[str]:
    """Sorted non-hidden file names (sorted so that reading is deterministic across filesystems)."""
    return sorted(e.name for e in os.scandir(path) if e.is_file() and not e.name.startswith("."))


# --------------------------------------------------------------------------------------------------------------
# Split JSON (CoOp's split_zhou_*.json)
# --------------------------------------------------------------------------------------------------------------
def read_split_json(path: str, prefix: str, spec: Optional[DatasetSpec] = None) -> Splits:
    """Read a split JSON ({"train"|"val"|"test": [[relpath, label, classname], ...]}); paths joined to ``prefix``."""
    require_file(path, "Split file", spec)
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"Split file {path} is not valid JSON ({e}); download it again.") from e
    out = {}
    for key in ("train", "val", "test"):
        if key not in data:
            raise DatasetError(f"Split file {path} has no '{key}' list (keys: {sorted(data)}).")
        out[key] = [Item(os.path.join(prefix, rel), int(label), str(cname)) for rel, label, cname in data[key]]
    return Splits(out["train"], out["val"], out["test"])


def write_split_json(splits: Splits, path: str, prefix: str) -> None:
    """Write ``splits`` in CoOp's JSON format with paths relative to ``prefix`` (atomically)."""
    from .cache import atomic_write_bytes

    def rel(items: Sequence[Item]) -> list:
        return [[os.path.relpath(it.impath, prefix).replace(os.sep, "/"), it.label, it.classname] for it in items]

    data = {"train": rel(splits.train), "val": rel(splits.val), "test": rel(splits.test)}
    atomic_write_bytes(path, json.dumps(data, indent=4).encode("utf-8"))


def generate_split_from_folders(image_dir: str, seed: int, p_trn: float = 0.5, p_val: float = 0.2,
                                ignored: Iterable[str] = (), rename: Optional[Mapping[str, str]] = None) -> Splits:
    """Seeded per-class train/val/test split of class folders (CoOp's DTD-style 50/20/30 rule).

    Uses its own ``random.Random(seed)`` so Python's global stream (which drives few-shot sampling) is untouched.
    A generated split is **not** the published one: results are not comparable with papers.
    """
    rng = random.Random(seed)
    rename = dict(rename or {})
    ignored = set(ignored)
    train, val, test = [], [], []
    for label, folder in enumerate(f for f in list_dirs(image_dir) if f not in ignored):
        images = [os.path.join(image_dir, folder, n) for n in list_files(os.path.join(image_dir, folder))
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
        rng.shuffle(images)
        n_trn, n_val = round(len(images) * p_trn), round(len(images) * p_val)
        if n_trn < 1 or n_val < 1 or len(images) - n_trn - n_val < 1:
            raise SplitGenerationError(f"Class folder {os.path.join(image_dir, folder)} has {len(images)} images: "
                                       "too few for a train/val/test split.")
        cname = rename.get(folder, folder)
        train += [Item(p, label, cname) for p in images[:n_trn]]
        val += [Item(p, label, cname) for p in images[n_trn:n_trn + n_val]]
        test += [Item(p, label, cname) for p in images[n_trn + n_val:]]
    if not train:
        raise SplitGenerationError(f"No class folders under {image_dir}.")
    return Splits(train, val, test)


# --------------------------------------------------------------------------------------------------------------
# Official formats
# --------------------------------------------------------------------------------------------------------------
def read_classnames_txt(path: str, spec: Optional[DatasetSpec] = None) -> "OrderedDict[str, str]":
    """Read ``classnames.txt`` lines "<folder> <class name>" into an ordered {folder: name}."""
    require_file(path, "classnames.txt", spec)
    names: "OrderedDict[str, str]" = OrderedDict()
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(" ")
            if parts and parts[0]:
                names[parts[0]] = " ".join(parts[1:])
    if not names:
        raise DatasetError(f"{path} is empty; it must list '<folder> <class name>' per line.")
    return names


def read_fgvc_aircraft(dataset_dir: str, spec: Optional[DatasetSpec] = None) -> Splits:
    """FGVCAircraft: variants.txt (label = line index), images_variant_{train,val,test}.txt ("<id> <name>")."""
    variants = require_file(os.path.join(dataset_dir, "variants.txt"), "FGVCAircraft variants.txt", spec)
    with open(variants, "r", encoding="utf-8") as f:
        classnames = [line.strip() for line in f if line.strip()]
    cname2lab = {c: i for i, c in enumerate(classnames)}
    image_dir = os.path.join(dataset_dir, "images")
    out = []
    for split in ("train", "val", "test"):
        path = require_file(os.path.join(dataset_dir, f"images_variant_{split}.txt"),
                            f"FGVCAircraft images_variant_{split}.txt", spec)
        items = []
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                parts = line.strip().split(" ")
                if not parts[0]:
                    continue
                cname = " ".join(parts[1:])
                if cname not in cname2lab:
                    raise DatasetError(f"{path}: class {cname!r} is not listed in {variants}.")
                items.append(Item(os.path.join(image_dir, parts[0] + ".jpg"), cname2lab[cname], cname))
        out.append(items)
    return Splits(*out)


def read_class_folders(split_dir: str, classnames: Mapping[str, str], folders: Optional[Sequence[str]] = None,
                       spec: Optional[DatasetSpec] = None) -> List[Item]:
    """Items of ``<split_dir>/<folder>/*``; label = position of the folder in ``folders`` (default: sorted dirs)."""
    require_dir(split_dir, "Image directory", spec)
    folders = list_dirs(split_dir) if folders is None else list(folders)
    items = []
    for label, folder in enumerate(folders):
        if folder not in classnames:
            raise DatasetError(f"Class folder {os.path.join(split_dir, folder)} has no line in classnames.txt.")
        cdir = require_dir(os.path.join(split_dir, folder), "Class folder", spec)
        items += [Item(os.path.join(cdir, n), label, classnames[folder]) for n in list_files(cdir)]
    return items


def read_imagenet(dataset_dir: str, spec: Optional[DatasetSpec] = None) -> Splits:
    """ImageNet: labels = index of the sorted class folder; names from classnames.txt.

    The official val set is returned as **both** val and test (CoOp convention): never select checkpoints on it.
    """
    spec = spec or get_spec("ImageNet")
    names = read_classnames_txt(os.path.join(dataset_dir, "classnames.txt"), spec)
    image_dir = os.path.join(dataset_dir, spec.image_dir)
    train_dir, val_dir = os.path.join(image_dir, "train"), os.path.join(image_dir, "val")
    train = read_class_folders(train_dir, names, spec=spec)
    require_dir(val_dir, "ImageNet val directory", spec)
    val_folders = list_dirs(val_dir)
    if not val_folders:
        raise DatasetError(f"{val_dir} has no class folders: ImageNet val images must be sorted into class "
                           "folders n* like train/ (e.g. with the valprep.sh script), CoOp#60.")
    if val_folders != list_dirs(train_dir):
        raise DatasetError(f"Class folders of {val_dir} differ from those of {train_dir}; labels would not match.")
    test = read_class_folders(val_dir, names, spec=spec)
    return Splits(train, test, test)


def read_imagenet_variant(dataset_dir: str, spec: DatasetSpec) -> List[Item]:
    """A test-only ImageNet variant. V2: folder k = ImageNet label k; Sketch/A/R: sorted folders labelled 0..k-1.

    ImageNet-A/-R therefore use their own 200-class label space with their own class names (not ImageNet indices).
    """
    names = read_classnames_txt(os.path.join(dataset_dir, "classnames.txt"), spec)
    image_dir = require_dir(os.path.join(dataset_dir, spec.image_dir), f"{spec.name} image directory", spec)
    if spec.variant_labels == "index_folders":
        wnids = list(names)
        items = []
        for label, wnid in enumerate(wnids):
            cdir = require_dir(os.path.join(image_dir, str(label)), f"{spec.name} class folder", spec)
            items += [Item(os.path.join(cdir, n), label, names[wnid]) for n in list_files(cdir)]
        return items
    return read_class_folders(image_dir, names, spec=spec)


def read_benchmark(spec: DatasetSpec, root: str, generate_split: bool = False, split_seed: int = 1) -> Splits:
    """Read one of the 15 CoOp-family datasets of ``SPECS`` from ``root`` (= cfg.DATASET.ROOT).

    A missing published split JSON is an error unless ``generate_split`` (cfg DATASET.GENERATE_SPLIT) is set; the
    generated split is seeded with ``split_seed``, written next to where the published one would be, and logged.
    Test-only ImageNet variants return train = test = all images and an empty val.
    """
    dataset_dir, image_dir = dataset_paths(spec, root)
    if spec.kind == "split_json":
        prefix = dataset_dir if spec.split_relative_to == "folder" else image_dir
        path = os.path.join(dataset_dir, spec.split_file)
        if os.path.isfile(path) or not generate_split:
            return read_split_json(path, prefix, spec)
        if not spec.generate_from_folders:
            raise SplitGenerationError(f"{path} is missing and generating a {spec.name} split is not supported "
                                       f"(it needs the official annotation files).\n{_where_to_get(spec)}")
        msg = (f"WARNING: {path} is missing; GENERATING a new split of {image_dir} with seed {split_seed} "
               "(50/20/30 per class). It is NOT the published split: results are not comparable with papers.")
        print(msg)
        logger.warning(msg)
        splits = generate_split_from_folders(image_dir, split_seed, ignored=spec.ignored_folders, rename=spec.rename)
        try:
            write_split_json(splits, path, prefix)
            print(f"Saved generated split to {path}")
        except OSError as e:
            print(f"Could not save the generated split to {path} ({e}); it is regenerated (same seed) next time.")
        return splits
    if spec.kind == "fgvc":
        return read_fgvc_aircraft(dataset_dir, spec)
    if spec.kind == "imagenet":
        return read_imagenet(dataset_dir, spec)
    if spec.kind == "imagenet_variant":
        data = read_imagenet_variant(dataset_dir, spec)
        return Splits(data, [], data)
    raise ValueError(f"Unknown dataset kind {spec.kind!r}")


# --------------------------------------------------------------------------------------------------------------
# Domain benchmarks and user folders
# --------------------------------------------------------------------------------------------------------------
def read_image_list(list_file: str, prefix: str, domain: int = 0,
                    classnames: Optional[Sequence[str]] = None, label_offset: int = 0) -> List[Item]:
    """Lines "<relative path> <label>" (paths may contain spaces; the label is the last field)."""
    require_file(list_file, "Image list file")
    items = []
    with open(list_file, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rel, label_s = line.rsplit(maxsplit=1)
                label = int(label_s) - label_offset
            except ValueError:
                raise DatasetError(f"{list_file}:{lineno}: expected '<path> <integer label>', got {line!r}")
            cname = ""
            if classnames is not None:
                if not 0 <= label < len(classnames):
                    raise DatasetError(f"{list_file}:{lineno}: label {label} outside 0..{len(classnames) - 1}")
                cname = classnames[label]
            items.append(Item(os.path.join(prefix, rel), label, cname, domain))
    return items


def read_imageclef(dataset_dir: str, domains: Sequence[str]) -> List[Item]:
    """ImageCLEF-DA (our layout): ``<dataset_dir>/<d>.txt`` per domain, lines "relpath label" relative to
    ``dataset_dir``; domain index = position in ``domains`` (Dassl convention)."""
    require_dir(dataset_dir, "ImageCLEF-DA dataset folder",
                hint="Expected $DATA/image_clef/ with c.txt, i.txt, p.txt (lines '<path relative to image_clef/> "
                     "<label 0..11>') and the images they name.")
    items = []
    for d_idx, d in enumerate(domains):
        if d not in IMAGECLEF_DOMAINS:
            raise ValueError(f"ImageCLEF-DA domain must be one of {list(IMAGECLEF_DOMAINS)}, got {d!r}")
        items += read_image_list(os.path.join(dataset_dir, f"{d}.txt"), dataset_dir, d_idx, IMAGECLEF_CLASSNAMES)
    return items


def _folder_classnames(base: str) -> Dict[str, str]:
    """Optional ``classnames.txt`` ("<folder> <name>") of a user folder; otherwise folder names, '_' -> ' '."""
    path = os.path.join(base, "classnames.txt")
    return dict(read_classnames_txt(path)) if os.path.isfile(path) else {}


def read_image_folder(base: str, split_seed: int = 1, p_trn: float = 0.5, p_val: float = 0.2) -> Splits:
    """A user's own data: ``<base>/{train,val,test}/<class>/*`` (val optional) or ``<base>/<class>/*``.

    Labels = sorted class folders of train. A single folder is split per class with ``random.Random(split_seed)``
    (deterministic, not saved; the global random stream is untouched).
    """
    require_dir(base, "Image-folder dataset",
                hint="Layout: <folder>/train/<class>/*.jpg (+ val/, test/), or <folder>/<class>/*.jpg.")
    names = _folder_classnames(base)
    if os.path.isdir(os.path.join(base, "train")):
        folders = list_dirs(os.path.join(base, "train"))
        for c in folders:
            names.setdefault(c, c.replace("_", " "))
        out = {}
        for split in ("train", "val", "test"):
            sdir = os.path.join(base, split)
            if not os.path.isdir(sdir):
                out[split] = []
                continue
            extra = sorted(set(list_dirs(sdir)) - set(folders))
            if extra:
                raise DatasetError(f"{sdir} has class folders not in train/: {extra}")
            lab = {c: i for i, c in enumerate(folders)}
            out[split] = [Item(os.path.join(sdir, c, n), lab[c], names[c]) for c in list_dirs(sdir)
                          for n in list_files(os.path.join(sdir, c)) if n.lower().endswith(IMAGE_EXTENSIONS)]
        if not out["test"]:
            raise DatasetNotFoundError(f"{os.path.join(base, 'test')} is missing or empty; a test split is required.")
        return Splits(out["train"], out["val"], out["test"])
    print(f"Image folder {base} has no train/ folder: splitting each class {p_trn:.0%}/{p_val:.0%}/"
          f"{1 - p_trn - p_val:.0%} with seed {split_seed}")
    # split_fewshot/ is where the few-shot cache of this folder goes: it is not a class
    splits = generate_split_from_folders(base, split_seed, p_trn, p_val, ignored=("split_fewshot",))
    for items in splits.as_tuple():
        items[:] = [Item(it.impath, it.label, names.get(it.classname, it.classname.replace("_", " ")))
                    for it in items]
    return splits


def check_label_names(items: Iterable, classnames: Sequence[str], what: str) -> None:
    """Check that each item's label indexes its class name in ``classnames`` (items may be Item or dassl Datum).

    The class name of an item is taken from its ``classname`` or, if empty, from its parent folder name;
    purely numeric folder names are accepted as is (only the label order can be checked then, by Dassl).
    """
    lowered = [c.lower() for c in classnames]
    for it in items:
        if not 0 <= it.label < len(classnames):
            raise DatasetError(f"{what}: label {it.label} of {it.impath} is outside 0..{len(classnames) - 1}")
        name = (it.classname or os.path.basename(os.path.dirname(it.impath))).lower()
        if name.isdigit():
            continue
        if name != lowered[it.label]:
            raise DatasetError(f"{what}: {it.impath} has label {it.label} ({classnames[it.label]!r}) but class "
                               f"{name!r}; the label order differs from {list(classnames)}.")
