"""The frozen CLIP text tower of the prompt modes: plain prompts, and prompts whose ``[S*]`` slot holds pseudo-words.

``[S*]`` slots are spliced CoOp-style into the token embeddings of a tokenised template whose slot holds n
placeholder tokens, so the end-of-text position (where CLIP pools) never moves. No Dassl import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..encoders import TextEncoder
from ..prompt_learners import clean_classname, encode_texts
from .config import SLOT

__all__ = ["Tokenize", "PLACEHOLDER", "SlotPrompts", "PromptEncoder"]

Tokenize = Callable[[Sequence[str]], torch.Tensor]
PLACEHOLDER = "X"  # one BPE token; CoOp uses it for its context slots too


@dataclass
class SlotPrompts:
    """Tokenised ``template`` per class with an n-token ``[S*]`` slot: token ids, EOT positions, slot starts."""

    tokens: torch.Tensor  # (K, L)
    eot_index: torch.Tensor  # (K,)
    slot_start: torch.Tensor  # (K,)
    n_tokens: int
    texts: List[str]
    max_eot: int = 76  # the last EOT position of the set: encodes cut after it where exact


class PromptEncoder:
    """A frozen CLIP text tower that encodes plain prompts and prompts with spliced pseudo-words; ``truncate``
    (``MODEL.CLIP.TRUNCATE_TEXT``) runs them cut after their last EOT token where that is exact."""

    def __init__(self, clip_model: nn.Module, tokenize: Tokenize, truncate: bool = True):
        self.model = clip_model.eval().requires_grad_(False)  # frozen: gradients reach only pseudo-words
        self.tokenize = tokenize
        self.truncate = bool(truncate)
        self.text_encoder = TextEncoder(clip_model, truncate=self.truncate)
        self.token_embedding: nn.Embedding = clip_model.token_embedding

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised fp32 features of plain texts (no grad)."""
        return encode_texts(self.model, self.tokenize, list(texts), truncate=self.truncate)

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
        eot = tokens.argmax(-1)
        return SlotPrompts(tokens.to(device), eot.to(device), torch.tensor(starts, device=device), n_tokens, texts,
                           max_eot=int(eot.max()))

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
        length = self.text_encoder.cut_length(slots.max_eot)  # the slot lies before the EOT: inside the cut
        with torch.no_grad():
            embeds = self.token_embedding(slots.tokens[class_idx, :length])
        pos = slots.slot_start[class_idx][:, None] + torch.arange(slots.n_tokens, device=self.device)
        index = pos.unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
        embeds = embeds.scatter(1, index, words.to(embeds.dtype))
        feats = self.text_encoder(embeds, slots.eot_index[class_idx])
        return F.normalize(feats.float(), dim=-1)
