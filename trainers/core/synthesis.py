"""Text-driven image synthesis against a frozen CLIP, and the on-disk synthetic set Dassl trains on.

:class:`Synthesizer` optimises a batch of independent image latents (``generators.py``) so that CLIP's embedding of
augmented views ("cutouts") of each image approaches its own text target (spherical distance, Adam). The recipe is
VQGAN-CLIP's (nerdyrodent/VQGAN-CLIP), our reconstruction of the paper's synthesis stage (docs/dfkd.md).

:func:`synthesize_set` writes ``images/<class>/<index>.png`` + ``split.json`` (CoOp format) + ``manifest.json``
(prompt, seed, final CLIP score, teacher probability per image) into ``<name>.partial/`` and renames it when done.
Each finished batch is committed atomically, so an interrupted run resumes without redoing or losing images; the
prompt targets are saved first, so a resumed run uses the very same prompts. No Dassl import.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from .checkpoints import atomic_torch_save, atomic_write, atomic_write_text
from .diversify import PromptTargets
from .generators import VQGANDecoder, build_image_param, image_seed
from .precision import autocast, resolve_precision

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PARTIAL_SUFFIX = ".partial"


class SyntheticSetError(RuntimeError):
    """A synthetic set is missing, empty, inconsistent with the run, or being written by another process."""


# ----------------------------------------------------------------------------------------------------- cutouts
@dataclass
class CutoutConfig:
    """Augmented views per image and step (VQGAN-CLIP's MakeCutouts, re-implemented in plain torch)."""

    n: int = 8
    augment: bool = True
    p: float = 0.7
    noise: float = 0.1
    degrees: float = 15.0
    translate: float = 0.1
    perspective: float = 0.7
    hue: float = 0.1
    saturation: float = 0.1
    erase_scale: Tuple[float, float] = (0.1, 0.4)
    erase_ratio: Tuple[float, float] = (0.3, 3.3)


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def pool_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(adaptive average pool + adaptive max pool) / 2 to ``size`` (identity when already that size)."""
    return (F.adaptive_avg_pool2d(images, size) + F.adaptive_max_pool2d(images, size)) / 2


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n,) + shape, generator=gen, device=device)


def _homographies(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(V, 3, 3) projective maps taking 4 points ``src`` (V, 4, 2) to ``dst`` (V, 4, 2)."""
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)
    h = torch.linalg.solve(a, torch.cat([u, v], 1))
    return torch.cat([h, torch.ones_like(h[:, :1])], 1).view(-1, 3, 3)


def _view_params(n: int, cfg: CutoutConfig, gen: torch.Generator, device: torch.device) -> Dict[str, torch.Tensor]:
    """Random parameters of one image's n views (drawn from that image's own generator)."""
    apply = torch.rand(n, 3, generator=gen, device=device) < cfg.p  # affine, perspective, colour
    angle = _uniform(n, -cfg.degrees, cfg.degrees, gen, device) * math.pi / 180 * apply[:, 0]
    shift = _uniform(n, -cfg.translate, cfg.translate, gen, device, 2) * 2 * apply[:, :1]
    corner = _uniform(n, 0.0, cfg.perspective, gen, device, 4, 2) * apply[:, 1, None, None]
    hue = _uniform(n, -cfg.hue, cfg.hue, gen, device) * 2 * math.pi * apply[:, 2]
    sat = 1 + _uniform(n, -cfg.saturation, cfg.saturation, gen, device) * apply[:, 2]
    erase = torch.rand(5, generator=gen, device=device)  # one rectangle for all views of the image
    noise = _uniform(n, 0.0, cfg.noise, gen, device)
    return {"angle": angle, "shift": shift, "corner": corner, "hue": hue, "sat": sat, "erase": erase,
            "noise": noise}


def _warp(views: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
    """Random perspective followed by a random rotation + translation, as one border-padded resampling."""
    v, _, r, _ = views.shape
    device = views.device
    square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    inward = -square.sign()
    persp = _homographies(square.expand(v, -1, -1), square + inward * corner)
    cos, sin = torch.cos(angle), torch.sin(angle)
    affine = torch.zeros(v, 3, 3, device=device)
    affine[:, 0, 0], affine[:, 0, 1], affine[:, 0, 2] = cos, -sin, shift[:, 0]
    affine[:, 1, 0], affine[:, 1, 1], affine[:, 1, 2] = sin, cos, shift[:, 1]
    affine[:, 2, 2] = 1
    m = affine @ persp
    lin = (torch.arange(r, device=device, dtype=torch.float32) + 0.5) / r * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, -1, 3)
    mapped = pts @ m.transpose(1, 2)
    grid = (mapped[..., :2] / mapped[..., 2:].clamp_min(1e-6)).view(v, r, r, 2)
    return F.grid_sample(views, grid.to(views.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _colour(views: torch.Tensor, hue: torch.Tensor, sat: torch.Tensor) -> torch.Tensor:
    """Hue rotation and saturation scaling of the chroma (I, Q) plane in YIQ space, clamped to [0, 1]."""
    yiq = _RGB2YIQ.to(views.device)
    rot = torch.zeros(len(hue), 3, 3, device=views.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = sat * torch.cos(hue), -sat * torch.sin(hue)
    rot[:, 2, 1], rot[:, 2, 2] = sat * torch.sin(hue), sat * torch.cos(hue)
    m = torch.linalg.inv(yiq) @ rot @ yiq
    return torch.einsum("vdc,vchw->vdhw", m.to(views.dtype), views).clamp(0, 1)


def _erase_masks(erase: torch.Tensor, cfg: CutoutConfig, r: int) -> torch.Tensor:
    """(B, r, r) masks, 0 inside one random rectangle per image (area fraction and aspect ratio as configured),
    each applied with probability p; ``erase`` (B, 5) holds the uniform draws."""
    area = cfg.erase_scale[0] + (cfg.erase_scale[1] - cfg.erase_scale[0]) * erase[:, 1]
    lo, hi = math.log(cfg.erase_ratio[0]), math.log(cfg.erase_ratio[1])
    ratio = torch.exp(lo + (hi - lo) * erase[:, 2])
    h = torch.sqrt(area * ratio).clamp(max=1.0)
    w = torch.sqrt(area / ratio).clamp(max=1.0)
    top, left = (1 - h) * erase[:, 3], (1 - w) * erase[:, 4]
    coords = (torch.arange(r, device=erase.device) + 0.5) / r
    rows = (coords[None] >= top[:, None]) & (coords[None] < (top + h)[:, None])
    cols = (coords[None] >= left[:, None]) & (coords[None] < (left + w)[:, None])
    inside = rows[:, :, None] & cols[:, None, :] & (erase[:, 0] < cfg.p)[:, None, None]
    return 1.0 - inside.float()


def make_cutouts(images: torch.Tensor, size: int, cfg: CutoutConfig, generators: Sequence[torch.Generator]
                 ) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (B * n, 3, size, size): pooled views, augmented, plus per-view Gaussian noise.

    Image b draws all its randomness from ``generators[b]``, so its views do not depend on the rest of the batch.
    """
    base = pool_resize(images, size)
    views = base.repeat_interleave(cfg.n, dim=0)
    params = [_view_params(cfg.n, cfg, g, images.device) for g in generators]
    cat = {k: torch.cat([p[k] for p in params]) for k in ("angle", "shift", "corner", "hue", "sat", "noise")}
    if cfg.augment:
        views = _warp(views, cat["angle"], cat["shift"], cat["corner"])
        views = _colour(views, cat["hue"], cat["sat"])
        masks = _erase_masks(torch.stack([p["erase"] for p in params]), cfg, size).repeat_interleave(cfg.n, 0)
        views = views * masks[:, None].to(views.dtype)
    if cfg.noise > 0:
        noise = torch.cat([torch.randn((cfg.n,) + tuple(base.shape[1:]), generator=g, device=images.device)
                           for g in generators])
        views = views + cat["noise"].view(-1, 1, 1, 1).to(views.dtype) * noise.to(views.dtype)
    return views


# -------------------------------------------------------------------------------------------------- synthesis
@dataclass
class SynthesisConfig:
    """The synthesis recipe (mirrors TRAINER.DFKD.SYN_*; every value is a reconstruction, docs/dfkd.md)."""

    generator: str = "fourier"
    iters: int = 400
    lr: float = 0.1
    size: int = 224
    batch: int = 16
    precision: str = "fp32"
    keep: str = "final"  # final | best
    init_weight: float = 0.0
    fourier_decay: float = 1.0
    vqgan_init: str = "uniform"
    cutouts: CutoutConfig = field(default_factory=CutoutConfig)

    def key(self) -> Dict[str, Any]:
        """What changes the images (batch size does not: latents and randomness are per image)."""
        out = asdict(self)
        out.pop("batch")
        return out


@dataclass
class BatchResult:
    """Final images (8-bit quantised, in [0, 1], CPU), their CLIP features (on the device) and per-image scores."""
    images: torch.Tensor
    clip_score: torch.Tensor
    teacher_prob: torch.Tensor
    loss: torch.Tensor
    init_clip_score: torch.Tensor
    init_teacher_prob: torch.Tensor
    features: torch.Tensor


def spherical_distance(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """2 * arcsin(||u - t|| / 2)^2 for unit vectors (monotone in 1 - cos), computed in fp32."""
    return (u.float() - t.float()).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


class Synthesizer:
    """Optimise images so that a frozen CLIP's embedding of their views matches per-image text targets.

    Args:
        model: CLIP with ``encode_image`` (frozen here, never updated).
        input_size / mean / std: CLIP's own preprocessing (views are pooled to ``input_size`` and normalised).
        class_features: (K, E) zero-shot head used to report the teacher probability of the target class.
        scale: logit scale of that head (100, CLIP's).
    """

    def __init__(self, model: nn.Module, input_size: int, mean: Sequence[float], std: Sequence[float],
                 class_features: torch.Tensor, cfg: SynthesisConfig, device: torch.device,
                 decoder: Optional[VQGANDecoder] = None, scale: float = 100.0):
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.input_size = int(input_size)
        self.cfg = cfg
        self.device = device
        self.decoder = decoder.to(device) if decoder is not None else None
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.class_features = class_features.to(device).float()
        self.scale = float(scale)
        prec = resolve_precision(cfg.precision, device, "synthesis")
        self.autocast_mode = "amp" if prec == "fp16" else prec
        if cfg.keep not in ("final", "best"):
            raise ValueError(f"Unknown SYN_KEEP {cfg.keep!r}; use final or best.")

    def encode(self, views: torch.Tensor) -> torch.Tensor:
        """L2-normalised fp32 CLIP features of [0, 1] views at CLIP resolution."""
        with autocast(self.device, self.autocast_mode):
            feats = self.model.encode_image((views - self.mean) / self.std)
        return F.normalize(feats.float(), dim=-1)

    def render(self, gen: nn.Module) -> torch.Tensor:
        """The generator's images; the decoder runs under the configured autocast, the result is fp32."""
        with autocast(self.device, self.autocast_mode):
            return gen().float()

    @torch.no_grad()
    def score(self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cos(f(x), t), teacher softmax probability of the label, f(x)) on the un-augmented image."""
        feats = self.encode(pool_resize(images.to(self.device), self.input_size))
        cos = (feats * targets.to(self.device)).sum(-1)
        probs = (self.scale * feats @ self.class_features.t()).softmax(-1)
        return cos.cpu(), probs.gather(1, labels.to(self.device).view(-1, 1)).squeeze(1).cpu(), feats

    def image_param(self, seeds: Sequence[int]) -> nn.Module:
        """Fresh latents of the configured generator for images with these seeds."""
        cfg = self.cfg
        return build_image_param(cfg.generator, seeds, cfg.size, self.decoder, cfg.fourier_decay,
                                 cfg.vqgan_init).to(self.device)

    def run(self, targets: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int],
            iters: Optional[int] = None, gen: Optional[nn.Module] = None) -> BatchResult:
        """Synthesise one image per target row; ``seeds[b]`` fixes image b's latent init and view randomness.
        ``gen``: latents from :meth:`image_param` to continue optimising (fresh ones when None)."""
        cfg = self.cfg
        targets = F.normalize(targets.to(self.device).float(), dim=-1)
        gen = self.image_param(seeds) if gen is None else gen
        latent = gen.latent()
        start = latent.detach().clone() if cfg.init_weight else None
        optim = torch.optim.Adam([latent], lr=cfg.lr)
        rngs = [torch.Generator(device=self.device).manual_seed(s + 7919) for s in seeds]
        with torch.no_grad():
            init_cos, init_prob, _ = self.score(self.render(gen), targets, labels)
        best_loss = torch.full((len(seeds),), float("inf"))
        best = None
        per_image = torch.zeros(len(seeds))
        for _ in range(cfg.iters if iters is None else iters):
            images = self.render(gen)
            views = make_cutouts(images, self.input_size, cfg.cutouts, rngs)
            feats = self.encode(views).view(len(seeds), cfg.cutouts.n, -1)
            losses = spherical_distance(feats, targets.unsqueeze(1)).mean(1)
            total = losses.sum()
            if start is not None:
                total = total + cfg.init_weight * (latent - start).pow(2).flatten(1).mean(1).sum()
            optim.zero_grad(set_to_none=True)
            total.backward()
            optim.step()
            gen.post_step()
            per_image = losses.detach().cpu()
            if cfg.keep == "best":
                better = per_image < best_loss
                best_loss = torch.where(better, per_image, best_loss)
                best = images.detach() if best is None else torch.where(better.to(self.device).view(-1, 1, 1, 1),
                                                                         images.detach(), best)
        with torch.no_grad():
            final = self.render(gen) if best is None else best
            final = (final.float().clamp(0, 1) * 255).round() / 255  # what the PNG will hold
            cos, prob, feats = self.score(final, targets, labels)
        loss = best_loss if cfg.keep == "best" and best is not None else per_image
        return BatchResult(final.cpu(), cos, prob, loss, init_cos, init_prob, feats)


# --------------------------------------------------------------------------------------------- the set on disk
def key_digest(key: Dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable key."""
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def class_folder(name: str) -> str:
    """Folder name of a class (no separators or spaces)."""
    return name.replace(os.sep, "_").replace(" ", "_")


def _write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _save_png(path: str, image: torch.Tensor) -> None:
    arr = np.ascontiguousarray(image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    atomic_write(path, lambda f: Image.fromarray(arr).save(f, format="PNG"))


@contextlib.contextmanager
def _exclusive(folder: str) -> Iterator[None]:
    """One writer per partial set (advisory lock where fcntl exists)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    handle = open(os.path.join(folder, ".lock"), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise SyntheticSetError(f"Another process is synthesising {folder}; wait for it or remove that run.") from exc
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _progress(total: int, initial: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext(None)
    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled)


def synthesize_set(set_dir: str, key: Dict[str, Any], classnames: Sequence[str], per_class: int,
                   make_targets: Callable[[], PromptTargets], make_synthesizer: Callable[[], Synthesizer],
                   batch: int, seed: int, progress: bool = True) -> str:
    """Create (or finish) the synthetic set at ``set_dir``; returns ``set_dir``. A complete set is reused as is.

    ``make_targets`` runs only when no saved targets exist (a resumed run reuses them); ``make_synthesizer`` only
    when images remain. Image ``i`` (class-major: ``i = c * per_class + j``) is seeded by ``image_seed(seed, i)``.
    """
    if not classnames:
        raise SyntheticSetError("The class-name list is empty: nothing to synthesise.")
    manifest_path = os.path.join(set_dir, "manifest.json")
    if os.path.isfile(manifest_path):
        check_manifest(set_dir, key)
        return set_dir
    partial = set_dir.rstrip(os.sep) + PARTIAL_SUFFIX
    os.makedirs(partial, exist_ok=True)
    with _exclusive(partial):
        key_path = os.path.join(partial, "key.json")
        if os.path.isfile(key_path):
            with open(key_path) as f:
                if json.load(f) != json.loads(json.dumps(key, default=str)):
                    raise SyntheticSetError(f"{partial} was started with other settings; delete it to restart.")
        else:
            _write_json(key_path, json.loads(json.dumps(key, default=str)))
        targets = _load_or_make_targets(partial, make_targets, len(classnames) * per_class)
        records = _read_records(partial)
        todo = [i for i in range(len(targets)) if i not in records]
        if todo:
            synth = make_synthesizer()
            with _progress(len(targets), len(targets) - len(todo), f"synthesis {key.get('mode', '')}",
                           progress) as bar:
                for start in range(0, len(todo), max(1, batch)):
                    chunk = todo[start: start + batch]
                    seeds = [image_seed(seed, i) for i in chunk]
                    labels = torch.tensor([targets.labels[i] for i in chunk])
                    out = synth.run(targets.features[chunk], labels, seeds)
                    for b, i in enumerate(chunk):
                        c = targets.labels[i]
                        rel = f"images/{class_folder(classnames[c])}/{i - c * per_class:05d}.png"
                        _save_png(os.path.join(partial, rel), out.images[b])
                        records[i] = {"index": i, "path": rel, "label": c, "classname": classnames[c],
                                      "prompt": targets.texts[i], "prompt_id": targets.prompt_ids[i],
                                      "seed": seeds[b], "clip_score": float(out.clip_score[b]),
                                      "teacher_prob": float(out.teacher_prob[b]), "loss": float(out.loss[b]),
                                      "init_clip_score": float(out.init_clip_score[b])}
                    _write_json(os.path.join(partial, "records.json"), {str(k): v for k, v in records.items()})
                    if bar is not None:
                        bar.update(len(chunk))
        _finish(partial, key, classnames, records)
    if os.path.exists(set_dir):  # another process finished first: keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    else:
        os.replace(partial, set_dir)
    return set_dir


def _load_or_make_targets(partial: str, make_targets: Callable[[], PromptTargets], expected: int
                          ) -> PromptTargets:
    path = os.path.join(partial, "targets.pt")
    if os.path.isfile(path):
        targets = PromptTargets.from_state(torch.load(path, map_location="cpu", weights_only=True))
    else:
        targets = make_targets()
        atomic_torch_save(targets.state(), path)
    if len(targets) != expected:
        raise SyntheticSetError(f"{path} holds {len(targets)} targets, expected {expected}.")
    return targets


def _read_records(partial: str) -> Dict[int, Dict[str, Any]]:
    """Finished images: records whose file exists (a record is written only after its image)."""
    path = os.path.join(partial, "records.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        raw = json.load(f)
    return {int(k): v for k, v in raw.items() if os.path.isfile(os.path.join(partial, v["path"]))}


def _finish(partial: str, key: Dict[str, Any], classnames: Sequence[str], records: Dict[int, Dict[str, Any]]
            ) -> None:
    ordered = [records[i] for i in sorted(records)]
    _write_json(os.path.join(partial, "split.json"),
                {"train": [[r["path"], r["label"], r["classname"]] for r in ordered], "val": [], "test": []})
    scores = [r["clip_score"] for r in ordered]
    _write_json(os.path.join(partial, "manifest.json"), {
        "complete": True, "key": json.loads(json.dumps(key, default=str)), "classnames": list(classnames),
        "count": len(ordered), "mean_clip_score": float(np.mean(scores)) if scores else None,
        "mean_teacher_prob": float(np.mean([r["teacher_prob"] for r in ordered])) if ordered else None,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "images": ordered})
    for name in ("records.json", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(partial, name))


def check_manifest(set_dir: str, key: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest of a complete set, after checking it was made with ``key``."""
    with open(os.path.join(set_dir, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("key") != json.loads(json.dumps(key, default=str)):
        raise SyntheticSetError(f"{set_dir} was synthesised with other settings (its manifest key differs).")
    return manifest


def read_synthetic_set(set_dir: str, classnames: Optional[Sequence[str]] = None
                       ) -> List[Tuple[str, int, str]]:
    """(absolute path, label, class name) of every image of a set: from ``split.json``, else from class folders
    (``images/<class>/`` or ``<class>/``, labels in the order of ``classnames``, or sorted folders)."""
    if not os.path.isdir(set_dir):
        raise SyntheticSetError(f"Synthetic set folder {set_dir!r} does not exist.")
    split = os.path.join(set_dir, "split.json")
    if os.path.isfile(split):
        with open(split) as f:
            items = [(os.path.join(set_dir, p), int(y), str(c)) for p, y, c in json.load(f)["train"]]
        missing = [p for p, _, _ in items if not os.path.isfile(p)]
        if missing:
            raise SyntheticSetError(f"{split} lists {len(missing)} missing images, e.g. {missing[0]}.")
    else:
        root = os.path.join(set_dir, "images") if os.path.isdir(os.path.join(set_dir, "images")) else set_dir
        folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        names = list(classnames) if classnames else [f.replace("_", " ") for f in folders]
        by_folder = {class_folder(n): (i, n) for i, n in enumerate(names)}
        unknown = [f for f in folders if f not in by_folder]
        if unknown:
            raise SyntheticSetError(f"{root} has class folders {unknown} that are not classes of this run "
                                    f"({names}).")
        items = [(os.path.join(root, f, x), by_folder[f][0], by_folder[f][1]) for f in folders
                 for x in sorted(os.listdir(os.path.join(root, f))) if x.lower().endswith(IMAGE_EXTENSIONS)]
    if not items:
        raise SyntheticSetError(f"The synthetic set {set_dir} contains no images (expected images/<class>/*.png "
                                "and split.json, e.g. from tools/synthesize.py).")
    if classnames is not None:
        wrong = sorted({(y, c) for _, y, c in items if y >= len(classnames) or
                        class_folder(classnames[y]) != class_folder(c)})
        if wrong:
            raise SyntheticSetError(f"{set_dir} labels do not match this run's classes {list(classnames)}: "
                                    f"{wrong[:5]}.")
    return items
