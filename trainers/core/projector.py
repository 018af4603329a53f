"""PromptKD's student (Li et al., CVPR 2024): a prompted CLIP image tower, a projector, and stored class vectors.

The student never runs a text encoder: its image feature is mapped by a small projector into the teacher's embedding
space and scored against the teacher's pre-computed, L2-normalised class vectors W (N x E_teacher). W is a
non-persistent fp32 buffer, so checkpoints hold only what trains (prompts, projector, BatchNorm statistics).
No Dassl import.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .clip_models import TINY_CLIP_CONFIGS, LoadedClip, freeze, load_clip
from .encoders import VisionEncoder
from .prompt_learners import VPTPromptLearner

# Output (embedding) width of the OpenAI CLIPs, so the student's projector can be sized without loading the teacher
# (``--eval-only`` never builds the teacher).
OPENAI_EMBED_DIMS = {"RN50": 1024, "RN101": 512, "RN50x4": 640, "RN50x16": 768, "RN50x64": 1024, "ViT-B/32": 512,
                     "ViT-B/16": 512, "ViT-L/14": 768, "ViT-L/14@336px": 768}


def known_embed_dim(name: str, download_root: str = "", weights: str = "") -> int:
    """Embedding width of a CLIP by name: a table for OpenAI and tiny models, else by loading it (slow, rare)."""
    if name in OPENAI_EMBED_DIMS and not weights:
        return OPENAI_EMBED_DIMS[name]
    if name in TINY_CLIP_CONFIGS and not weights:
        return int(TINY_CLIP_CONFIGS[name]["embed_dim"])
    return load_clip(name, download_root=download_root, weights=weights).embed_dim


class Projector(nn.Module):
    """Student feature (B, C_in) -> teacher space (B, C_out) through 1x1 convolutions on a (B, C, 1, 1) view.

    ``layers`` convolutions with BatchNorm + ReLU between them: 1 = linear map, 2 = the paper's projector
    (Conv-BN-ReLU-Conv, 986,112 parameters for 512 -> 768), 3 = one more Conv-BN-ReLU block (paper Tab. 12). The
    ``conv1`` Sequential keeps the reference module's parameter names (``conv1.0``, ``conv1.1``, ``conv1.3``).
    """

    def __init__(self, in_dim: int, out_dim: int, layers: int = 2):
        super().__init__()
        if layers not in (1, 2, 3):
            raise ValueError(f"PROJECT_LAYER must be 1, 2 or 3, got {layers}.")
        blocks = []
        width = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Conv2d(width, out_dim, 1), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True)]
            width = out_dim
        blocks.append(nn.Conv2d(width, out_dim, 1))
        self.conv1 = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x[:, :, None, None]).flatten(1)


class StudentLearner(VPTPromptLearner):
    """Everything PromptKD's student trains: deep visual prompts (VPT-deep / IVLP vision side) and the projector.

    Depth ``d``: input prompts appended after the patches plus ``d - 1`` per-block prompts replacing them before
    blocks 1..d-1. With ViT-B/16, 4 tokens, depth 9 and an L/14 teacher this is 1,013,760 parameters in 15 tensors.
    """

    def __init__(self, clip_model: nn.Module, n_ctx_vision: int, depth: int, teacher_dim: int,
                 project_layers: int = 2):
        blocks = len(clip_model.visual.transformer.resblocks) if hasattr(clip_model.visual, "transformer") else 0
        if not 1 <= depth <= max(blocks, 1):
            raise ValueError(f"PROMPT_DEPTH_VISION must be in 1..{blocks} (the student has {blocks} blocks), "
                             f"got {depth}.")
        super().__init__(clip_model, n_ctx_vision, depth)
        self.projector = Projector(int(clip_model.visual.output_dim), int(teacher_dim), project_layers)


class PromptKDStudent(nn.Module):
    """Prompted image tower + projector; logits = exp(logit_scale) * cos(P(f(x)), W) over stored class vectors.

    Only the image tower of ``loaded`` is kept (the text tower is dropped: the student never encodes text).
    ``key="train"`` scores all N classes; ``key="eval"`` the rows chosen by :meth:`set_eval_rows` (base = W[:m],
    new = W[m:]).
    """

    def __init__(self, loaded: LoadedClip, learner: StudentLearner):
        super().__init__()
        self.image_encoder = VisionEncoder(loaded.model)
        if not self.image_encoder.vit:
            self.image_encoder.refuse_prompts()
        freeze(self.image_encoder)
        self.prompt_learner = learner
        self.register_buffer("logit_scale", loaded.model.logit_scale.detach().exp().float().clone(), persistent=False)
        self.register_buffer("class_vectors", torch.empty(0), persistent=False)
        self.eval_rows: Tuple[int, Optional[int]] = (0, None)

    # -- class vectors
    def set_class_vectors(self, vectors: torch.Tensor) -> None:
        """Store W (N, E) once, fp32, on the student's device."""
        expected = self.prompt_learner.projector.conv1[-1].out_channels
        if vectors.dim() != 2 or vectors.shape[1] != expected:
            raise ValueError(f"Class vectors of shape {tuple(vectors.shape)} do not match the projector's output "
                             f"width {expected} (the teacher's embedding width).")
        self.class_vectors = vectors.detach().float().to(self.logit_scale.device).clone()

    def set_eval_rows(self, start: int, stop: Optional[int]) -> None:
        self.eval_rows = (int(start), None if stop is None else int(stop))

    @property
    def has_class_vectors(self) -> bool:
        return self.class_vectors.numel() > 0

    # -- forward
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image features (B, E_teacher) in fp32."""
        learner = self.prompt_learner
        prompts, deep = learner.vision_prompts()
        feats = self.image_encoder(images, prompts, deep)
        proj = learner.projector
        feats = proj(feats.to(proj.conv1[0].weight.dtype))
        return F.normalize(feats.float(), dim=-1)

    def forward(self, images: torch.Tensor, key: str = "train") -> torch.Tensor:
        if not self.has_class_vectors:
            raise RuntimeError("The student has no class vectors yet: call set_class_vectors() first.")
        weights = self.class_vectors
        if key == "eval":
            weights = weights[self.eval_rows[0]: self.eval_rows[1]]
        elif key != "train":
            raise KeyError(f"Unknown class set {key!r}; use 'train' (all classes) or 'eval'.")
        return self.logit_scale * self.encode_image(images) @ weights.t()
