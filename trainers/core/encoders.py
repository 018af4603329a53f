"""CLIP towers that accept prompts, written once for every method.

We drive the transformer blocks of the OpenAI module structure ourselves instead of editing the installed ``clip``
package (as MaPLe/PromptSRC forks do), so the registry's package and a fork's vendored copy both work.

Conventions (those of the CoOp/MaPLe/PromptSRC code bases, so reference checkpoints stay meaningful):
  * text: prompt embeddings ``[SOS, ctx_1..ctx_n, class tokens, '.', EOS, pad]``; a deep text prompt for block i
    (i = 1..depth-1) replaces the n tokens after SOS before that block.
  * vision: input prompts are appended after the patch tokens, after the positional embedding and before ``ln_pre``
    (``[CLS, patches, prompts]``); a deep visual prompt for block i replaces the last n tokens before that block.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .clip_models import is_vit


class TextEncoder(nn.Module):
    """CLIP's text tower on prompt embeddings instead of token ids (CoOp-style splicing)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    def forward(self, prompts: torch.Tensor, eot_index: torch.Tensor,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """prompts: (N, L, D) embeddings; eot_index: (N,) position of each EOS token -> (N, E) features.

        ``deep_prompts[j]`` (n, D) replaces tokens 1..n before block j+1.
        """
        x = prompts.to(self.dtype) + self.positional_embedding[: prompts.shape[1]].to(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        for i, block in enumerate(self.transformer.resblocks):
            if deep_prompts is not None and 1 <= i <= len(deep_prompts):
                ctx = deep_prompts[i - 1].to(x.dtype)
                n = ctx.shape[0]
                x = torch.cat([x[:1], ctx.unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + n:]], dim=0)
            x = block(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)]
        return x @ self.text_projection.to(x.dtype)


class VisionEncoder(nn.Module):
    """CLIP's image tower with optional shallow and deep visual prompts (ViT), or the plain tower (ResNet)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.visual = clip_model.visual
        self.vit = is_vit(clip_model)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def forward(self, images: torch.Tensor, prompts: Optional[torch.Tensor] = None,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, E). prompts (n, W) are appended; ``deep_prompts[j]`` replaces them before
        block j+1."""
        if not self.vit:
            if prompts is not None or deep_prompts:
                raise ValueError("Visual prompts need a ViT backbone; this CLIP has a ResNet image tower.")
            return self.visual(images.to(self.dtype))
        v = self.visual
        x = v.conv1(images.to(self.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if prompts is not None:
            x = torch.cat([x, prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        for i, block in enumerate(v.transformer.resblocks):
            if deep_prompts is not None and 1 <= i <= len(deep_prompts):
                ctx = deep_prompts[i - 1].to(x.dtype)
                x = torch.cat([x[: x.shape[0] - ctx.shape[0]], ctx.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
            x = block(x)
        x = x.permute(1, 0, 2)
        x = v.ln_post(x[:, 0, :])
        if v.proj is not None:
            x = x @ v.proj.to(x.dtype)
        return x
