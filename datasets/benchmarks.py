"""The 15 CoOp-family datasets, registered under CoOp's names (DATASET.NAME) with CoOp's on-disk formats.

Each class is a one-line declaration over :class:`BenchmarkDataset`; what differs between datasets is data in
``datasets.specs.SPECS`` (folder, image dir, split file, reader kind). Requires Dassl.
"""
from __future__ import annotations

from dassl.data.datasets import DatasetBase

from .cache import check_cached_paths, find_cached, load_cache, write_cache
from .config import dataset_option
from .dassl_base import PipelineMixin, cfg_cache_dirs, dataset_root, register_dataset, verify_images
from .items import Splits
from .paths import dataset_paths
from .readers import read_benchmark, read_imagenet
from .specs import SPECS_BY_NAME, DatasetSpec

__all__ = ["BenchmarkDataset", "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
           "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101", "ImageNetV2", "ImageNetSketch",
           "ImageNetA", "ImageNetR"]

PREPROCESSED = "preprocessed.pkl"


class BenchmarkDataset(PipelineMixin, DatasetBase):
    """A dataset of ``datasets.specs.SPECS``: read its lists, then the shared few-shot / base-new pipeline.

    Test-only ImageNet variants ignore NUM_SHOTS (as CoOp) but honour SUBSAMPLE_CLASSES (CoOp ignores it; "all",
    the default, gives CoOp's behaviour).
    """

    spec: DatasetSpec

    def __init__(self, cfg):
        spec = self.spec
        root = dataset_root(cfg)
        self.dataset_dir, self.image_dir = dataset_paths(spec, root)
        if spec.kind == "imagenet":
            splits = self._imagenet_lists(cfg)
        else:
            splits = read_benchmark(spec, root, generate_split=bool(dataset_option(cfg, "GENERATE_SPLIT")),
                                    split_seed=int(dataset_option(cfg, "SPLIT_SEED")))
        if spec.kind in ("split_json", "fgvc"):  # paths come from text files: check them once, with a message
            verify_images(splits.train + splits.val + splits.test, f"{spec.name} ({self.dataset_dir})")
        few_shot = spec.kind != "imagenet_variant"
        if not few_shot and int(cfg.DATASET.NUM_SHOTS) >= 1:
            print(f"{spec.name} is a test-only set: DATASET.NUM_SHOTS is ignored (all images are used)")
        self._finish(cfg, splits.train, splits.val, splits.test, self.dataset_dir,
                     val_is_test=spec.kind == "imagenet", few_shot=few_shot)

    def _imagenet_lists(self, cfg) -> Splits:
        """ImageNet lists, cached as ``preprocessed.json`` when writable (CoOp's ``preprocessed.pkl`` is read too)."""
        dirs = cfg_cache_dirs(cfg, self.dataset_dir, subdir="")
        path = find_cached(PREPROCESSED, dirs)
        if path is not None:
            print(f"Loading preprocessed ImageNet lists from {path}")
            data = load_cache(path, ("train", "test"))
            train, test = data["train"], data["test"]
            probe = train[:: max(1, len(train) // 50)] + test[:: max(1, len(test) // 50)]
            check_cached_paths(probe, path)
            return Splits(train, test, test)
        splits = read_imagenet(self.dataset_dir, self.spec)
        write_cache({"train": splits.train, "test": splits.test}, PREPROCESSED, dirs, what="ImageNet lists")
        return splits


def _declare(name: str, doc: str) -> type:
    """Create and register the class ``name`` (a named subclass, so pickles, logs and the registry read well)."""
    cls = type(name, (BenchmarkDataset,), {"spec": SPECS_BY_NAME[name], "__doc__": doc, "__module__": __name__})
    return register_dataset(cls)


ImageNet = _declare("ImageNet", "ImageNet-1k (imagenet/images/{train,val}). The official val set is used as BOTH "
                                "val and test (CoOp): never use it for model selection (best_val).")
Caltech101 = _declare("Caltech101", "Caltech101 (caltech-101/101_ObjectCategories, split_zhou_Caltech101.json).")
OxfordPets = _declare("OxfordPets", "Oxford-IIIT Pets (oxford_pets/images, split_zhou_OxfordPets.json).")
StanfordCars = _declare("StanfordCars", "Stanford Cars (stanford_cars/, split paths relative to the folder).")
OxfordFlowers = _declare("OxfordFlowers", "Oxford Flowers 102 (oxford_flowers/jpg, split_zhou_OxfordFlowers.json).")
Food101 = _declare("Food101", "Food-101 (food-101/images, split_zhou_Food101.json).")
FGVCAircraft = _declare("FGVCAircraft", "FGVC Aircraft (fgvc_aircraft/, official variant txt files).")
SUN397 = _declare("SUN397", "SUN397 (sun397/SUN397, split_zhou_SUN397.json).")
DescribableTextures = _declare("DescribableTextures", "DTD (dtd/images, split_zhou_DescribableTextures.json).")
EuroSAT = _declare("EuroSAT", "EuroSAT RGB (eurosat/2750, split_zhou_EuroSAT.json).")
UCF101 = _declare("UCF101", "UCF101 mid-frames (ucf101/UCF-101-midframes, split_zhou_UCF101.json).")
ImageNetV2 = _declare("ImageNetV2", "ImageNetV2 matched-frequency, test only; folder k = ImageNet label k.")
ImageNetSketch = _declare("ImageNetSketch", "ImageNet-Sketch, test only; sorted class folders.")
ImageNetA = _declare("ImageNetA", "ImageNet-A, test only; its 200 folders are labelled 0..199 in sorted order "
                                  "(NOT ImageNet indices) with their own class names.")
ImageNetR = _declare("ImageNetR", "ImageNet-R, test only; its 200 folders are labelled 0..199 in sorted order "
                                  "(NOT ImageNet indices) with their own class names.")
