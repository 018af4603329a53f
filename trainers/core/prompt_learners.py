"""The five base prompt learners (CoOp, CoCoOp, VPT, MaPLe, IVLP/PromptSRC) and the prompted student CLIP.

A prompt learner holds *only* learnable tensors, so its ``state_dict`` is exactly what a checkpoint must store;
everything class-dependent (token ids, fixed text features) lives in non-persistent buffers of :class:`ClassPrompts`
or :class:`PromptedCLIP`. Parameter names follow the reference code bases where they have one (``ctx``,
``meta_net.linear1``, MaPLe's ``proj`` / ``compound_prompts_text`` / ``compound_prompt_projections``), and
:func:`load_learner_state` maps the IVLP/PromptSRC/VPT whole-model names onto ours.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .clip_models import LoadedClip, freeze, is_vit, visual_width
from .encoders import TextEncoder, UnsupportedTextTower, VisionEncoder, note_once

Tokenize = Callable[[Sequence[str]], torch.Tensor]


def clean_classname(name: str) -> str:
    """CoOp's convention: underscores become spaces."""
    return name.replace("_", " ")


def init_context(clip_model: nn.Module, tokenize: Tokenize, n_ctx: int, ctx_init: str = "") -> torch.Tensor:
    """Context vectors (n_ctx, D): the token embeddings of the first ``n_ctx`` words of ``ctx_init``, else N(0, 0.02)."""
    width = clip_model.token_embedding.weight.shape[1]
    if ctx_init:
        tokens = tokenize([ctx_init.replace("_", " ")]).to(clip_model.token_embedding.weight.device)
        with torch.no_grad():
            emb = clip_model.token_embedding(tokens)[0].float()
        return emb[1: 1 + n_ctx].clone().cpu()
    return torch.empty(n_ctx, width).normal_(std=0.02)


def count_init_tokens(tokenize: Tokenize, ctx_init: str) -> int:
    """Number of BPE tokens of ``ctx_init`` (CoOp sets n_ctx from it)."""
    tokens = tokenize([ctx_init.replace("_", " ")])[0]
    return int(tokens.argmax()) - 1


def _normal_params(count: int, n: int, width: int) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter(torch.empty(n, width).normal_(std=0.02)) for _ in range(count)])


# ------------------------------------------------------------------------------------------------- class prompts
class ClassPrompts(nn.Module):
    """Token ids of ``"<prefix> <class name>."`` for every candidate class.

    Embeddings are built only for the classes a step selects ("gather first"), so 20,930 dictionary names cost
    20,930 x 77 token ids, not 20,930 x 77 x D embeddings. ``max_eot`` (a Python int, read once here) is the last EOT
    position of the whole set: any selection of it can be cut after ``max_eot`` without a per-step host read;
    ``min_eot`` its first, which says how long a prefix every prompt of the set shares before its EOT.
    """

    def __init__(self, classnames: Sequence[str], prompt_prefix: str, tokenize: Tokenize):
        super().__init__()
        if not classnames:
            raise ValueError("The class-name list is empty: prompts need at least one class name.")
        self.classnames = [clean_classname(c) for c in classnames]
        texts = [f"{prompt_prefix} {c}." if prompt_prefix else f"{c}." for c in self.classnames]
        tokens = tokenize(texts).long()
        eot = tokens.argmax(dim=-1)
        self.max_eot, self.min_eot = int(eot.max()), int(eot.min())
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eot_index", eot, persistent=False)

    def __len__(self) -> int:
        return len(self.classnames)

    def embed(self, token_embedding: nn.Embedding, idx: Optional[torch.Tensor] = None, length: Optional[int] = None
              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frozen token embeddings (K, length, D) and EOS positions (K,) of the selected classes (all if idx is
        None); ``length`` (default: all) must exceed the selected classes' EOT positions."""
        if idx is None and length is not None and length <= self.max_eot:
            raise ValueError(f"A cut of {length} tokens drops the EOT token at position {self.max_eot}.")
        tokens = self.tokens if idx is None else self.tokens[idx]
        eot = self.eot_index if idx is None else self.eot_index[idx]
        with torch.no_grad():
            return token_embedding(tokens[:, :length]), eot


# ----------------------------------------------------------------------------------------------- prompt learners
class PromptLearner(nn.Module):
    """Base class: learnable prompts for one or both towers.

    ``prompt_prefix`` is the text whose first ``n_ctx`` tokens the learnable context replaces; ``fixed_text`` learners
    (VPT) use frozen hand-crafted text features instead; ``conditional`` learners (CoCoOp) shift the context per image.
    """

    prompt_prefix: str = ""
    n_ctx: int = 0
    fixed_text: bool = False
    conditional: bool = False

    def text_context(self, image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(n_ctx, D), or (B, n_ctx, D) for conditional learners."""
        return self.ctx

    def text_deep_prompts(self) -> Optional[List[torch.Tensor]]:
        return None

    def vision_prompts(self) -> Tuple[Optional[torch.Tensor], Optional[List[torch.Tensor]]]:
        return None, None

    @property
    def has_vision_prompts(self) -> bool:
        return False


class CoOpPromptLearner(PromptLearner):
    """CoOp (Zhou et al., IJCV 2022): a unified learnable context before the class name."""

    def __init__(self, clip_model: nn.Module, tokenize: Tokenize, n_ctx: int = 16, ctx_init: str = ""):
        super().__init__()
        if ctx_init:
            n_ctx = count_init_tokens(tokenize, ctx_init)
        self.n_ctx = n_ctx
        self.prompt_prefix = ctx_init.replace("_", " ") if ctx_init else " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(init_context(clip_model, tokenize, n_ctx, ctx_init))


class CoCoOpPromptLearner(CoOpPromptLearner):
    """CoCoOp (Zhou et al., CVPR 2022): the context is shifted per image by a small meta-network."""

    conditional = True

    def __init__(self, clip_model: nn.Module, tokenize: Tokenize, n_ctx: int = 16, ctx_init: str = ""):
        super().__init__(clip_model, tokenize, n_ctx, ctx_init)
        vis_dim = int(clip_model.visual.output_dim)
        width = self.ctx.shape[1]
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, width)),
        ]))

    def text_context(self, image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        if image_features is None:
            raise ValueError("CoCoOp's context depends on the image features.")
        bias = self.meta_net(image_features.to(self.ctx.dtype))
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


class VPTPromptLearner(PromptLearner):
    """Deep visual prompt tuning (Jia et al., ECCV 2022) on CLIP's image tower; text = frozen template features."""

    fixed_text = True

    def __init__(self, clip_model: nn.Module, n_ctx_vision: int = 8, depth: int = 12):
        super().__init__()
        if not is_vit(clip_model):
            raise ValueError("VPT needs a ViT image tower.")
        width = visual_width(clip_model)
        self.vision_ctx = nn.Parameter(torch.empty(n_ctx_vision, width).normal_(std=0.02))
        self.vision_deep = _normal_params(depth - 1, n_ctx_vision, width)

    def vision_prompts(self):
        return self.vision_ctx, list(self.vision_deep)

    @property
    def has_vision_prompts(self) -> bool:
        return True


class MaPLePromptLearner(PromptLearner):
    """MaPLe (Khattak et al., CVPR 2023): text prompts coupled to vision prompts through linear projections."""

    def __init__(self, clip_model: nn.Module, tokenize: Tokenize, n_ctx: int = 2, ctx_init: str = "a photo of a",
                 depth: int = 9):
        super().__init__()
        if not is_vit(clip_model):
            raise ValueError("MaPLe needs a ViT image tower.")
        if depth < 1:
            raise ValueError("MaPLe's PROMPT_DEPTH must be >= 1.")
        width = clip_model.token_embedding.weight.shape[1]
        vwidth = visual_width(clip_model)
        self.n_ctx = n_ctx
        self.prompt_prefix = ctx_init.replace("_", " ") if ctx_init else " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(init_context(clip_model, tokenize, n_ctx, ctx_init))
        self.proj = nn.Linear(width, vwidth)
        self.compound_prompts_text = _normal_params(depth - 1, n_ctx, width)
        self.compound_prompt_projections = nn.ModuleList([nn.Linear(width, vwidth) for _ in range(depth - 1)])

    def text_deep_prompts(self):
        return list(self.compound_prompts_text)

    def vision_prompts(self):
        deep = [proj(p) for proj, p in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return self.proj(self.ctx), deep

    @property
    def has_vision_prompts(self) -> bool:
        return True


class IVLPPromptLearner(PromptLearner):
    """Independent vision-language deep prompts (IVLP), the prompt design of PromptSRC (Khattak et al., ICCV 2023)."""

    def __init__(self, clip_model: nn.Module, tokenize: Tokenize, n_ctx_text: int = 4, n_ctx_vision: int = 4,
                 ctx_init: str = "a photo of a", depth_text: int = 9, depth_vision: int = 9):
        super().__init__()
        if not is_vit(clip_model):
            raise ValueError("IVLP/PromptSRC needs a ViT image tower.")
        width = clip_model.token_embedding.weight.shape[1]
        vwidth = visual_width(clip_model)
        if ctx_init:
            n_ctx_text = count_init_tokens(tokenize, ctx_init)
        self.n_ctx = n_ctx_text
        self.prompt_prefix = ctx_init.replace("_", " ") if ctx_init else " ".join(["X"] * n_ctx_text)
        self.ctx = nn.Parameter(init_context(clip_model, tokenize, n_ctx_text, ctx_init))
        self.text_deep = _normal_params(depth_text - 1, n_ctx_text, width)
        self.vision_ctx = nn.Parameter(torch.empty(n_ctx_vision, vwidth).normal_(std=0.02)) if depth_vision else None
        self.vision_deep = _normal_params(max(depth_vision - 1, 0), n_ctx_vision, vwidth)

    def text_deep_prompts(self):
        return list(self.text_deep)

    def vision_prompts(self):
        return self.vision_ctx, list(self.vision_deep)

    @property
    def has_vision_prompts(self) -> bool:
        return self.vision_ctx is not None


# ------------------------------------------------------------------------------------------------- the student
class PromptedCLIP(nn.Module):
    """A frozen CLIP whose prompts come from a :class:`PromptLearner`.

    Class sets are registered by key (e.g. ``"train"`` = the class-agnostic dictionary, ``"eval"`` = the dataset's
    classes) so a step encodes only the classes it selects. ``truncate_text`` (``MODEL.CLIP.TRUNCATE_TEXT``) runs the
    text tower on prompts cut after the class set's last EOT token, and ``share_text_prefix``
    (``MODEL.CLIP.SHARE_TEXT_PREFIX``) runs SOS + the learned context once instead of once per class, both where that
    is exact (see :class:`~trainers.core.encoders.TextEncoder`).
    """

    def __init__(self, loaded: LoadedClip, learner: PromptLearner, fixed_template: str = "a photo of a {}.",
                 truncate_text: bool = True, share_text_prefix: bool = True):
        super().__init__()
        self.clip = freeze(loaded.model)
        self.tokenize = loaded.tokenize
        self.truncate_text = bool(truncate_text)
        self.text_encoder = TextEncoder(self.clip, truncate=self.truncate_text, share_prefix=share_text_prefix)
        self.image_encoder = VisionEncoder(self.clip)
        self.prompt_learner = learner
        self.fixed_template = fixed_template
        self.register_buffer("logit_scale", self.clip.logit_scale.detach().exp().float().clone(), persistent=False)
        self.class_sets = nn.ModuleDict()
        self._check_depths()

    def _check_depths(self) -> None:
        """Refuse prompts the towers cannot take: visual prompts on a tower not pooled at a class token, and deep
        prompts beyond the last block (never used), with the numbers."""
        learner = self.prompt_learner
        text_blocks = len(self.clip.transformer.resblocks)
        deep_text = learner.text_deep_prompts() or []
        if len(deep_text) + 1 > text_blocks:
            raise ValueError(f"Text prompt depth {len(deep_text) + 1} exceeds the {text_blocks} text blocks of "
                             "this CLIP; lower the PROMPT_DEPTH setting.")
        if learner.has_vision_prompts and not self.image_encoder.vit:
            self.image_encoder.refuse_prompts()
        if learner.has_vision_prompts:
            deep_vision = learner.vision_prompts()[1] or []
            vision_blocks = len(self.clip.visual.transformer.resblocks)
            if len(deep_vision) + 1 > vision_blocks:
                raise ValueError(f"Vision prompt depth {len(deep_vision) + 1} exceeds the {vision_blocks} vision "
                                 "blocks of this CLIP; lower the PROMPT_DEPTH setting.")

    # -- classes
    def register_class_set(self, key: str, classnames: Sequence[str]) -> None:
        """Tokenise a class set once (and, for fixed-text learners, encode its template features once)."""
        prompts = ClassPrompts(classnames, self.prompt_learner.prompt_prefix, self.tokenize)
        self.class_sets[f"classes_{key}"] = prompts.to(self.logit_scale.device)
        if self.prompt_learner.fixed_text:
            texts = [self.fixed_template.format(c) for c in prompts.classnames]
            feats = encode_texts(self.clip, self.tokenize, texts, truncate=self.truncate_text)
            self.register_buffer(f"fixed_text_{key}", feats, persistent=False)

    def num_classes(self, key: str) -> int:
        return len(self.class_sets[f"classes_{key}"])

    # -- towers
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features with the learner's visual prompts."""
        learner = self.prompt_learner
        if learner.has_vision_prompts:
            prompts, deep = learner.vision_prompts()
            feats = self.image_encoder(images, prompts, deep)
        else:
            with torch.no_grad():
                feats = self.image_encoder(images)
        return F.normalize(feats.float(), dim=-1)

    def encode_text(self, key: str, idx: Optional[torch.Tensor] = None,
                    image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """L2-normalised class features (K, E), or (B, K, E) for conditional learners."""
        learner = self.prompt_learner
        if learner.fixed_text:
            feats = getattr(self, f"fixed_text_{key}")
            return feats if idx is None else feats[idx]
        class_prompts = self.class_sets[f"classes_{key}"]
        # The cut is the whole set's (a Python int): a selected subset would need a host read of its EOTs per step.
        length = self.text_encoder.cut_length(class_prompts.max_eot)
        embeds, eot = class_prompts.embed(self.clip.token_embedding, idx, length)
        ctx = learner.text_context(image_features)
        n = learner.n_ctx
        deep = learner.text_deep_prompts()
        # SOS and the context (positions 0..n) are the same for every class (of an image, for CoCoOp)
        shared = 1 + n if n > 0 and class_prompts.min_eot > n else 0
        if ctx.dim() == 2:
            prompts = torch.cat([embeds[:, :1], ctx.to(embeds.dtype).expand(embeds.shape[0], -1, -1),
                                 embeds[:, 1 + n:]], dim=1)
            return F.normalize(self.text_encoder(prompts, eot, deep, shared_prefix=shared).float(), dim=-1)
        b, k = ctx.shape[0], embeds.shape[0]
        prompts = torch.cat([
            embeds[:, :1].unsqueeze(0).expand(b, -1, -1, -1),
            ctx.to(embeds.dtype).unsqueeze(1).expand(-1, k, -1, -1),
            embeds[:, 1 + n:].unsqueeze(0).expand(b, -1, -1, -1),
        ], dim=2).reshape(b * k, embeds.shape[1], -1)
        feats = self.text_encoder(prompts, eot.repeat(b), deep, shared_prefix=shared, group=k).float()
        return F.normalize(feats, dim=-1).reshape(b, k, -1)

    def forward(self, images: torch.Tensor, key: str = "eval", idx: Optional[torch.Tensor] = None,
                image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (B, K) = exp(logit_scale) * cos(image, class text) over the selected classes.

        ``image_features`` (normalised, e.g. from a cache) replace the frozen image tower of learners without
        visual prompts (CoOp, CoCoOp).
        """
        if image_features is not None:
            if self.prompt_learner.has_vision_prompts:
                raise ValueError("Cached image features cannot stand in for a prompted image tower.")
            img = image_features.float()
        else:
            img = self.encode_image(images)
        txt = self.encode_text(key, idx, img if self.prompt_learner.conditional else None).float()
        if txt.dim() == 3:
            return self.logit_scale * torch.einsum("be,bke->bk", img, txt)
        return self.logit_scale * img @ txt.t()


@torch.no_grad()
def encode_texts(model: nn.Module, tokenize: Tokenize, texts: Sequence[str], chunk: int = 128,
                 truncate: bool = True) -> torch.Tensor:
    """L2-normalised fp32 text features of a frozen CLIP, in chunks (runs once per class set).

    With ``truncate`` (where exact) the texts are encoded shortest first, each chunk cut after its own last EOT token,
    so a chunk runs at about its members' length; the features come back in the input order.
    """
    device = next(model.parameters()).device
    tokens = tokenize(list(texts)).long()
    try:
        encoder = TextEncoder(model, truncate=truncate)
    except UnsupportedTextTower as exc:
        note_once(f"Text features of {type(model).__name__} come from its own encode_text at full length ({exc})")
        return torch.cat([F.normalize(model.encode_text(tokens[s: s + chunk].to(device)).float(), dim=-1)
                          for s in range(0, len(tokens), chunk)])
    positions = encoder.pool_positions(tokens)  # host tensors: the cuts below read no device memory
    order = torch.argsort(positions, stable=True) if encoder.truncate else torch.arange(len(tokens))
    out = []
    for start in range(0, len(order), chunk):
        rows = order[start: start + chunk]
        length = encoder.cut_length(int(positions[rows].max()))
        embeds = encoder.token_embedding(tokens[rows, :length].to(device))
        out.append(F.normalize(encoder(embeds, positions[rows].to(device)).float(), dim=-1))
    return torch.cat(out)[torch.argsort(order).to(device)]


# ------------------------------------------------------------------------------------------- checkpoint loading
# Reference whole-model names (PromptSRC / IVLP / VPT code bases) -> our learner names.
_REFERENCE_KEY_MAP: Sequence[Tuple[str, str]] = (
    (r"^(?:prompt_learner\.)?image_encoder\.VPT$", "vision_ctx"),
    (r"^image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow$", "vision_deep.{}"),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow$", "text_deep.{}"),
    (r"^prompt_learner\.(.+)$", "{}"),
)
IGNORED_KEYS = re.compile(r"(^|\.)(token_prefix|token_suffix)$")


def map_reference_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename reference whole-model keys to learner keys (deep-prompt block i -> list index i-1)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, template in _REFERENCE_KEY_MAP:
            m = re.match(pattern, key)
            if m:
                groups = m.groups()
                if groups and groups[0].isdigit():
                    new = template.format(int(groups[0]) - 1)
                else:
                    new = template.format(*groups)
                break
        out[new] = value
    return out


def load_learner_state(learner: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
                       ) -> List[str]:
    """Load every learnable tensor of ``learner`` from ``state_dict`` (ours or a reference layout).

    Class-dependent buffers (``token_prefix``/``token_suffix``) and frozen CLIP weights are ignored; a missing or
    mis-shaped learnable tensor raises with the names, never a silent ``strict=False``. Returns the ignored keys.
    """
    mapped = map_reference_keys(state_dict)
    own = learner.state_dict()
    missing = [k for k in own if k not in mapped]
    if missing:
        raise KeyError(f"{source} lacks learnable tensors {missing} of {type(learner).__name__}; it was saved by "
                       f"another method or configuration (found keys: {sorted(mapped)[:12]}...).")
    bad = [(k, tuple(mapped[k].shape), tuple(v.shape)) for k, v in own.items() if mapped[k].shape != v.shape]
    if bad:
        raise ValueError(f"{source} has tensors of the wrong shape (name, checkpoint, model): {bad}. Check the "
                         "prompt length / depth / backbone settings against the run that saved it.")
    learner.load_state_dict({k: mapped[k] for k in own}, strict=True)
    return [k for k in mapped if k not in own]


class ZeroShotLearner(PromptLearner):
    """No learnable prompt: the frozen template features alone (the zero-shot CLIP reference point)."""

    fixed_text = True
