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

``[S*]`` slots are spliced CoOp-style into the token embeddings of a tokenised template whose slot holds n
placeholder tokens, so the end-of-text position (where CLIP pools) never moves. No Dassl import.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .encoders import TextEncoder
from .prompt_learners import clean_classname, encode_texts

log = logging.getLogger(__name__)

Tokenize = Callable[[Sequence[str]], torch.Tensor]

PROMPT_MODES = ("handcrafted", "mix", "random", "contrastive")
SLOT = "[S*]"
PLACEHOLDER = "X"  # one BPE token; CoOp uses it for its context slots too

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
            return {**common, "style_template": self.style_template, "style_dict": list(self.style_dict),
                    "n_prompts": self.n_prompts, "n_pseudo_tokens": self.n_pseudo_tokens, "tau": self.con_tau,
                    "lambda_cls": self.con_lambda_cls, "cls_scale": self.con_cls_scale, "steps": self.con_steps,
                    "lr": self.con_lr, "init_std": self.con_init_std, "positives": self.con_positives,
                    "rounds": self.con_rounds}
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


# ------------------------------------------------------------------------------------------------ style words
def _words(text: str) -> set:
    return {w for w in text.lower().replace("_", " ").replace("-", " ").split() if w}


def filter_styles(styles: Sequence[str], domain_names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Drop styles sharing a word with a domain name ("painting" vs "art_painting"), so no test domain is named.

    Returns (kept, dropped).
    """
    banned = set().union(*(_words(d) for d in domain_names)) if domain_names else set()
    kept = [s for s in styles if not (_words(s) & banned)]
    return kept, [s for s in styles if s not in kept]


# ------------------------------------------------------------------------------------------------ the encoder
@dataclass
class SlotPrompts:
    """Tokenised ``template`` per class with an n-token ``[S*]`` slot: token ids, EOT positions, slot starts."""

    tokens: torch.Tensor  # (K, L)
    eot_index: torch.Tensor  # (K,)
    slot_start: torch.Tensor  # (K,)
    n_tokens: int
    texts: List[str]


class PromptEncoder:
    """A frozen CLIP text tower that encodes plain prompts and prompts with spliced pseudo-words."""

    def __init__(self, clip_model: nn.Module, tokenize: Tokenize):
        self.model = clip_model.eval().requires_grad_(False)  # frozen: gradients reach only pseudo-words
        self.tokenize = tokenize
        self.text_encoder = TextEncoder(clip_model)
        self.token_embedding: nn.Embedding = clip_model.token_embedding

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised fp32 features of plain texts (no grad)."""
        return encode_texts(self.model, self.tokenize, list(texts))

    def class_features(self, classnames: Sequence[str], template: str, ensemble: Sequence[str] = ()
                       ) -> torch.Tensor:
        """Zero-shot head (K, E): the template's features, or the normalised mean over an ensemble."""
        if not classnames:
            raise ValueError("The class-name list is empty: data-free distillation needs at least one class name.")
        templates = list(ensemble) or [template]
        feats = torch.stack([self.encode([t.format(clean_classname(c)) for c in classnames]) for t in templates])
        return F.normalize(feats.mean(0), dim=-1) if len(templates) > 1 else feats[0]

    @torch.no_grad()
    def embedding_stats(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of the token-embedding table (Random-Prompt's distribution)."""
        table = self.token_embedding.weight.float()
        return table.mean(0), table.std(0)

    @torch.no_grad()
    def word_embedding(self, word: str) -> torch.Tensor:
        """Mean token embedding (d,) of a (possibly multi-token) word."""
        tokens = self.tokenize([word]).to(self.device)[0]
        n = int(tokens.argmax()) - 1
        if n < 1:
            raise ValueError(f"Style word {word!r} has no tokens.")
        return self.token_embedding(tokens[1: 1 + n]).float().mean(0)

    def slot_prompts(self, template: str, classnames: Sequence[str], n_tokens: int = 1) -> SlotPrompts:
        """Tokenise ``template`` (with ``[S*]`` and ``{}``) per class, the slot filled by placeholder tokens."""
        if SLOT not in template or "{}" not in template:
            raise ValueError(f"Template {template!r} needs a {SLOT} slot and a '{{}}' class slot.")
        if n_tokens < 1:
            raise ValueError("A pseudo-word needs at least one token.")
        placeholder = " ".join([PLACEHOLDER] * n_tokens)
        names = [clean_classname(c) for c in classnames]
        texts = [template.replace(SLOT, placeholder).format(c) for c in names]
        tokens = self.tokenize(texts).long()
        x_id = int(self.tokenize([PLACEHOLDER])[0, 1])
        starts = []
        head = template.split(SLOT)[0]
        for c, row in zip(names, tokens):
            prefix = (head.format(c) if "{}" in head else head).strip()
            start = 1 + (int(self.tokenize([prefix])[0].argmax()) - 1 if prefix else 0)
            if not bool((row[start: start + n_tokens] == x_id).all()):
                raise ValueError(f"Could not locate the {SLOT} slot of {template!r} for class {c!r} (truncated?).")
            starts.append(start)
        device = self.device
        return SlotPrompts(tokens.to(device), tokens.argmax(-1).to(device), torch.tensor(starts, device=device),
                           n_tokens, texts)

    @torch.no_grad()
    def encode_slots_frozen(self, slots: SlotPrompts, words: torch.Tensor, class_idx: torch.Tensor,
                            chunk: int = 256) -> torch.Tensor:
        """:meth:`encode_slots` without gradients, in chunks (fixed pseudo-words of many images), on CPU."""
        return torch.cat([self.encode_slots(slots, words[i: i + chunk].to(self.device), class_idx[i: i + chunk]).cpu()
                          for i in range(0, len(class_idx), chunk)])

    def encode_slots(self, slots: SlotPrompts, words: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """Features (N, E), L2-normalised, of class ``class_idx[i]``'s prompt with ``words[i]`` (n, d) in the slot.

        Differentiable with respect to ``words``; the EOT index is that of the tokenised template (unchanged).
        """
        class_idx = class_idx.to(self.device)
        if words.dim() == 2:
            words = words.unsqueeze(1)
        if words.shape[1] != slots.n_tokens:
            raise ValueError(f"{words.shape[1]} pseudo-word tokens for a slot of {slots.n_tokens}.")
        with torch.no_grad():
            embeds = self.token_embedding(slots.tokens[class_idx])
        pos = slots.slot_start[class_idx][:, None] + torch.arange(slots.n_tokens, device=self.device)
        index = pos.unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
        embeds = embeds.scatter(1, index, words.to(embeds.dtype))
        feats = self.text_encoder(embeds, slots.eot_index[class_idx])
        return F.normalize(feats.float(), dim=-1)


# --------------------------------------------------------------------------------------------------- helpers
def guard_accepts(features: torch.Tensor, labels: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
    """True where CLIP's zero-shot head (argmax cosine) still assigns the prompt to its own class."""
    return (features @ class_features.t()).argmax(-1) == labels.to(features.device)


def mix_features(components: torch.Tensor, weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Convex mixture of unit features: components (N, m, E), weights (N, m) -> (normalised, unnormalised).

    A one-hot weight row returns its component unchanged (it is already a unit vector), so the pure-style prompt is
    reproduced bit for bit instead of being renormalised to within one ulp.
    """
    mixed = (weights.unsqueeze(-1).to(components.dtype) * components).sum(1)
    vertex = (weights == 1).any(-1, keepdim=True)
    return torch.where(vertex, mixed, F.normalize(mixed, dim=-1)), mixed


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


def _class_major(classnames: Sequence[str], per_class: int) -> List[int]:
    if per_class < 1:
        raise ValueError("Images per class must be >= 1.")
    return [c for c in range(len(classnames)) for _ in range(per_class)]


# ----------------------------------------------------------------------------------------------- Mix-Prompt
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
    labels = _class_major(classnames, per_class)
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
    texts = [template.format(names[c], style="[" + " + ".join(f"{float(w):.3f} {styles[int(s)]}"
                                                           for s, w in zip(si, wi)) + "]")
             for si, wi, c in zip(style_idx, weights, labels)]
    return PromptTargets(feats.float().cpu(), labels, texts, list(range(len(labels))),
                         {"styles": styles, "style_idx": torch.as_tensor(style_idx), "weights": lam})


# --------------------------------------------------------------------------------------------- Random-Prompt
def random_targets(encoder: PromptEncoder, classnames: Sequence[str], per_class: int, cfg: DiversifyConfig,
                   seed: int, class_features: torch.Tensor) -> PromptTargets:
    """Random-Prompt targets: seeded pseudo-words, resampled (up to RAND_MAX_TRIES) while the head misreads them."""
    labels = _class_major(classnames, per_class)
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


# ---------------------------------------------------------------------------------------- Contrastive-Prompt
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


def contrastive_targets(encoder: PromptEncoder, classnames: Sequence[str], per_class: int, cfg: DiversifyConfig,
                        seed: int, class_features: torch.Tensor) -> PromptTargets:
    """Learn N_PROMPTS words in CON_ROUNDS rounds (later rounds repel earlier ones), then assign round robin."""
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
    labels = _class_major(classnames, per_class)
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


# ------------------------------------------------------------------------------------------------ dispatcher
def build_prompt_targets(mode: str, encoder: PromptEncoder, classnames: Sequence[str], per_class: int,
                         cfg: DiversifyConfig, seed: int) -> PromptTargets:
    """Targets for ``per_class`` images of every class (class-major order), seeded."""
    if not classnames:
        raise ValueError("The class-name list is empty: data-free distillation needs at least one class name.")
    class_features = encoder.class_features(classnames, cfg.template, cfg.template_ensemble)
    if mode == "handcrafted":
        labels = _class_major(classnames, per_class)
        texts = [cfg.template.format(clean_classname(classnames[c])) for c in labels]
        return PromptTargets(class_features[torch.tensor(labels)].float().cpu(), labels, texts, [0] * len(labels))
    if mode == "mix":
        return mix_targets(encoder, classnames, per_class, cfg, seed)
    if mode == "random":
        return random_targets(encoder, classnames, per_class, cfg, seed, class_features)
    if mode == "contrastive":
        return contrastive_targets(encoder, classnames, per_class, cfg, seed, class_features)
    raise ValueError(f"Unknown prompt mode {mode!r}; use one of {PROMPT_MODES}.")
