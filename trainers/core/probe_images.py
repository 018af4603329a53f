"""Contrastive-Prompt's probe images for ``CON_JOINT`` (reconstruction, docs/dfkd.md): the latent side of the
alternation between latent steps and prompt steps (``diversify.refine_jointly`` is the prompt side). No Dassl import."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from .synthesis import Synthesizer

__all__ = ["ProbeImages"]


class ProbeImages:
    """Contrastive-Prompt's probe images for CON_JOINT: one image per prompt whose latents persist across calls,
    so that latent steps and prompt steps alternate. Each call runs ``iters`` more latent steps towards the given
    targets and returns the images' L2-normalised CLIP features (B, E), without gradients. Images are optimised
    ``batch`` at a time (the synthesis batch size, so probes need no more memory than the set)."""

    def __init__(self, synthesizer: Synthesizer, seeds: Sequence[int], iters: int, batch: int = 0):
        self.synthesizer, self.seeds, self.iters = synthesizer, list(seeds), int(iters)
        self.batch = int(batch) if batch and batch > 0 else len(self.seeds)
        self.gens: List[nn.Module] = []
        self.calls = 0

    def __call__(self, targets: torch.Tensor, labels: List[int]) -> torch.Tensor:
        if len(labels) != len(self.seeds):
            raise ValueError(f"{len(labels)} probe targets for {len(self.seeds)} probe images.")
        synth = self.synthesizer
        chunks = [slice(s, s + self.batch) for s in range(0, len(self.seeds), self.batch)]
        if not self.gens:
            self.gens = [synth.image_param(self.seeds[c]) for c in chunks]
        feats = [synth.run(targets[c], torch.tensor(labels[c]), self.seeds[c], self.iters, gen=gen).features
                 for c, gen in zip(chunks, self.gens)]
        self.calls += 1
        return torch.cat(feats)
