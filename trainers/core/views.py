"""Augmented views keyed by (seed, epoch, image index), so a teacher output can be cached for the exact view.

FKD-style (Shen & Xing, ECCV 2022): instead of a random crop drawn from the global RNG, each training image gets a
random-resized-crop box and a flip drawn from its own generator, seeded by ``(seed, epoch, index)``. Online training
and training from a teacher cache then see bit-identical views, so cached targets equal online targets.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends on all three numbers (no collisions between nearby epochs and indices)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class ViewSampler:
    """Random-resized-crop + horizontal-flip parameters, deterministic per (epoch, index)."""

    seed: int = 0
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5

    def params(self, epoch: int, index: int, width: int, height: int) -> Tuple[int, int, int, int, int]:
        """(top, left, crop height, crop width, flip) with torchvision's RandomResizedCrop sampling rule."""
        gen = torch.Generator().manual_seed(view_seed(self.seed, epoch, index))
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        box = None
        for _ in range(10):
            u = torch.rand(3, generator=gen).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
                left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
                box = (top, left, h, w)
                break
        if box is None:  # fall back to a central crop with the ratio clamped into range
            in_ratio = width / height
            if in_ratio < self.ratio[0]:
                w, h = width, int(round(width / self.ratio[0]))
            elif in_ratio > self.ratio[1]:
                h, w = height, int(round(height * self.ratio[1]))
            else:
                w, h = width, height
            box = ((height - h) // 2, (width - w) // 2, h, w)
        flip = int(float(torch.rand(1, generator=gen)) < self.flip_prob)
        return (*box, flip)


def apply_view(img: Image.Image, params: Sequence[int], size: int, mean: Sequence[float], std: Sequence[float],
               interpolation: str = "bicubic") -> torch.Tensor:
    """Crop, resize, flip, to tensor, normalise: the student's (and teacher's) input for this view."""
    top, left, h, w, flip = params
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
            "nearest": InterpolationMode.NEAREST}[interpolation]
    out = TF.resized_crop(img, top, left, h, w, [size, size], interpolation=mode)
    if flip:
        out = TF.hflip(out)
    return TF.normalize(TF.to_tensor(out), list(mean), list(std))
