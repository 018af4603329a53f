"""What every prompt mode shares: the mode names, the ``[S*]`` slot, the style dictionary, the settings of all
modes (:class:`DiversifyConfig`) and their output (:class:`PromptTargets`). No Dassl import."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import torch

__all__ = ["PROMPT_MODES", "SLOT", "STYLE_DICTIONARY", "DiversifyConfig", "PromptTargets", "filter_styles",
           "class_major_labels"]

PROMPT_MODES = ("handcrafted", "mix", "random", "contrastive")
SLOT = "[S*]"

#: Generic style words (reconstruction). Words shared with a benchmark's domain names are dropped by
#: :func:`filter_styles` so the dictionary never names a test domain.
STYLE_DICTIONARY: Tuple[str, ...] = (
    "photo", "sketch", "painting", "cartoon", "drawing", "watercolor", "oil painting", "pencil drawing", "clip art",
    "3D render", "pixel art", "embroidery", "mosaic", "graffiti", "origami", "tattoo", "low-poly", "charcoal",
    "ukiyo-e", "infrared",
)


@dataclass
class DiversifyConfig:
    """Every reconstructed knob of the four prompt modes (mirrors TRAINER.DFKD.*, see docs/dfkd.md)."""

    template: str = "a photo of a {}."
    template_ensemble: Tuple[str, ...] = ()
    style_dict: Tuple[str, ...] = STYLE_DICTIONARY
    mix_k: int = 2
    mix_alpha: float = 1.0
    mix_space: str = "feature"  # feature | token
    mix_template: str = "a {style} of a {}."
    style_template: str = "a [S*] style of a {}."
    rand_stats: str = "table"  # table | isotropic
    rand_iso_std: float = 0.02
    rand_n_tokens: int = 1
    rand_guard: bool = True
    rand_max_tries: int = 20
    n_prompts: int = 16
    n_pseudo_tokens: int = 1
    con_tau: float = 0.1
    con_lambda_cls: float = 1.0
    con_cls_scale: float = 100.0
    con_steps: int = 200
    con_lr: float = 2e-3
    con_init_std: float = 0.02
    con_positives: str = "none"  # none (uniformity) | cross_class (same word under another class)
    con_rounds: int = 1
    con_joint: bool = False  # alternate prompt steps with latent steps on probe images (image-space repulsion)
    con_joint_rounds: int = 4
    con_joint_iters: int = 25
    con_joint_steps: int = 50
    con_joint_lambda: float = 1.0

    def key(self, mode: str) -> Dict[str, Any]:
        """The fields that change ``mode``'s targets (the synthetic-set cache key includes only these)."""
        common = {"template": self.template, "template_ensemble": list(self.template_ensemble)}
        if mode == "handcrafted":
            return common
        if mode == "mix":
            extra = {"style_dict": list(self.style_dict), "mix_k": self.mix_k, "mix_alpha": self.mix_alpha,
                     "mix_space": self.mix_space}
            if self.mix_space == "feature":
                extra["mix_template"] = self.mix_template
            else:
                extra["style_template"] = self.style_template
            return {**common, **extra}
        if mode == "random":
            return {**common, "style_template": self.style_template, "rand_stats": self.rand_stats,
                    "rand_iso_std": self.rand_iso_std, "rand_n_tokens": self.rand_n_tokens,
                    "rand_guard": self.rand_guard, "rand_max_tries": self.rand_max_tries}
        if mode == "contrastive":
            key = {**common, "style_template": self.style_template, "style_dict": list(self.style_dict),
                   "n_prompts": self.n_prompts, "n_pseudo_tokens": self.n_pseudo_tokens, "tau": self.con_tau,
                   "lambda_cls": self.con_lambda_cls, "cls_scale": self.con_cls_scale, "steps": self.con_steps,
                   "lr": self.con_lr, "init_std": self.con_init_std, "positives": self.con_positives,
                   "rounds": self.con_rounds}
            if self.con_joint:  # only then, so that sets built before the option existed keep their key
                key["joint"] = {"rounds": self.con_joint_rounds, "iters": self.con_joint_iters,
                                "steps": self.con_joint_steps, "lambda": self.con_joint_lambda}
            return key
        raise ValueError(f"Unknown prompt mode {mode!r}; use one of {PROMPT_MODES}.")


@dataclass
class PromptTargets:
    """One L2-normalised text target per synthesised image, its label and a readable description."""

    features: torch.Tensor  # (N, E) fp32
    labels: List[int]
    texts: List[str]
    prompt_ids: List[int]
    extra: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def state(self) -> Dict[str, Any]:
        """A ``torch.save``-able dict (tensors, lists, numbers) that :meth:`from_state` restores."""
        return {"features": self.features.cpu(), "labels": list(self.labels), "texts": list(self.texts),
                "prompt_ids": list(self.prompt_ids), "extra": self.extra}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "PromptTargets":
        return cls(state["features"], list(state["labels"]), list(state["texts"]), list(state["prompt_ids"]),
                   dict(state.get("extra", {})))


def _words(text: str) -> set:
    return {w for w in text.lower().replace("_", " ").replace("-", " ").split() if w}


def filter_styles(styles: Sequence[str], domain_names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Drop styles sharing a word with a domain name ("painting" vs "art_painting"), so no test domain is named.

    Returns (kept, dropped).
    """
    banned = set().union(*(_words(d) for d in domain_names)) if domain_names else set()
    kept = [s for s in styles if not (_words(s) & banned)]
    return kept, [s for s in styles if s not in kept]


def class_major_labels(classnames: Sequence[str], per_class: int) -> List[int]:
    """The label of every synthesised image, class-major: ``per_class`` images of class 0, then class 1, ..."""
    if per_class < 1:
        raise ValueError("Images per class must be >= 1.")
    return [c for c in range(len(classnames)) for _ in range(per_class)]
