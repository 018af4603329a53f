"""The dataset table: where each CoOp-family dataset lives, how it is read, and where to get it (protocols.md §1).

On-disk formats follow KaiyangZhou/CoOp ``DATASETS.md`` exactly (see ``shared/specs/protocols.md`` §1), so an existing
``$DATA`` folder works unchanged. Also the fixed, prompt-ready class lists of the domain benchmarks (dfkd.md §5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

__all__ = ["DatasetSpec", "SPECS", "SPECS_BY_KEY", "SPECS_BY_NAME", "get_spec", "where_to_get",
           "COOP_DATASETS_MD", "HF_REUPLOAD", "CALTECH_RENAME", "EUROSAT_RENAME",
           "PACS_CLASSNAMES", "VLCS_CLASSNAMES", "VISDA17_CLASSNAMES", "IMAGECLEF_CLASSNAMES", "IMAGECLEF_DOMAINS"]

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
HF_REUPLOAD = "https://huggingface.co/zhengli97/prompt_learning_dataset"


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


def where_to_get(spec: Optional[DatasetSpec]) -> str:
    """How to get ``spec``'s images and split file (for error messages); "" without a spec."""
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
