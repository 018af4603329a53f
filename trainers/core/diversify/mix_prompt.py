"""Mix-Prompt (reconstruction, docs/dfkd.md): convex Dirichlet mixtures of m styles of the style dictionary, mixed in
feature space (normalised text features) or token space (mean token embeddings in the ``[S*]`` slot)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from ..prompt_learners import clean_classname
from .config import SLOT, DiversifyConfig, PromptTargets, class_major_labels
from .encoder import PromptEncoder

__all__ = ["mix_features", "sample_mix", "mix_targets"]


def mix_features(components: torch.Tensor, weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Convex mixture of unit features: components (N, m, E), weights (N, m) -> (normalised, unnormalised).

    A one-hot weight row returns its component unchanged (it is already a unit vector), so the pure-style prompt is
    reproduced bit for bit instead of being renormalised to within one ulp.
    """
    mixed = (weights.unsqueeze(-1).to(components.dtype) * components).sum(1)
    vertex = (weights == 1).any(-1, keepdim=True)
    return torch.where(vertex, mixed, F.normalize(mixed, dim=-1)), mixed


def sample_mix(n: int, n_styles: int, k: int, alpha: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per image: k distinct style indices and Dirichlet(alpha) weights (seeded numpy generator)."""
    if not 1 <= k <= n_styles:
        raise ValueError(f"MIX_K={k} must be between 1 and the number of styles ({n_styles}).")
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(n_styles, size=k, replace=False) for _ in range(n)])
    lam = rng.dirichlet(np.full(k, float(alpha)), size=n) if k > 1 else np.ones((n, 1))
    return idx, lam.astype(np.float32)


def mix_targets(encoder: PromptEncoder, classnames: Sequence[str], per_class: int, cfg: DiversifyConfig,
                seed: int, style_idx: Optional[np.ndarray] = None, weights: Optional[np.ndarray] = None
                ) -> PromptTargets:
    """Mix-Prompt targets; ``style_idx``/``weights`` override the seeded draw (tests use one-hot weights)."""
    styles = list(cfg.style_dict)
    if not styles:
        raise ValueError("The style dictionary is empty (TRAINER.DFKD.STYLE_DICT after domain filtering).")
    labels = class_major_labels(classnames, per_class)
    if style_idx is None or weights is None:
        style_idx, weights = sample_mix(len(labels), len(styles), cfg.mix_k, cfg.mix_alpha, seed)
    lab = torch.tensor(labels)
    idx_t = torch.as_tensor(style_idx, dtype=torch.long)
    lam = torch.as_tensor(weights, dtype=torch.float32)
    names = [clean_classname(c) for c in classnames]
    if cfg.mix_space == "feature":
        grid = torch.stack([encoder.encode([cfg.mix_template.format(c, style=s) for c in names]) for s in styles])
        comps = grid[idx_t.to(grid.device), lab.unsqueeze(1).to(grid.device)]  # (N, m, E): styles x own class
        feats, _ = mix_features(comps, lam.to(comps.device))
    elif cfg.mix_space == "token":
        table = torch.stack([encoder.word_embedding(s) for s in styles])  # (M, d)
        words = (lam.to(table.device).unsqueeze(-1) * table[idx_t.to(table.device)]).sum(1)
        feats = encoder.encode_slots_frozen(encoder.slot_prompts(cfg.style_template, classnames, 1), words, lab)
    else:
        raise ValueError(f"Unknown MIX_SPACE {cfg.mix_space!r}; use feature or token.")
    template = cfg.mix_template if cfg.mix_space == "feature" else cfg.style_template.replace(SLOT, "{style}")
    mixes = ["[" + " + ".join(f"{float(w):.3f} {styles[int(s)]}" for s, w in zip(si, wi)) + "]"
             for si, wi in zip(style_idx, weights)]
    texts = [template.format(names[c], style=mix) for mix, c in zip(mixes, labels)]
    return PromptTargets(feats.float().cpu(), labels, texts, list(range(len(labels))),
                         {"styles": styles, "style_idx": torch.as_tensor(style_idx), "weights": lam})
