"""Random-Prompt (reconstruction, docs/dfkd.md): a pseudo-word drawn from N(mean, std) of CLIP's token-embedding
table in the ``[S*]`` slot, resampled until CLIP's zero-shot head still reads the prompt as its class."""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from ..prompt_learners import clean_classname
from .config import SLOT, DiversifyConfig, PromptTargets, class_major_labels
from .encoder import PromptEncoder

log = logging.getLogger(__name__)

__all__ = ["guard_accepts", "random_targets"]


def guard_accepts(features: torch.Tensor, labels: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
    """True where CLIP's zero-shot head (argmax cosine) still assigns the prompt to its own class."""
    return (features @ class_features.t()).argmax(-1) == labels.to(features.device)


def random_targets(encoder: PromptEncoder, classnames: Sequence[str], per_class: int, cfg: DiversifyConfig,
                   seed: int, class_features: torch.Tensor) -> PromptTargets:
    """Random-Prompt targets: seeded pseudo-words, resampled (up to RAND_MAX_TRIES) while the head misreads them."""
    labels = class_major_labels(classnames, per_class)
    lab = torch.tensor(labels, device=encoder.device)
    if cfg.rand_stats == "table":
        mean, std = encoder.embedding_stats()
    elif cfg.rand_stats == "isotropic":
        mean = torch.zeros(encoder.width, device=encoder.device)
        std = torch.full((encoder.width,), float(cfg.rand_iso_std), device=encoder.device)
    else:
        raise ValueError(f"Unknown RAND_STATS {cfg.rand_stats!r}; use table or isotropic.")
    gen = torch.Generator().manual_seed(int(seed))
    n, d = len(labels), encoder.width
    slots = encoder.slot_prompts(cfg.style_template, classnames, cfg.rand_n_tokens)
    words = torch.empty(n, cfg.rand_n_tokens, d)
    feats = torch.empty(n, class_features.shape[1])
    tries = torch.zeros(n, dtype=torch.long)
    todo = torch.arange(n)
    for _ in range(max(1, cfg.rand_max_tries if cfg.rand_guard else 1)):
        draw = torch.randn(len(todo), cfg.rand_n_tokens, d, generator=gen)
        draw = mean.cpu() + std.cpu() * draw
        f = encoder.encode_slots_frozen(slots, draw, lab[todo])
        words[todo], feats[todo] = draw, f
        tries[todo] += 1
        if not cfg.rand_guard:
            break
        ok = guard_accepts(f, lab[todo].cpu(), class_features.cpu())
        todo = todo[~ok]
        if len(todo) == 0:
            break
    rejected = len(todo) if cfg.rand_guard else 0
    if rejected:
        log.warning("Random-Prompt: %d of %d prompts still misclassified after %d tries (kept).", rejected, n,
                    cfg.rand_max_tries)
    names = [clean_classname(c) for c in classnames]
    texts = [cfg.style_template.replace(SLOT, f"[random#{i}]").format(names[c]) for i, c in enumerate(labels)]
    return PromptTargets(feats, labels, texts, list(range(n)),
                         {"words": words, "tries": tries, "guard_failed": rejected})
