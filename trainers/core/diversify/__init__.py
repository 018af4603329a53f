"""Prompt diversification for data-free distillation of CLIP (Xuan et al., ACM MM 2023): one text target per image.

The paper names three methods (Mix-Prompt, Random-Prompt, Contrastive-Prompt; Contrastive best) but the mechanisms
below are OUR reconstruction (docs/dfkd.md lists every choice and the TRAINER.DFKD key that changes it):

* ``handcrafted``: every image of class c targets g("a photo of a {c}.") (optionally a template ensemble).
* ``mix``: convex mixtures (Dirichlet weights) of m styles from a generic style dictionary, mixed in feature space
  (normalised text features) or token space (the mean token embedding of each style word in a ``[S*]`` slot).
* ``random``: a pseudo-word drawn from N(mean, std) of CLIP's token-embedding table in the ``[S*]`` slot, resampled
  until CLIP's zero-shot head still reads the prompt as its class.
* ``contrastive``: P learned style pseudo-words pushed apart by a uniformity InfoNCE loss, anchored to their class by
  a cross-entropy against the hand-crafted class features.

The modes live in one module each (``mix_prompt``, ``random_prompt``, ``contrastive_prompt``) over the shared
``config`` (settings, targets, style words) and ``encoder`` (the frozen text tower with ``[S*]`` slots); this package
re-exports their public names and dispatches on the mode. No Dassl import.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..prompt_learners import clean_classname
from .config import (PROMPT_MODES, SLOT, STYLE_DICTIONARY, DiversifyConfig, PromptTargets, class_major_labels,
                     filter_styles)
from .contrastive_prompt import (Probe, StyleWords, contrastive_prompt_loss, contrastive_targets,
                                 image_space_loss, init_style_words, learn_style_words, pairwise_stats, refine_jointly)
from .encoder import PLACEHOLDER, PromptEncoder, SlotPrompts, Tokenize
from .mix_prompt import mix_features, mix_targets, sample_mix
from .random_prompt import guard_accepts, random_targets

__all__ = ["PROMPT_MODES", "SLOT", "PLACEHOLDER", "STYLE_DICTIONARY", "Tokenize", "DiversifyConfig", "PromptTargets",
           "SlotPrompts", "PromptEncoder", "filter_styles", "class_major_labels", "guard_accepts", "mix_features",
           "sample_mix", "mix_targets", "random_targets", "pairwise_stats", "contrastive_prompt_loss", "StyleWords",
           "init_style_words", "learn_style_words", "Probe", "image_space_loss", "refine_jointly",
           "contrastive_targets", "build_prompt_targets"]


def build_prompt_targets(mode: str, encoder: PromptEncoder, classnames: Sequence[str], per_class: int,
                         cfg: DiversifyConfig, seed: int, probe: Optional[Probe] = None) -> PromptTargets:
    """Targets for ``per_class`` images of every class (class-major order), seeded. ``probe``: Contrastive-Prompt's
    probe images when ``cfg.con_joint`` is on."""
    if not classnames:
        raise ValueError("The class-name list is empty: data-free distillation needs at least one class name.")
    class_features = encoder.class_features(classnames, cfg.template, cfg.template_ensemble)
    if mode == "handcrafted":
        labels = class_major_labels(classnames, per_class)
        texts = [cfg.template.format(clean_classname(classnames[c])) for c in labels]
        return PromptTargets(class_features[torch.tensor(labels)].float().cpu(), labels, texts, [0] * len(labels))
    if mode == "mix":
        return mix_targets(encoder, classnames, per_class, cfg, seed)
    if mode == "random":
        return random_targets(encoder, classnames, per_class, cfg, seed, class_features)
    if mode == "contrastive":
        return contrastive_targets(encoder, classnames, per_class, cfg, seed, class_features, probe)
    raise ValueError(f"Unknown prompt mode {mode!r}; use one of {PROMPT_MODES}.")
