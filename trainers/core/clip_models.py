"""One factory for every CLIP this project loads.

Backends:
  * ``openai``    -- the OpenAI module structure from whatever ``clip`` package is importable (the registry's
                     ``clip-anytorch``/``openai-clip`` or a CoOp/MaPLe fork's vendored copy). Students always use
                     it because deep-prompt injection drives its transformer blocks.
  * ``open_clip`` -- any open_clip architecture with a pretrained tag or a local checkpoint (large teachers such as
                     ViT-H-14-quickgelu / dfn5b).
  * ``tiny``      -- small random-initialised models with the OpenAI structure (or open_clip's), built from a fixed
                     seed so that a run and its ``--eval-only`` twin get identical frozen weights. For tests and demos.

Model definitions are data (:data:`TINY_CLIP_CONFIGS`); :func:`load_clip` is the only entry point.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import urllib.error
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_DOWNLOAD_ROOT = os.path.expanduser("~/.cache/clip")

# Tiny CLIPs with the OpenAI module structure. Widths are multiples of 64 so that ``build_model`` (heads = width//64)
# rebuilds exactly the model that saved a state dict.
TINY_CLIP_CONFIGS: Dict[str, Dict[str, Any]] = {
    "tiny-vit": dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                     context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                     transformer_layers=2),
    "tiny-vit-wide": dict(embed_dim=96, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                          context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                          transformer_layers=2),
    "tiny-vit-deep": dict(embed_dim=64, image_resolution=32, vision_layers=4, vision_width=64, vision_patch_size=8,
                          context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                          transformer_layers=4),
    "tiny-rn": dict(embed_dim=64, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                    vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                    transformer_heads=1, transformer_layers=2),
}
# The OpenAI architectures (shapes only): ``random:<name>`` builds one with random weights, for benchmarks and shape
# checks where no weights can be had.
OPENAI_ARCHS: Dict[str, Dict[str, Any]] = {
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=512,
                 transformer_heads=8, transformer_layers=12),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
                     context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12,
                     transformer_layers=12),
}
for _arch, _dims in OPENAI_ARCHS.items():
    TINY_CLIP_CONFIGS[f"random:{_arch}"] = _dims

# Same idea for open_clip (exercises the open_clip teacher path without weights).
TINY_OPEN_CLIP_CONFIGS: Dict[str, Dict[str, Any]] = {
    "tiny-open-clip": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    },
}
TINY_SEED = 20240703


class ClipLoadError(RuntimeError):
    """A CLIP model could not be built; the message says which file or setting to fix."""


@dataclass
class Preprocess:
    """What a model expects at its input: square size, resize mode, interpolation, mean and std."""

    size: int = 224
    mean: Tuple[float, float, float] = CLIP_MEAN
    std: Tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclass
class LoadedClip:
    """A CLIP model plus what is needed to use it: tokenizer, preprocessing, backend and provenance."""

    model: nn.Module
    tokenize: Callable[[Sequence[str]], torch.Tensor]
    preprocess: Preprocess
    backend: str
    name: str
    source: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        return int(self.model.visual.output_dim)


# --------------------------------------------------------------------------------------------- the ``clip`` package
def clip_package() -> Tuple[Any, Any]:
    """Return (``clip.clip`` API module, ``clip.model`` module) of whatever ``clip`` package is importable."""
    try:
        with warnings.catch_warnings():  # clip.clip imports pkg_resources, which warns on every run
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            api = importlib.import_module("clip.clip")
        model_mod = importlib.import_module("clip.model")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClipLoadError(
            "No `clip` package is importable. Install the registry's package (`pip install clip-anytorch`) or run "
            f"from a CoOp fork that vendors `clip/` ({exc})."
        ) from exc
    return api, model_mod


def openai_tokenize(texts: Sequence[str] | str, context_length: int = 77) -> torch.Tensor:
    """OpenAI BPE tokens as int64 (openai-clip returns int32); too-long texts are truncated, keeping the EOT token."""
    api, _ = clip_package()
    if isinstance(texts, str):
        texts = [texts]
    try:
        tokens = api.tokenize(list(texts), context_length=context_length, truncate=True)
    except TypeError:  # vendored copies without ``truncate``
        tokens = api.tokenize(list(texts), context_length=context_length)
    return tokens.long()


# What MaPLe/PromptSRC's vendored clip needs to build its stock (prompt-free) blocks.
PLAIN_DESIGN = {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
                "maple_length": 0}


def build_openai_clip(state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """``build_model`` of the importable clip package, also when it is MaPLe/PromptSRC's copy.

    Those copies require a ``design_details`` argument; a plain design (no prompts) makes them build the stock
    blocks, because this project injects prompts itself.
    """
    _, model_mod = clip_package()
    build = model_mod.build_model
    if "design_details" in inspect.signature(build).parameters:
        return build(dict(state_dict), dict(PLAIN_DESIGN)).float().eval()
    return build(dict(state_dict)).float().eval()


def _openai_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read an OpenAI checkpoint: a TorchScript archive (the official files) or a plain state dict."""
    try:
        archive = torch.jit.load(path, map_location="cpu")
        return archive.state_dict()
    except RuntimeError:
        pass
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ClipLoadError(f"Could not read CLIP weights from {path}: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "token_embedding.weight" not in obj:
        raise ClipLoadError(f"{path} is not an OpenAI CLIP checkpoint (no 'token_embedding.weight' key).")
    return obj


def resolve_openai_weights(name: str, download_root: str = "", weights: str = "") -> str:
    """Path of the weights file for an OpenAI model name, downloading it when possible.

    Raises :class:`ClipLoadError` naming the expected file and the config keys when it is missing offline.
    """
    if weights:
        if not os.path.isfile(weights):
            raise ClipLoadError(f"CLIP weights file {weights!r} does not exist (set by MODEL.CLIP.WEIGHTS or the "
                                "teacher's *_PRETRAINED key).")
        return weights
    if os.path.isfile(name):
        return name
    api, _ = clip_package()
    models = getattr(api, "_MODELS", {})
    if name not in models:
        raise ClipLoadError(
            f"Unknown OpenAI CLIP name {name!r} (backend openai). Its names: {sorted(models)}, or a local weights "
            "file. Tiny and random:<OpenAI name> models need backend tiny or auto; open_clip names need backend "
            "open_clip."
        )
    root = os.path.expanduser(download_root or DEFAULT_DOWNLOAD_ROOT)
    url = models[name]
    target = os.path.join(root, os.path.basename(url))
    if os.path.isfile(target):
        return target
    try:
        return api._download(url, root)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise ClipLoadError(
            f"CLIP weights for {name!r} are not at {target} and could not be downloaded ({exc}). Download "
            f"{url} to that path, or set MODEL.CLIP.DOWNLOAD_ROOT to the folder that holds "
            f"{os.path.basename(url)}, or MODEL.CLIP.WEIGHTS to the file."
        ) from exc


# ---------------------------------------------------------------------------------------------------- tiny models
def build_tiny_clip(name: str) -> nn.Module:
    """A random-initialised OpenAI-structure CLIP, identical on every call (own seed, global RNG untouched)."""
    if name not in TINY_CLIP_CONFIGS:
        raise ClipLoadError(f"Unknown tiny CLIP {name!r}; choose one of {sorted(TINY_CLIP_CONFIGS)}.")
    _, model_mod = clip_package()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED + sum(map(ord, name)))
        kwargs = dict(TINY_CLIP_CONFIGS[name])
        if "design_details" in inspect.signature(model_mod.CLIP.__init__).parameters:
            kwargs["design_details"] = dict(PLAIN_DESIGN)
        model = model_mod.CLIP(**kwargs)
    return model.float().eval()


def _build_tiny_open_clip(name: str) -> nn.Module:
    import open_clip
    from open_clip import factory

    factory._MODEL_CONFIGS.setdefault(name, TINY_OPEN_CLIP_CONFIGS[name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED + sum(map(ord, name)))
        model = open_clip.create_model(name, pretrained=None)
    return model.float().eval()


# ------------------------------------------------------------------------------------------------------ open_clip
def _load_open_clip(name: str, pretrained: str, download_root: str) -> Tuple[nn.Module, Preprocess]:
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover
        raise ClipLoadError(f"open_clip is needed for {name!r}: pip install open_clip_torch ({exc})") from exc
    if name in TINY_OPEN_CLIP_CONFIGS:
        model = _build_tiny_open_clip(name)
    else:
        if name not in open_clip.list_models():
            raise ClipLoadError(f"Unknown open_clip model {name!r}; see open_clip.list_models().")
        if pretrained and (os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))) \
                and not os.path.isfile(pretrained):
            raise ClipLoadError(f"open_clip checkpoint {pretrained!r} for {name!r} does not exist.")
        try:
            model = open_clip.create_model(name, pretrained=pretrained or None, cache_dir=download_root or None)
        except RuntimeError as exc:
            raise ClipLoadError(
                f"Could not load open_clip {name!r} with pretrained={pretrained!r}: {exc}. Offline, download the "
                "weights once and set the teacher's *_PRETRAINED key (e.g. TRAINER.KDPL.TEACHER_PRETRAINED) to the "
                "local checkpoint file, or its download folder via MODEL.CLIP.DOWNLOAD_ROOT."
            ) from exc
    model = model.float().eval()
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    pre = Preprocess(size=size, mean=tuple(cfg.get("mean", CLIP_MEAN)), std=tuple(cfg.get("std", CLIP_STD)),
                     interpolation=cfg.get("interpolation", "bicubic"),
                     resize_mode=cfg.get("resize_mode", "shortest"))
    return model, pre


def _open_clip_tokenizer(name: str) -> Callable[[Sequence[str]], torch.Tensor]:
    if name in TINY_OPEN_CLIP_CONFIGS:
        return openai_tokenize
    import open_clip

    tok = open_clip.get_tokenizer(name)
    return lambda texts: tok(list(texts)).long()


# --------------------------------------------------------------------------------------------------------- factory
def infer_backend(name: str) -> str:
    """``tiny`` for tiny names, ``openai`` for OpenAI names and files, else ``open_clip``."""
    if name in TINY_CLIP_CONFIGS:
        return "tiny"
    if name in TINY_OPEN_CLIP_CONFIGS:
        return "open_clip"
    if os.path.isfile(name):
        return "openai"
    try:
        api, _ = clip_package()
        if name in getattr(api, "_MODELS", {}):
            return "openai"
    except ClipLoadError:
        pass
    return "open_clip"


def load_clip(name: str, backend: str = "auto", pretrained: str = "", download_root: str = "",
              weights: str = "") -> LoadedClip:
    """Build a frozen-ready fp32 CLIP on CPU.

    Args:
        name: OpenAI name ("ViT-B/16"), open_clip name ("ViT-H-14-quickgelu"), tiny name ("tiny-vit") or a file.
        backend: "auto" | "openai" | "tiny" | "open_clip" | a name given to :func:`register_clip_backend`.
        pretrained: open_clip pretrained tag ("dfn5b") or local checkpoint path.
        download_root: folder for downloaded weights (OpenAI default ~/.cache/clip).
        weights: explicit local weights file for OpenAI/tiny models (overrides the name's download).
    """
    backend = infer_backend(name) if backend in ("", "auto") else backend
    if backend not in CLIP_BACKENDS:
        raise ClipLoadError(f"Unknown CLIP backend {backend!r}; use one of {sorted(CLIP_BACKENDS)} "
                            "(or register one with register_clip_backend).")
    return CLIP_BACKENDS[backend](name, pretrained, download_root, weights)


def student_names() -> List[str]:
    """Every name a student can have: the OpenAI names, the tiny OpenAI-structure models, random:<OpenAI name>."""
    api, _ = clip_package()
    return sorted(getattr(api, "_MODELS", {})) + sorted(TINY_CLIP_CONFIGS)


def load_student(name: str, download_root: str = "", weights: str = "") -> LoadedClip:
    """A student CLIP: OpenAI module structure only, because deep-prompt injection drives its blocks."""
    backend = infer_backend(name)
    if backend == "open_clip":
        if not weights:
            raise ClipLoadError(
                f"Unknown student backbone {name!r} (MODEL.BACKBONE.NAME). Students use the OpenAI CLIP structure: "
                f"one of {student_names()}, or a local OpenAI-format weights file (or MODEL.CLIP.WEIGHTS).")
        backend = "openai"
    return load_clip(name, backend, download_root=download_root, weights=weights)


def _tiny_backend(name: str, pretrained: str, download_root: str, weights: str) -> LoadedClip:
    if weights:  # a tiny model saved to disk goes through the real OpenAI loading path
        model = build_openai_clip(_openai_state_dict(resolve_openai_weights(name, weights=weights)))
    else:
        model = build_tiny_clip(name)
    pre = Preprocess(size=int(model.visual.input_resolution))
    return LoadedClip(model, openai_tokenize, pre, "openai", name, source=weights or "random")


def _openai_backend(name: str, pretrained: str, download_root: str, weights: str) -> LoadedClip:
    path = resolve_openai_weights(name, download_root, weights or (pretrained if os.path.isfile(pretrained) else ""))
    model = build_openai_clip(_openai_state_dict(path))
    pre = Preprocess(size=int(model.visual.input_resolution))
    return LoadedClip(model, openai_tokenize, pre, "openai", name, source=path)


def _open_clip_backend(name: str, pretrained: str, download_root: str, weights: str) -> LoadedClip:
    model, pre = _load_open_clip(name, pretrained or weights, download_root)
    return LoadedClip(model, _open_clip_tokenizer(name), pre, "open_clip", name, source=pretrained or "random")


Builder = Callable[[str, str, str, str], LoadedClip]
#: backend name -> builder(name, pretrained, download_root, weights); extend with :func:`register_clip_backend`.
CLIP_BACKENDS: Dict[str, Builder] = {"tiny": _tiny_backend, "openai": _openai_backend,
                                     "open_clip": _open_clip_backend}


def register_clip_backend(name: str, builder: Builder) -> None:
    """Make ``TEACHER_BACKEND <name>`` (or ``load_clip(..., backend=name)``) build models with ``builder``."""
    CLIP_BACKENDS[name] = builder


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter and put the module in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def is_vit(model: nn.Module) -> bool:
    """True for OpenAI-structure vision transformers (deep visual prompts need one)."""
    return hasattr(model.visual, "conv1") and hasattr(model.visual, "class_embedding")


def visual_width(model: nn.Module) -> int:
    """Token width of the OpenAI visual tower (ViT width, or the ResNet's output dim)."""
    if is_vit(model):
        return int(model.visual.conv1.out_channels)
    return int(model.visual.output_dim)
