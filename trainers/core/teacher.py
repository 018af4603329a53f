"""A frozen CLIP teacher that owns its preprocessing and computes its class vectors once.

Like timm's distillation task: the wrapper is always in eval mode, never trains, never appears in an optimizer, and
adapts the student's input tensor to what its own weights expect (size, resize mode, mean/std) on the device.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .clip_models import LoadedClip, Preprocess, freeze
from .encoders import VisionEncoder
from .precision import autocast, cast_to_precision, full_precision
from .prompt_learners import encode_texts


class FrozenTeacher(nn.Module):
    """Frozen CLIP teacher.

    Args:
        loaded: the teacher CLIP and its preprocessing.
        input_size / input_mean / input_std: what the incoming tensors were prepared with (the student's transform).
        precision: fp32 | fp16 | bf16 | amp for the teacher's forward (never silently fp32 beside an fp16 student).
        truncate_text: encode class texts cut after their last EOT token where exact (``MODEL.CLIP.TRUNCATE_TEXT``).
    """

    def __init__(self, loaded: LoadedClip, input_size: int, input_mean: Sequence[float], input_std: Sequence[float],
                 precision: str = "fp32", truncate_text: bool = True):
        super().__init__()
        self.model = freeze(loaded.model)
        self.truncate_text = bool(truncate_text)
        self.tokenize = loaded.tokenize
        self.preprocess: Preprocess = loaded.preprocess
        self.name = loaded.name
        self.precision = precision
        cast_to_precision(self.model, precision)
        # The model's image tower driven by our blocks (SDPA, the last block for the class token only): the same
        # features as ``model.encode_image``; towers it cannot drive exactly run their own forward.
        self.image_encoder = VisionEncoder(self.model)
        self.input_size = int(input_size)
        self.register_buffer("in_mean", torch.tensor(input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(input_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("own_mean", torch.tensor(self.preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("own_std", torch.tensor(self.preprocess.std).view(1, 3, 1, 1), persistent=False)
        self.same_norm = bool(torch.allclose(self.in_mean, self.own_mean) and torch.allclose(self.in_std, self.own_std))
        self.register_buffer("class_features", torch.empty(0), persistent=False)
        self.text_encoder_calls = 0
        self.eval()

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """The teacher stays in eval mode whatever the trainer asks."""
        return super().train(False)

    # ------------------------------------------------------------------------------------------------------ text
    @torch.no_grad()
    def set_class_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode the class prompts once; stored L2-normalised in fp32 as ``class_features`` (N, E)."""
        if len(texts) == 0:
            raise ValueError("The teacher needs at least one class prompt.")
        self.text_encoder_calls += 1
        device = self.in_mean.device
        with autocast(device, self.precision):
            self.class_features = encode_texts(self.model, self.tokenize, list(texts),
                                               truncate=self.truncate_text).to(device)
        return self.class_features

    # ----------------------------------------------------------------------------------------------------- image
    def adapt_input(self, images: torch.Tensor) -> torch.Tensor:
        """Re-normalise / resize the student's tensor to the teacher's own preprocessing (identity when equal)."""
        x = images
        if not self.same_norm:
            x = (x * self.in_std + self.in_mean - self.own_mean) / self.own_std
        size = self.preprocess.size
        if x.shape[-1] != size or x.shape[-2] != size:
            # The student's view is already square-cropped, so "squash" and "shortest" coincide here.
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        return x

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised fp32 image features of the teacher for the student's view."""
        x = self.adapt_input(images)
        with autocast(x.device, self.precision):
            feats = self.image_encoder(x)
        return F.normalize(feats.float(), dim=-1)

    def logits(self, images: torch.Tensor, scale: float | torch.Tensor, idx: Optional[torch.Tensor] = None
               ) -> torch.Tensor:
        """``scale * cos(image, class)`` over all classes (or the selected ones), fp32 even inside the student's
        autocast, no autograd graph."""
        if self.class_features.numel() == 0:
            raise RuntimeError("Call set_class_texts() before asking the teacher for logits.")
        feats = self.encode_image(images)
        weights = self.class_features if idx is None else self.class_features[idx]
        with full_precision(feats.device):
            return (scale * feats @ weights.t()).clone()
