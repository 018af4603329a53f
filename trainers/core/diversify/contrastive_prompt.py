"""Contrastive-Prompt (reconstruction, docs/dfkd.md): P learned style pseudo-words pushed apart by a uniformity
InfoNCE loss, anchored to their class by a cross-entropy against the hand-crafted class features."""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..prompt_learners import clean_classname
from .config import SLOT, DiversifyConfig, PromptTargets, class_major_labels
from .encoder import PromptEncoder, SlotPrompts

log = logging.getLogger(__name__)

__all__ = ["pairwise_stats", "contrastive_prompt_loss", "StyleWords", "init_style_words", "learn_style_words",
           "Probe", "image_space_loss", "refine_jointly", "contrastive_targets"]

#: ``probe(targets (B, E), labels)`` runs more latent steps of B persistent probe images towards ``targets`` and
#: returns their L2-normalised CLIP image features (B, E), without gradients (e.g.
#: core.probe_images.ProbeImages).
Probe = Callable[[torch.Tensor, List[int]], torch.Tensor]


def pairwise_stats(features: torch.Tensor) -> Tuple[float, float]:
    """(mean pairwise cosine, min pairwise Euclidean distance) among prompts, per class, averaged over classes.

    ``features`` (P, K, E) unit vectors.
    """
    p = features.shape[0]
    if p < 2:
        return 1.0, 0.0
    off = ~torch.eye(p, dtype=torch.bool, device=features.device)
    cos, dist = [], []
    for c in range(features.shape[1]):
        f = features[:, c]
        sim = f @ f.t()
        cos.append(sim[off].mean())
        dist.append(torch.cdist(f, f)[off].min())
    return float(torch.stack(cos).mean()), float(torch.stack(dist).mean())


def contrastive_prompt_loss(features: torch.Tensor, class_features: torch.Tensor, tau: float, lambda_cls: float,
                            scale: float = 100.0, positives: str = "none",
                            bank: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """L_div + lambda_cls * L_cls for features (P, K, E) of P style words under K classes.

    L_div (``positives="none"``): per class, mean over p of log sum_{q != p} exp(t_p . t_q / tau) plus the memory
    ``bank`` (M, K, E) as extra negatives. ``"cross_class"``: InfoNCE whose positive is the same word under the
    next class and whose negatives are the other words there. L_cls: CE of ``scale * t_{p,c} . w`` towards c.
    """
    p, k, _ = features.shape
    div = []
    for c in range(k):
        anchor = features[:, c]
        if positives == "cross_class":
            if k < 2:
                raise ValueError("CON_POSITIVES cross_class needs at least two classes.")
            logits = anchor @ features[:, (c + 1) % k].t() / tau
        elif positives == "none":
            logits = (anchor @ anchor.t() / tau).masked_fill(torch.eye(p, dtype=torch.bool,
                                                                       device=anchor.device), float("-inf"))
        else:
            raise ValueError(f"Unknown CON_POSITIVES {positives!r}; use none or cross_class.")
        if bank is not None and bank.numel():
            logits = torch.cat([logits, anchor @ bank[:, c].t().to(anchor.dtype) / tau], dim=1)
        if positives == "cross_class":
            div.append(F.cross_entropy(logits, torch.arange(p, device=logits.device)))
        else:
            div.append(torch.logsumexp(logits, dim=1).mean())
    l_div = torch.stack(div).mean()
    cls_logits = scale * features.reshape(p * k, -1) @ class_features.t().to(features.dtype)
    target = torch.arange(k, device=features.device).repeat(p)
    l_cls = F.cross_entropy(cls_logits, target)
    loss = l_div + lambda_cls * l_cls
    return loss, {"loss": loss.detach(), "div": l_div.detach(), "cls": l_cls.detach()}


class StyleWords(nn.Module):
    """P learnable style pseudo-words (P, n, d): the only parameters of Contrastive-Prompt."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.words = nn.Parameter(init.clone())

    def features(self, encoder: PromptEncoder, slots: SlotPrompts) -> torch.Tensor:
        """t_{p,c} as (P, K, E)."""
        p, k = self.words.shape[0], slots.tokens.shape[0]
        class_idx = torch.arange(k, device=encoder.device).repeat(p)
        words = self.words.repeat_interleave(k, dim=0)
        return encoder.encode_slots(slots, words, class_idx).reshape(p, k, -1)


def init_style_words(encoder: PromptEncoder, styles: Sequence[str], n_prompts: int, n_tokens: int, std: float,
                     seed: int) -> torch.Tensor:
    """(P, n, d): randomly chosen dictionary words' mean embeddings (each repeated n times) plus N(0, std^2)."""
    if not styles:
        raise ValueError("Contrastive-Prompt initialises its words from the style dictionary, which is empty.")
    gen = torch.Generator().manual_seed(int(seed))
    choice = torch.randint(len(styles), (n_prompts,), generator=gen).tolist()
    base = torch.stack([encoder.word_embedding(styles[i]).cpu() for i in choice])
    base = base.unsqueeze(1).expand(-1, n_tokens, -1)
    return base + std * torch.randn(base.shape, generator=gen)


def learn_style_words(encoder: PromptEncoder, slots: SlotPrompts, class_features: torch.Tensor,
                      init: torch.Tensor, cfg: DiversifyConfig, bank: Optional[torch.Tensor] = None,
                      steps: Optional[int] = None) -> Tuple[torch.Tensor, List[Dict[str, float]]]:
    """Optimise the words with Adam (CLIP frozen); returns the learned words (P, n, d) and the loss history."""
    words = StyleWords(init.to(encoder.device))
    optim = torch.optim.Adam(words.parameters(), lr=cfg.con_lr)
    history = []
    for _ in range(cfg.con_steps if steps is None else steps):
        feats = words.features(encoder, slots)
        loss, terms = contrastive_prompt_loss(feats, class_features, cfg.con_tau, cfg.con_lambda_cls,
                                              cfg.con_cls_scale, cfg.con_positives, bank)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        history.append({k: float(v) for k, v in terms.items()})
    return words.words.detach(), history


def image_space_loss(features: torch.Tensor, image_features: torch.Tensor, prompt_ids: torch.Tensor,
                     class_ids: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy that each probe image picks out its own prompt among all P prompts of its class:
    ``CE(u_i . t_{q, c_i} / tau over q, target p_i)`` for features (P, K, E) and images (B, E). Lowering it moves
    a prompt towards its own images and every other prompt away from them: prompts pushed apart in image space."""
    per_image = features[:, class_ids].transpose(0, 1)  # (B, P, E): every prompt under image i's class
    logits = torch.einsum("be,bpe->bp", image_features.to(features.dtype), per_image) / tau
    return F.cross_entropy(logits, prompt_ids)


def refine_jointly(encoder: PromptEncoder, slots: SlotPrompts, class_features: torch.Tensor, words: torch.Tensor,
                   cfg: DiversifyConfig, probe: Probe) -> Tuple[torch.Tensor, List[Dict[str, float]]]:
    """CON_JOINT (reconstruction): alternate latent steps and prompt steps. Probe image i renders prompt i under
    class ``i mod K``; each round runs CON_JOINT_ITERS latent steps of the probes towards the current prompts, then
    CON_JOINT_STEPS prompt steps on ``L_div + lambda_cls L_cls + CON_JOINT_LAMBDA * image_space_loss``."""
    style = StyleWords(words.to(encoder.device))
    optim = torch.optim.Adam(style.parameters(), lr=cfg.con_lr)
    p, k = words.shape[0], slots.tokens.shape[0]
    prompt_ids = torch.arange(p, device=encoder.device)
    class_ids = prompt_ids % k
    history: List[Dict[str, float]] = []
    for _ in range(cfg.con_joint_rounds):
        with torch.no_grad():
            targets = style.features(encoder, slots)[prompt_ids, class_ids]
        images = probe(targets, class_ids.tolist()).to(encoder.device)
        for _ in range(cfg.con_joint_steps):
            feats = style.features(encoder, slots)
            loss, terms = contrastive_prompt_loss(feats, class_features, cfg.con_tau, cfg.con_lambda_cls,
                                                  cfg.con_cls_scale, cfg.con_positives)
            l_img = image_space_loss(feats, images, prompt_ids, class_ids, cfg.con_tau)
            total = loss + cfg.con_joint_lambda * l_img
            optim.zero_grad(set_to_none=True)
            total.backward()
            optim.step()
            history.append({**{key: float(v) for key, v in terms.items()}, "img": float(l_img.detach()),
                            "loss": float(total.detach())})
    return style.words.detach(), history


def contrastive_targets(encoder: PromptEncoder, classnames: Sequence[str], per_class: int, cfg: DiversifyConfig,
                        seed: int, class_features: torch.Tensor, probe: Optional[Probe] = None
                        ) -> PromptTargets:
    """Learn N_PROMPTS words in CON_ROUNDS rounds (later rounds repel earlier ones), refine them jointly with probe
    images when CON_JOINT is on (``probe`` required), then assign round robin."""
    if cfg.con_joint and probe is None:
        raise ValueError("CON_JOINT alternates prompt steps with latent steps on probe images: pass a probe "
                         "(core.probe_images.ProbeImages), or set CON_JOINT False.")
    rounds = max(1, int(cfg.con_rounds))
    if cfg.n_prompts < rounds:
        raise ValueError(f"N_PROMPTS={cfg.n_prompts} must be >= CON_ROUNDS={rounds}.")
    slots = encoder.slot_prompts(cfg.style_template, classnames, cfg.n_pseudo_tokens)
    sizes = [cfg.n_prompts // rounds + (r < cfg.n_prompts % rounds) for r in range(rounds)]
    learned: List[torch.Tensor] = []
    bank: Optional[torch.Tensor] = None
    history: List[Dict[str, float]] = []
    for r, size in enumerate(sizes):
        init = init_style_words(encoder, cfg.style_dict, size, cfg.n_pseudo_tokens, cfg.con_init_std, seed + r)
        words, hist = learn_style_words(encoder, slots, class_features, init, cfg, bank)
        learned.append(words)
        history += hist
        with torch.no_grad():
            feats = StyleWords(words).features(encoder, slots)
        bank = feats if bank is None else torch.cat([bank, feats])
    words = torch.cat(learned)
    prompt_feats = bank  # (P, K, E) of all rounds
    if cfg.con_joint:
        words, joint = refine_jointly(encoder, slots, class_features, words, cfg, probe)
        history += joint
        with torch.no_grad():
            prompt_feats = StyleWords(words).features(encoder, slots)
    labels = class_major_labels(classnames, per_class)
    prompt_ids = [j % cfg.n_prompts for c in range(len(classnames)) for j in range(per_class)]
    feats = prompt_feats[torch.tensor(prompt_ids), torch.tensor(labels)].float().cpu()
    names = [clean_classname(c) for c in classnames]
    texts = [cfg.style_template.replace(SLOT, f"[V{p}]").format(names[c]) for p, c in zip(prompt_ids, labels)]
    mean_cos, min_dist = pairwise_stats(prompt_feats)
    log.info("Contrastive-Prompt: %d words, mean pairwise cosine %.4f, min distance %.4f", len(words), mean_cos,
             min_dist)
    return PromptTargets(feats, labels, texts, prompt_ids,
                         {"words": words.cpu(), "history": history, "mean_pairwise_cos": mean_cos,
                          "min_pairwise_dist": min_dist})
