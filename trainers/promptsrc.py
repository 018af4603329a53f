"""PromptSRC's self-regulating terms and Gaussian prompt aggregation (Khattak et al., ICCV 2023), written once, as
components a trainer holds (:class:`SelfConsistency`, :class:`GaussianPromptAggregation`).

Used by ``KDPL_PromptSRC`` (which replaces PromptSRC's cross-entropy by KDPL's loss) and by ``PromptKD_Teacher``
(PromptSRC with its cross-entropy, on a large CLIP).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .config import add_keys, cfg_node, cfg_value
from .core.losses import kl_divergence
from .core.prompt_learners import IVLPPromptLearner, encode_texts

# The reference averages 60 ImageNet templates whose exact list is not reproduced here; by default we average
# CoOp's 7-template ImageNet ensemble plus the plain template. Set TRAINER.SCL.TEMPLATES_FILE (one template
# per line, "{}" = class name) to use the reference list. (Deviation, documented in the README.)
DEFAULT_SCL_TEMPLATES: List[str] = [
    "a photo of a {}.", "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
]


def add_promptsrc_config(cfg) -> None:
    add_keys(cfg, "TRAINER.PROMPTSRC", {
        "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
        "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25, "IMAGE_LOSS_WEIGHT": 10,
        "GPA_MEAN": 15, "GPA_STD": 1,
    })
    # Ours, not PromptSRC's: in a node of our own, which a fork's extend_cfg (replacing TRAINER.PROMPTSRC) keeps.
    add_keys(cfg, "TRAINER.SCL", {"TEMPLATES_FILE": ""})


def gaussian_weights(max_epoch: int, mean: float, std: float) -> List[float]:
    """g(e) = Normal pdf(e; mean, std) for e = 1..max_epoch, normalised to sum to 1."""
    raw = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, max_epoch + 1)]
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"GPA weights vanish for mean {mean}, std {std} over {max_epoch} epochs.")
    return [r / total for r in raw]


def read_templates(path: str) -> List[str]:
    if not path:
        return list(DEFAULT_SCL_TEMPLATES)
    with open(path, encoding="utf-8") as f:
        templates = [line.strip() for line in f if line.strip()]
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"{path} must hold one template per line, each with a '{{}}' slot.")
    return templates


def self_consistency_terms(img: torch.Tensor, txt: torch.Tensor, zs_img: torch.Tensor, zs_txt: torch.Tensor,
                           scale: torch.Tensor, text_weight: float, image_weight: float
                           ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """L_SCL = w_t * mean|t - t_zs| + w_i * mean|u - u_zs| + KL(p_zs || p) summed and divided by B*K.

    All features L2-normalised; logits p from ``scale * u t^T``, p_zs from ``scale * u_zs t_zs^T``.
    """
    text_l1 = F.l1_loss(txt, zs_txt, reduction="mean")
    image_l1 = F.l1_loss(img, zs_img, reduction="mean")
    logits = scale * img @ txt.t()
    zs_logits = scale * zs_img @ zs_txt.t()
    kl = kl_divergence(zs_logits, logits, 1.0, "mean")
    total = text_weight * text_l1 + image_weight * image_l1 + kl
    return total, {"loss SCL text": text_l1, "loss SCL image": image_l1, "loss SCL KL": kl}


def build_ivlp_learner(cfg, clip_model, tokenize) -> IVLPPromptLearner:
    """PromptSRC's student prompts (IVLP: deep text and vision prompts), configured by ``TRAINER.PROMPTSRC``."""
    c = cfg_node(cfg, "TRAINER.PROMPTSRC")
    return IVLPPromptLearner(clip_model, tokenize, c.N_CTX_TEXT, c.N_CTX_VISION, c.CTX_INIT,
                             c.PROMPT_DEPTH_TEXT, c.PROMPT_DEPTH_VISION)


class SelfConsistency:
    """PromptSRC's self-regulating constraints for a prompted student (held by the trainer as ``self.scl``): the
    student's logits and L_SCL against its own frozen, template-averaged zero-shot features (computed once per
    class set)."""

    def __init__(self, cfg, model):
        node = cfg_node(cfg, "TRAINER.PROMPTSRC")
        self.model = model
        self.text_weight, self.image_weight = float(node.TEXT_LOSS_WEIGHT), float(node.IMAGE_LOSS_WEIGHT)
        self.templates = read_templates(cfg_value(cfg, "TRAINER.SCL.TEMPLATES_FILE"))
        self._zero_shot_text: Dict[str, torch.Tensor] = {}

    def zero_shot_text(self, key: str, classnames: List[str]) -> torch.Tensor:
        """Template-mean frozen text features of a class set, computed once."""
        if key not in self._zero_shot_text:
            model = self.model
            feats = torch.stack([
                encode_texts(model.clip, model.tokenize, [t.format(c.replace("_", " ")) for c in classnames],
                             truncate=model.truncate_text)
                for t in self.templates
            ]).mean(dim=0)
            self._zero_shot_text[key] = F.normalize(feats, dim=-1)
        return self._zero_shot_text[key]

    def __call__(self, images: torch.Tensor, key: str, classnames: List[str], idx: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Student logits over the selected classes, L_SCL, and its logged terms."""
        model = self.model
        img = model.encode_image(images)
        txt = model.encode_text(key, idx)
        with torch.no_grad():
            zs_img = F.normalize(model.image_encoder(images).float(), dim=-1)
        zs_txt = self.zero_shot_text(key, classnames)
        if idx is not None:
            zs_txt = zs_txt[idx]
        scale = model.logit_scale
        loss, terms = self_consistency_terms(img, txt, zs_img, zs_txt, scale, self.text_weight, self.image_weight)
        return scale * img @ txt.t(), loss, terms


class GaussianPromptAggregation:
    """PromptSRC's GPA as an end-of-epoch part (:class:`~trainers.core.trainer_parts.EpochPart`): a Gaussian-weighted
    sum of the learnable tensors over epochs, in fp32, loaded into the learner after the last epoch (before it is
    saved). The running sum is part of every checkpoint, so a resumed run aggregates every epoch, as an uninterrupted
    one."""

    def __init__(self, cfg):
        c = cfg_node(cfg, "TRAINER.PROMPTSRC")
        self.mean, self.std = float(c.GPA_MEAN), float(c.GPA_STD)
        self.running: Optional[Dict[str, torch.Tensor]] = None
        self.partial = False  # the sum misses epochs (resumed from a checkpoint without one)

    def end_epoch(self, learnable: nn.Module, epoch: int, max_epoch: int) -> None:
        w = gaussian_weights(max_epoch, self.mean, self.std)[epoch]
        state = learnable.state_dict()
        if epoch == 0 or self.running is None:
            self.partial = epoch > 0
            self.running = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in state.items()}
        for k, v in state.items():
            self.running[k] += w * v.float()
        if epoch + 1 == max_epoch:
            if self.partial:
                print("Warning: the checkpoint training resumed from holds no GPA sum (saved by an older version); "
                      "Gaussian prompt aggregation only covers the epochs run in this process")
            learnable.load_state_dict({k: v.to(state[k].dtype) for k, v in self.running.items()})
            print("Loaded the Gaussian-aggregated prompts (GPA)")

    def state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        return self.running

    def load_state_dict(self, state: Optional[Dict[str, torch.Tensor]], device: torch.device) -> None:
        self.running = {k: v.to(device, torch.float32) for k, v in state.items()} if state is not None else None
