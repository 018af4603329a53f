"""Hand-crafted prompt templates per dataset (one template, no ensemble), as KDPL's teacher and VPT's text side use."""
from __future__ import annotations

from typing import Dict

DEFAULT_TEMPLATE = "a photo of a {}."

DATASET_TEMPLATES: Dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": DEFAULT_TEMPLATE,
    "Food101": "a photo of {}, a type of food.",
    "SUN397": DEFAULT_TEMPLATE,
    "Caltech101": DEFAULT_TEMPLATE,
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": DEFAULT_TEMPLATE,
    "ImageNetSketch": DEFAULT_TEMPLATE,
    "ImageNetV2": DEFAULT_TEMPLATE,
    "ImageNetA": DEFAULT_TEMPLATE,
    "ImageNetR": DEFAULT_TEMPLATE,
}


def template_for(dataset_name: str, override: str = "") -> str:
    """The template for a Dassl dataset name; unknown datasets need an explicit template."""
    if override:
        if "{}" not in override:
            raise ValueError(f"Template {override!r} has no '{{}}' slot for the class name.")
        return override
    if dataset_name not in DATASET_TEMPLATES:
        raise KeyError(f"No prompt template for dataset {dataset_name!r}; set TRAINER.KDPL.TEACHER_TEMPLATE "
                       f"(e.g. \"a photo of a {{}}.\"). Known: {sorted(DATASET_TEMPLATES)}.")
    return DATASET_TEMPLATES[dataset_name]
