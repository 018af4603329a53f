"""CLIP towers that accept prompts, written once for every method.

We drive the transformer blocks ourselves instead of editing the installed ``clip`` package (as MaPLe/PromptSRC forks
do), so the registry's package, a fork's vendored copy and open_clip's CLIP models all work.

Conventions (those of the CoOp/MaPLe/PromptSRC code bases, so reference checkpoints stay meaningful):
  * text: prompt embeddings ``[SOS, ctx_1..ctx_n, class tokens, '.', EOS, pad]``; a deep text prompt for block i
    (i = 1..depth-1) replaces the n tokens after SOS before that block.
  * vision: input prompts are appended after the patch tokens, after the positional embedding and before ``ln_pre``
    (``[CLS, patches, prompts]``); a deep visual prompt for block i replaces the last n tokens before that block.

Four exact speed-ups live here:
  * **Text truncation.** CLIP's text tower is causal and pooled at the end-of-text token, so the positions after the
    longest prompt's EOT cannot change any feature: a batch of prompts runs at ``max(eot) + 1`` tokens instead of 77
    (:meth:`TextEncoder.cut_length`). It is applied only where that is exact (an upper-triangular -inf mask and a
    position-based pooling, checked once per tower); elsewhere the tower runs at full length and says so once.
  * **Shared prompt prefix.** For the same reason, positions before the first class-specific token depend only on
    that prefix (SOS and the learned context, the same for every class): with ``shared_prefix`` the prefix runs once
    per group of rows and every row runs only its own tokens, attending to the prefix's keys and values
    (:func:`run_stock_block_shared`). For CoOp with 16 context tokens that is ~6 tokens per class instead of ~23.
  * **Only the pooled token in the last block.** A tower's feature is one token of its last block (the class token
    of a ViT, each prompt's EOT token of the text tower): that block computes keys and values for every token, but
    queries, attention output and MLP for the read token alone (:func:`run_stock_block_pooled`), about 1/6 of its
    matrix products; every earlier block is unchanged, so the feature is the same.
  * **Fused attention.** Stock residual attention blocks run their self-attention through
    ``F.scaled_dot_product_attention`` with the block's own projection weights (``is_causal`` instead of a mask
    tensor for the causal text tower, which lets GPUs use fused kernels); anything unusual keeps the module path.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Set, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .clip_models import is_vit

#: Pooling rules of open_clip's ``text_global_pool`` whose pooled position is known from the token ids.
POSITIONAL_POOLS = ("argmax", "eos", "first", "last")
_NOTES_SHOWN: Set[str] = set()


def note_once(message: str) -> None:
    """Print a note the first time it occurs in this process (Dassl tees stdout into log.txt)."""
    if message not in _NOTES_SHOWN:
        _NOTES_SHOWN.add(message)
        print(message)


def sdpa_default(device: torch.device) -> bool:
    """Whether driven blocks use ``scaled_dot_product_attention`` by default on ``device``.

    GPUs: yes (fused kernels; ``is_causal`` instead of a mask tensor). CPU: also yes; the attention op alone measured
    0.77-0.99x the module path's time at the ViT-B/32 text (causal, 22 and 77 tokens) and image shapes, forward and
    forward+backward, and whole towers within noise of it (``python -m benchmarks.text_path_benchmark``).
    """
    return True


def is_causal_mask(mask: Optional[torch.Tensor]) -> bool:
    """True for CLIP's additive causal mask: 0 on and below the diagonal, -inf above it."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1] or not mask.is_floating_point():
        return False
    expected = torch.full(mask.shape, float("-inf"), device=mask.device).triu(1)
    return bool(torch.equal(mask.float(), expected))


def is_stock_block(block: nn.Module) -> bool:
    """True for CLIP's stock residual attention block (OpenAI's or open_clip's), whose forward we reproduce exactly:
    ``x + ls_1(attn(ln_1(x)))`` then ``x + ls_2(mlp(ln_2(x)))`` with a plain packed-projection self-attention."""
    attn = getattr(block, "attn", None)
    return (type(block).__name__ == "ResidualAttentionBlock" and isinstance(attn, nn.MultiheadAttention)
            and all(isinstance(getattr(block, name, None), nn.Module) for name in ("ln_1", "ln_2", "mlp"))
            and not hasattr(block, "ln_1_kv") and attn._qkv_same_embed_dim and attn.in_proj_weight is not None
            and attn.bias_k is None and attn.bias_v is None and not attn.add_zero_attn)


def project_heads(attn: nn.MultiheadAttention, x: torch.Tensor, first: int, count: int) -> Tuple[torch.Tensor, ...]:
    """``count`` consecutive parts of the module's packed projection of batch-first ``x`` (N, L, D), starting at part
    ``first`` (0 queries, 1 keys, 2 values), each (N, heads, L, d): one matrix product on the rows of those parts."""
    n, length, width = x.shape
    rows = slice(first * width, (first + count) * width)
    bias = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
    out = F.linear(x, attn.in_proj_weight[rows], bias)
    return out.view(n, length, count, attn.num_heads, width // attn.num_heads).permute(2, 0, 3, 1, 4).unbind(0)


def split_heads(attn: nn.MultiheadAttention, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values (N, heads, L, d) of batch-first ``x`` (N, L, D) from the module's packed projection."""
    q, k, v = project_heads(attn, x, 0, 3)
    return q, k, v


def merge_heads(attn: nn.MultiheadAttention, out: torch.Tensor) -> torch.Tensor:
    """The module's output projection of attention outputs (N, heads, L, d) -> (N, L, D)."""
    n, heads, length, d = out.shape
    return F.linear(out.transpose(1, 2).reshape(n, length, heads * d), attn.out_proj.weight, attn.out_proj.bias)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: Optional[torch.Tensor], causal: bool,
                   sdpa: bool) -> torch.Tensor:
    """``attn(x, x, x)`` on batch-first ``x`` (N, L, D). With ``sdpa`` it runs ``F.scaled_dot_product_attention`` on
    the module's own weights (``is_causal`` replaces a causal ``mask``); otherwise the module itself with ``mask``."""
    if sdpa:
        q, k, v = split_heads(attn, x)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if causal or mask is None else mask.to(q.dtype),
            dropout_p=attn.dropout if attn.training else 0.0, is_causal=causal)
        return merge_heads(attn, out)
    if mask is not None:
        mask = mask.to(x.dtype)
    if attn.batch_first:
        return attn(x, x, x, need_weights=False, attn_mask=mask)[0]
    # contiguous: a transposed view sends the module's input projection to a much slower batched matmul on CPU
    y = x.transpose(0, 1).contiguous()
    return attn(y, y, y, need_weights=False, attn_mask=mask)[0].transpose(0, 1)


def residual_and_mlp(block: nn.Module, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """The rest of a stock block after its attention: ``x + ls_1(attended)``, then ``+ ls_2(mlp(ln_2(.)))``."""
    ls_1, ls_2 = getattr(block, "ls_1", None), getattr(block, "ls_2", None)
    x = x + (ls_1(attended) if ls_1 is not None else attended)
    mixed = block.mlp(block.ln_2(x))
    return x + (ls_2(mixed) if ls_2 is not None else mixed)


def run_stock_block(block: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], causal: bool,
                    sdpa: bool) -> torch.Tensor:
    """One stock residual attention block on batch-first ``x`` (see :func:`is_stock_block`)."""
    return residual_and_mlp(block, x, self_attention(block.attn, block.ln_1(x), mask, causal, sdpa))


def attend_from(block: nn.Module, tokens: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                visible: Optional[torch.Tensor], queries: torch.Tensor) -> torch.Tensor:
    """A stock block's output at ``tokens`` (N, Q, D) only: their ``queries`` (N, heads, Q, d) attend to the
    ``keys`` and ``values`` (N, heads, L, d) of the whole sequence where ``visible`` (boolean, broadcast to
    (N, heads, Q, L); None = everywhere) allows, then the residual and MLP. LayerNorm, projections and MLP act per
    token, so these rows equal the full block's."""
    attn = block.attn
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=visible,
                                         dropout_p=attn.dropout if attn.training else 0.0)
    return residual_and_mlp(block, tokens, merge_heads(attn, out))


def attend_read_token(block: nn.Module, x: torch.Tensor, normed: torch.Tensor, keys: torch.Tensor,
                      values: torch.Tensor, position: Optional[torch.Tensor], prefix: int = 0) -> torch.Tensor:
    """(N, D): the block's output at one token of each row of ``x`` (N, L, D; ``normed`` = its ``ln_1``), whose query
    reads ``keys`` / ``values`` of ``prefix`` shared positions followed by x's L positions. ``position`` None: token 0
    (the class token), which sees everything; a tensor: token ``position[n]``, which sees the prefix and, causally,
    x's positions up to its own."""
    if position is None:
        tokens, query_in, visible = x[:, :1], normed[:, :1], None
    else:
        position = position.to(x.device)
        read = torch.arange(x.shape[0], device=x.device), position
        tokens, query_in = x[read].unsqueeze(1), normed[read].unsqueeze(1)
        visible = torch.arange(x.shape[1], device=x.device) <= position[:, None]
        if prefix:
            visible = torch.cat([visible.new_ones(x.shape[0], prefix), visible], dim=1)
        visible = visible[:, None, None, :]
    (query,) = project_heads(block.attn, query_in, 0, 1)
    return attend_from(block, tokens, keys, values, visible, query)[:, 0]


def run_stock_block_pooled(block: nn.Module, x: torch.Tensor, position: Optional[torch.Tensor]) -> torch.Tensor:
    """The last stock block of a tower read at one token per row: (N, L, D) -> (N, D), the block's output at
    ``position[n]`` of row n (None = token 0, the class token, with full attention; a tensor = causal attention, the
    token sees positions <= its own). Keys and values still come from every token; the queries, the attention
    output, the residual and the MLP run for the read token alone: about 2/12 of the block's matrix products."""
    normed = block.ln_1(x)
    keys, values = project_heads(block.attn, normed, 1, 2)
    return attend_read_token(block, x, normed, keys, values, position)


def shared_prefix_mask(prefix: int, own: int, device: torch.device) -> torch.Tensor:
    """(own, prefix + own) boolean mask of what a row's own token sees: the whole prefix, and causally its own."""
    visible = torch.ones(own, prefix + own, dtype=torch.bool, device=device)
    visible[:, prefix:] = torch.ones(own, own, dtype=torch.bool, device=device).tril()
    return visible


def run_stock_block_shared(block: nn.Module, prefix: torch.Tensor, rows: torch.Tensor, group: int,
                           visible: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One stock causal block on prompts whose first P positions are shared: ``prefix`` (G, P, D) holds them once per
    group, ``rows`` (G*group, S, D) the positions P..P+S-1 of every row (group-major), ``visible`` is
    :func:`shared_prefix_mask`. Equals the block on the full sequences (positions < P of a row are its group's
    prefix): the prefix attends causally to itself, a row's token to the whole prefix and causally to its own tokens;
    LayerNorm, projections and MLP act per token."""
    attn = block.attn
    qp, kp, vp = split_heads(attn, block.ln_1(prefix))
    qs, ks, vs = split_heads(attn, block.ln_1(rows))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, dropout_p=attn.dropout if attn.training else 0.0,
                                           is_causal=True)
    keys, values = behind_prefix(kp, ks, group), behind_prefix(vp, vs, group)
    return (residual_and_mlp(block, prefix, merge_heads(attn, out_p)),
            attend_from(block, rows, keys, values, visible, qs))


def run_stock_block_shared_pooled(block: nn.Module, prefix: torch.Tensor, rows: torch.Tensor, group: int,
                                  position: torch.Tensor) -> torch.Tensor:
    """The last block of :func:`run_stock_block_shared` read at one token per row: (G*group, D), the output at
    ``position[n]`` (counted from the first own token) of row n, which sees the whole prefix and its own tokens up to
    that position. Only the read tokens run their queries, attention output and MLP (:func:`run_stock_block_pooled`)."""
    normed = block.ln_1(rows)
    (kp, vp), (ks, vs) = project_heads(block.attn, block.ln_1(prefix), 1, 2), project_heads(block.attn, normed, 1, 2)
    return attend_read_token(block, rows, normed, behind_prefix(kp, ks, group), behind_prefix(vp, vs, group),
                             position, prefix.shape[1])


def behind_prefix(of_prefix: torch.Tensor, of_rows: torch.Tensor, group: int) -> torch.Tensor:
    """Every row's keys (or values): its group's prefix part (G, heads, P, d), then its own (G*group, heads, S, d)."""
    g, heads, p, d = of_prefix.shape
    shared = of_prefix.unsqueeze(1).expand(g, group, heads, p, d).reshape(of_rows.shape[0], heads, p, d)
    return torch.cat([shared, of_rows], dim=2)


class UnsupportedTextTower(ValueError):
    """The model's text tower is not one :class:`TextEncoder` can drive (e.g. a Hugging Face text model)."""


class TextEncoder(nn.Module):
    """CLIP's text tower on prompt embeddings instead of token ids (CoOp-style splicing).

    Works with the OpenAI module structure (any ``clip`` package) and open_clip's ``CLIP`` / ``CustomTextCLIP`` with
    a ``TextTransformer``. Inputs may be cut to :meth:`cut_length` tokens when :attr:`truncate` is True.

    Args:
        clip_model: the CLIP whose text tower to drive (its modules are shared, not copied).
        truncate: run prompts cut after the longest EOT where that is exact (``MODEL.CLIP.TRUNCATE_TEXT``).
        sdpa: force fused attention on/off; None = :func:`sdpa_default` for the input's device.
        share_prefix: run a prefix shared by rows once where that is exact (``MODEL.CLIP.SHARE_TEXT_PREFIX``; see
            :meth:`forward`).
        read_only_pooled: run the last block only for each row's EOT token where exact (the SDPA path of a causal
            tower of stock blocks; :func:`run_stock_block_pooled`).
    """

    def __init__(self, clip_model: nn.Module, truncate: bool = True, sdpa: Optional[bool] = None,
                 share_prefix: bool = True, read_only_pooled: bool = True):
        super().__init__()
        tower = getattr(clip_model, "text", None)
        tower = tower if isinstance(tower, nn.Module) else clip_model
        blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
        if blocks is None or not hasattr(tower, "token_embedding"):
            raise UnsupportedTextTower(f"{type(tower).__name__} has no CLIP-style text transformer "
                                       "(token_embedding + transformer.resblocks).")
        self.open_clip = hasattr(tower, "text_pool_type") or hasattr(tower, "pool_type")
        self.token_embedding = tower.token_embedding
        self.transformer = tower.transformer
        self.positional_embedding = tower.positional_embedding
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.context_length = int(self.positional_embedding.shape[0])
        self.sdpa = sdpa
        if self.open_clip:
            self.pool = getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type")
            self.eos_id = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
            self.batch_first = bool(getattr(tower.transformer, "batch_first", True))
            mask = getattr(tower, "attn_mask", None)
            if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
                raise UnsupportedTextTower(f"{type(tower).__name__} appends a class token or masks padding.")
            if self.pool not in POSITIONAL_POOLS:
                raise UnsupportedTextTower(f"text pooling {self.pool!r} is not one of {POSITIONAL_POOLS}.")
            uniform = True
        else:  # OpenAI structure: argmax pooling, the mask held by every block
            self.pool, self.eos_id, self.batch_first = "argmax", None, False
            masks = [getattr(b, "attn_mask", None) for b in blocks]
            mask = masks[0]
            uniform = all(m is mask or (m is not None and mask is not None and torch.equal(m, mask)) for m in masks)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.causal = is_causal_mask(mask)
        self.stock = uniform and all(is_stock_block(b) for b in blocks)
        reason = ("no causal attention mask (every token sees every other)" if not self.causal else
                  "its blocks are not CLIP's stock residual attention blocks" if not self.stock else "")
        self.truncate = bool(truncate) and not reason
        self.share_prefix = bool(share_prefix) and not reason
        self.read_only_pooled = bool(read_only_pooled) and not reason
        if truncate and reason:
            note_once(f"Text truncation is off for the {type(tower).__name__} text tower: {reason}; it runs at the "
                      f"full {self.context_length} tokens.")

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    # ----------------------------------------------------------------------------------------------- lengths
    def pool_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) position each row's feature is read at (EOT for CLIP), from full-length token ids (N, context)."""
        if self.pool == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        fill = 0 if self.pool == "first" else self.context_length - 1
        return torch.full(tokens.shape[:1], fill, dtype=torch.long, device=tokens.device)

    def cut_length(self, max_position: int) -> int:
        """Tokens to run for prompts read at positions <= ``max_position``: ``max_position + 1`` when truncating."""
        return min(int(max_position) + 1, self.context_length) if self.truncate else self.context_length

    # ----------------------------------------------------------------------------------------------- forward
    def _attention_mask(self, length: int, x: torch.Tensor, sdpa: bool) -> Optional[torch.Tensor]:
        if self.attn_mask is None or (sdpa and self.causal and self.stock):
            return None
        return self.attn_mask[:length, :length].to(device=x.device, dtype=x.dtype)

    @staticmethod
    def _insert_deep(x: torch.Tensor, deep_prompts: Optional[Sequence[torch.Tensor]], i: int) -> torch.Tensor:
        """Block i's deep text prompt in place of tokens 1..n (none before block 1 or past the last prompt)."""
        if deep_prompts is None or not 1 <= i <= len(deep_prompts):
            return x
        ctx = deep_prompts[i - 1].to(x.dtype)
        return torch.cat([x[:, :1], ctx.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + ctx.shape[0]:]], dim=1)

    def _forward_shared(self, x: torch.Tensor, p: int, group: int, deep_prompts: Optional[Sequence[torch.Tensor]],
                        read: torch.Tensor) -> torch.Tensor:
        """The blocks on (prefix once per group, every row's own tokens) -> (N, D), each row's output at its position
        ``read`` (counted from p), the last block run for that token alone where :attr:`read_only_pooled`."""
        prefix, rows = x[::group, :p], x[:, p:]
        visible = shared_prefix_mask(p, rows.shape[1], x.device)  # the same in every block
        blocks = list(self.transformer.resblocks)
        last = len(blocks) - 1 if self.read_only_pooled else len(blocks)
        for i, block in enumerate(blocks[:last]):
            prefix, rows = run_stock_block_shared(block, self._insert_deep(prefix, deep_prompts, i), rows, group,
                                                  visible)
        if last < len(blocks):
            return run_stock_block_shared_pooled(blocks[last], self._insert_deep(prefix, deep_prompts, last), rows,
                                                 group, read)
        return rows[torch.arange(rows.shape[0], device=rows.device), read.to(rows.device)]

    def _block(self, block: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], sdpa: bool) -> torch.Tensor:
        if self.stock:
            return run_stock_block(block, x, mask, self.causal, sdpa)
        if not self.open_clip:  # OpenAI-structure block of unknown design: its own forward, sequence-first
            return block(x.transpose(0, 1).contiguous()).transpose(0, 1)
        if self.batch_first:
            return block(x, attn_mask=mask)
        return block(x.transpose(0, 1).contiguous(), attn_mask=mask).transpose(0, 1)

    def forward(self, prompts: torch.Tensor, eot_index: torch.Tensor,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None, shared_prefix: int = 0,
                group: int = 0) -> torch.Tensor:
        """prompts: (N, L, D) embeddings; eot_index: (N,) position of each EOS token -> (N, E) features.

        L is the context length, or any cut ``>= max(eot_index) + 1`` when :attr:`truncate` is on.
        ``deep_prompts[j]`` (n, D) replaces tokens 1..n before block j+1.
        ``shared_prefix`` P > 0 states that the first P embeddings are the same for every row of a group of ``group``
        consecutive rows (0 = all N rows) and that every EOT is at position >= P (the caller's guarantee: e.g. SOS
        and a learned context before the class names); deep prompts must lie inside it. Where exact (see
        :attr:`share_prefix`) the prefix then runs once per group (:func:`run_stock_block_shared`).
        """
        length = prompts.shape[1]
        if length != self.context_length and not (self.truncate and length < self.context_length):
            raise ValueError(f"Text prompts of {length} tokens for a text tower of context {self.context_length} "
                             f"that runs only at full length (truncate={self.truncate}).")
        if deep_prompts:
            deepest = max(p.shape[0] for p in deep_prompts)
            if 1 + deepest >= length:
                raise ValueError(f"Deep text prompts of {deepest} tokens (positions 1..{deepest}) do not fit in "
                                 f"prompts cut to {length} tokens; the cut must keep them before the EOT token.")
        sdpa = sdpa_default(prompts.device) if self.sdpa is None else self.sdpa
        x = prompts.to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        group = group or x.shape[0]
        if self.share_prefix and sdpa and 0 < shared_prefix < length and x.shape[0] % group == 0 and group > 1:
            if deep_prompts and 1 + max(p.shape[0] for p in deep_prompts) > shared_prefix:
                raise ValueError(f"Deep text prompts reach past the shared prefix of {shared_prefix} tokens.")
            x = self._forward_shared(x, shared_prefix, group, deep_prompts, eot_index.to(x.device) - shared_prefix)
        else:
            mask = self._attention_mask(length, x, sdpa)
            blocks = list(self.transformer.resblocks)
            last = len(blocks) - 1 if self.read_only_pooled and sdpa else len(blocks)
            for i, block in enumerate(blocks[:last]):
                x = self._block(block, self._insert_deep(x, deep_prompts, i), mask, sdpa)
            if last < len(blocks):
                x = run_stock_block_pooled(blocks[last], self._insert_deep(x, deep_prompts, last), eot_index)
            else:
                x = x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)]
        # LayerNorm is per token: normalising only the pooled tokens equals pooling the normalised sequence.
        x = self.ln_final(x)
        proj = self.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Module) else x @ proj.to(x.dtype)


def class_token_pooled(visual: nn.Module) -> bool:
    """True for a ViT image tower whose feature is its class token (OpenAI CLIP; open_clip with ``pool_type='tok'``
    and no attentional pooler). Average-pooled or attention-pooled towers read every token."""
    return getattr(visual, "attn_pool", None) is None and getattr(visual, "pool_type", "tok") == "tok"


class VisionEncoder(nn.Module):
    """CLIP's image tower with optional shallow and deep visual prompts (ViT), or the plain tower (ResNet and towers
    not pooled at the class token, which take no prompts).

    ``sdpa``: force fused attention on/off in stock blocks; None = :func:`sdpa_default` for the input's device.
    ``read_only_pooled``: the last block runs for the class token alone (its keys and values still come from every
    token), which is exact because only that token is read (:func:`run_stock_block_pooled`).
    """

    def __init__(self, clip_model: nn.Module, sdpa: Optional[bool] = None, read_only_pooled: bool = True):
        super().__init__()
        self.visual = clip_model.visual
        self.vit = is_vit(clip_model) and class_token_pooled(self.visual)
        self.sdpa = sdpa
        blocks = list(self.visual.transformer.resblocks) if self.vit else []
        # Stock blocks without a mask of their own are driven batch-first (and through SDPA); others keep theirs.
        self.stock: List[bool] = [is_stock_block(b) and getattr(b, "attn_mask", None) is None for b in blocks]
        self.read_only_pooled = bool(read_only_pooled) and bool(self.stock) and self.stock[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def refuse_prompts(self) -> None:
        """Raise the error for visual prompts on a tower that cannot take them (not a class-token ViT)."""
        kind = ("a ResNet image tower" if not hasattr(self.visual, "class_embedding") else
                f"an image tower pooled by {getattr(self.visual, 'pool_type', 'attention')!r}, not its class token")
        raise ValueError(f"Visual prompts need a class-token ViT backbone; this CLIP has {kind}. Choose a ViT "
                         "backbone or a learner without visual prompts.")

    def forward(self, images: torch.Tensor, prompts: Optional[torch.Tensor] = None,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, E). prompts (n, W) are appended; ``deep_prompts[j]`` replaces them before
        block j+1."""
        if not self.vit:
            if prompts is not None or deep_prompts:
                self.refuse_prompts()
            return self.visual(images.to(self.dtype))
        v = self.visual
        sdpa = sdpa_default(images.device) if self.sdpa is None else self.sdpa
        blocks = list(v.transformer.resblocks)
        last = len(blocks) - 1 if self.read_only_pooled and sdpa else len(blocks)
        x = v.conv1(images.to(self.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if prompts is not None:
            x = torch.cat([x, prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)
        for i, block in enumerate(blocks):
            if deep_prompts is not None and 1 <= i <= len(deep_prompts):
                ctx = deep_prompts[i - 1].to(x.dtype)
                x = torch.cat([x[:, : x.shape[1] - ctx.shape[0]], ctx.unsqueeze(0).expand(x.shape[0], -1, -1)],
                              dim=1)
            if i == last:
                x = run_stock_block_pooled(block, x, None)
            elif self.stock[i]:
                x = run_stock_block(block, x, None, False, sdpa)
            else:  # the OpenAI structure's own forward, sequence-first
                x = block(x.transpose(0, 1).contiguous()).transpose(0, 1)
        x = v.ln_post(x if last < len(blocks) else x[:, 0, :])
        if v.proj is not None:
            x = x @ v.proj.to(x.dtype)
        return x

