"""Exact text-sequence truncation and SDPA attention in our driven CLIP blocks (tiny random CLIPs, no Dassl).

CLIP's text tower is causal and read at the EOT token, so prompts cut after the longest EOT give the same features
and gradients as the full 77 tokens; the fused-attention path equals the module path. Both are checked here against
the full-length module path and against the CLIP packages' own ``encode_text``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainers.core import encoders
from trainers.core.clip_models import load_clip
from trainers.core.encoders import (TextEncoder, UnsupportedTextTower, VisionEncoder, is_causal_mask, is_stock_block,
                                    self_attention)
from trainers.core.prompt_learners import (CoCoOpPromptLearner, CoOpPromptLearner, IVLPPromptLearner,
                                           MaPLePromptLearner, PromptedCLIP, VPTPromptLearner, encode_texts)
from trainers.core.teacher import FrozenTeacher

# Very different lengths: 1 token up to a name that ends near position 30 with a 4-token context.
CLASSNAMES = ["cat", "sea_lion", "a very long class name made of many many different words for a test",
              "golden retriever", "x"]
TEXTS = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES]

LEARNERS = {
    "coop": lambda m, t: CoOpPromptLearner(m, t, 4),
    "coop_init": lambda m, t: CoOpPromptLearner(m, t, 4, "a photo of a"),
    "cocoop": lambda m, t: CoCoOpPromptLearner(m, t, 4, "a photo of a"),
    "vpt": lambda m, t: VPTPromptLearner(m, 4, 3),
    "maple": lambda m, t: MaPLePromptLearner(m, t, 2, "a photo of a", 3),
    "ivlp": lambda m, t: IVLPPromptLearner(m, t, 4, 4, "a photo of a", 3, 3),
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@pytest.fixture(scope="module")
def deep():
    return load_clip("tiny-vit-deep")  # 4 text / 4 vision blocks: deep prompts at blocks 1 and 2


@pytest.fixture(scope="module")
def open_clip_tiny():
    return load_clip("tiny-open-clip")


def lengths_seen(encoder: nn.Module, fn):
    """Run ``fn`` and return the sequence lengths the text encoder was called with."""
    seen = []
    hook = encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        fn()
    finally:
        hook.remove()
    return seen


# ------------------------------------------------------------------------------------------- every learner
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_truncated_logits_and_prompt_gradients_equal_full_length(single_thread, deep, name):
    torch.manual_seed(0)
    learner = LEARNERS[name](deep.model, deep.tokenize)
    full = PromptedCLIP(deep, learner, truncate_text=False)
    cut = PromptedCLIP(deep, learner, truncate_text=True)
    for model in (full, cut):
        model.register_class_set("eval", CLASSNAMES)
    images = torch.randn(3, 3, 32, 32)
    results = {}
    for tag, model in (("full", full), ("cut", cut)):
        learner.zero_grad(set_to_none=True)
        seen = []
        if not learner.fixed_text:
            seen = lengths_seen(model.text_encoder, lambda: results.__setitem__(tag, model(images)))
        else:
            results[tag] = model(images)
        results[tag].logsumexp(-1).sum().backward()
        grads = {n: p.grad.clone() for n, p in learner.named_parameters()}
        results[tag + "_grads"] = grads
        results[tag + "_seen"] = seen
    assert rel_err(results["cut"], results["full"]) < 1e-5
    assert results["full_grads"].keys() == results["cut_grads"].keys() and results["cut_grads"]
    for key, g in results["full_grads"].items():
        assert g.abs().sum() > 0, key
        assert rel_err(results["cut_grads"][key], g) < 1e-5, key
    if not learner.fixed_text:
        eot = cut.class_sets["classes_eval"].eot_index
        assert results["full_seen"] == [77]
        assert results["cut_seen"] == [int(eot.max()) + 1] and int(eot.max()) + 1 < 40
    else:  # frozen template features: the truncated encode equals the full one
        assert rel_err(cut.fixed_text_eval, full.fixed_text_eval) < 1e-5


@pytest.mark.parametrize("name", ["coop", "maple", "cocoop"])
def test_truncated_selection_equals_full_selection(single_thread, deep, name):
    """Class-agnostic steps encode a selected subset at the whole set's cut (no per-step host read)."""
    learner = LEARNERS[name](deep.model, deep.tokenize)
    full = PromptedCLIP(deep, learner, truncate_text=False)
    cut = PromptedCLIP(deep, learner, truncate_text=True)
    names = CLASSNAMES + [f"object {i}" for i in range(5)]
    for model in (full, cut):
        model.register_class_set("train", names)
    idx = torch.tensor([7, 0, 3])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        seen = lengths_seen(cut.text_encoder, lambda: cut(images, key="train", idx=idx))
        assert rel_err(cut(images, key="train", idx=idx), full(images, key="train", idx=idx)) < 1e-5
    assert seen == [cut.class_sets["classes_train"].max_eot + 1]


def test_context_init_prompt_equals_clip_encode_text(single_thread, deep):
    """An untrained CoOp context initialised from 'a photo of a' is exactly that text: our truncated SDPA path equals
    the clip package's own full-length encode_text."""
    student = PromptedCLIP(deep, CoOpPromptLearner(deep.model, deep.tokenize, 4, "a photo of a"))
    student.register_class_set("eval", CLASSNAMES)
    with torch.no_grad():
        ours = student.encode_text("eval")
        ref = F.normalize(deep.model.encode_text(deep.tokenize(TEXTS)).float(), dim=-1)
    assert rel_err(ours, ref) < 1e-5


# ------------------------------------------------------------------------------------- teachers, zero-shot
@pytest.mark.parametrize("name", ["tiny-vit-wide", "tiny-open-clip"])
def test_teacher_class_features_equal_encode_text(single_thread, name):
    loaded = load_clip(name)
    texts = TEXTS * 3  # several chunks below, each cut at its own longest text
    with torch.no_grad():
        ref = F.normalize(loaded.model.encode_text(loaded.tokenize(texts)).float(), dim=-1)
    cut = FrozenTeacher(loaded, 32, (0.5,) * 3, (0.5,) * 3, truncate_text=True).set_class_texts(texts).clone()
    full = FrozenTeacher(loaded, 32, (0.5,) * 3, (0.5,) * 3, truncate_text=False).set_class_texts(texts)
    assert rel_err(cut, ref) < 1e-5 and rel_err(full, ref) < 1e-5
    encoder = TextEncoder(loaded.model)
    assert encoder.truncate and encoder.causal and encoder.stock
    tokens = loaded.tokenize(texts)
    with torch.no_grad():
        in_order = encode_texts(loaded.model, loaded.tokenize, texts, chunk=4)
    assert rel_err(in_order, ref) < 1e-5  # shortest-first chunks come back in the input order
    assert int(encoder.pool_positions(tokens).max()) + 1 < 40


def test_encode_texts_chunks_run_at_their_own_cut(single_thread, deep, monkeypatch):
    seen = []
    original = TextEncoder.forward

    def spy(self, prompts, *args, **kwargs):
        seen.append(prompts.shape[1])
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "forward", spy)
    texts = ["a photo of a x."] * 3 + [TEXTS[2]]
    with torch.no_grad():
        encode_texts(deep.model, deep.tokenize, texts, chunk=3)
    eot = deep.tokenize(texts).argmax(-1)
    assert seen == [int(eot[0]) + 1, int(eot[3]) + 1]
    seen.clear()
    with torch.no_grad():
        encode_texts(deep.model, deep.tokenize, texts, chunk=3, truncate=False)
    assert seen == [77, 77]


def test_open_clip_tower_truncates_with_its_mask_and_pooling(single_thread, open_clip_tiny):
    model = open_clip_tiny.model
    encoder = TextEncoder(model)
    assert encoder.open_clip and encoder.pool == "argmax" and encoder.batch_first and encoder.truncate
    tokens = open_clip_tiny.tokenize(TEXTS)
    pos = encoder.pool_positions(tokens)
    length = encoder.cut_length(int(pos.max()))
    with torch.no_grad():
        ours = encoder(model.token_embedding(tokens[:, :length]), pos)
        ref = model.encode_text(tokens)
    assert length < 40 and rel_err(ours, ref) < 1e-5
    # 'eos' pooling reads the first eos token; 'last' pooling reads position 76, so nothing can be cut
    eos = copy.deepcopy(model)
    eos.text_pool_type, eos.text_eos_id = "eos", int(tokens[0].max())
    assert torch.equal(TextEncoder(eos).pool_positions(tokens), pos)
    last = copy.deepcopy(model)
    last.text_pool_type = "last"
    enc_last = TextEncoder(last)
    assert enc_last.cut_length(int(enc_last.pool_positions(tokens).max())) == 77
    with torch.no_grad():
        assert rel_err(encode_texts(last, open_clip_tiny.tokenize, TEXTS),
                       F.normalize(last.encode_text(tokens), dim=-1)) < 1e-5


# ------------------------------------------------------------------------------------ shared prompt prefix
def tokens_per_block(encoder: TextEncoder, fn):
    """Run ``fn``; return the number of token positions the first text block's MLP processed (per call)."""
    counts = []
    mlp = encoder.transformer.resblocks[0].mlp
    hook = mlp.register_forward_hook(lambda m, args, out: counts.append(args[0].shape[0] * args[0].shape[1]))
    try:
        fn()
    finally:
        hook.remove()
    return counts


@pytest.mark.parametrize("name", ["coop", "coop_init", "cocoop", "maple", "ivlp"])
def test_shared_prefix_logits_and_gradients_equal_the_plain_full_length_path(single_thread, deep, name):
    """SOS + context run once (per image for CoCoOp), every class only its own tokens: the same logits and prompt
    gradients as the full 77-token path without any shortcut, with far fewer token positions per block."""
    torch.manual_seed(0)
    learner = LEARNERS[name](deep.model, deep.tokenize)
    plain = PromptedCLIP(deep, learner, truncate_text=False, share_text_prefix=False)
    fast = PromptedCLIP(deep, learner, truncate_text=True, share_text_prefix=True)
    for model in (plain, fast):
        model.register_class_set("eval", CLASSNAMES)
    images = torch.randn(3, 3, 32, 32)
    out, grads, counts = {}, {}, {}
    for tag, model in (("plain", plain), ("fast", fast)):
        learner.zero_grad(set_to_none=True)
        counts[tag] = tokens_per_block(model.text_encoder, lambda: out.__setitem__(tag, model(images)))
        out[tag].logsumexp(-1).sum().backward()
        grads[tag] = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
    assert rel_err(out["fast"], out["plain"]) < 1e-5
    assert grads["fast"].keys() == grads["plain"].keys() and grads["plain"]
    for key, g in grads["plain"].items():
        assert g.abs().sum() > 0 and rel_err(grads["fast"][key], g) < 1e-5, key
    classes = fast.class_sets["classes_eval"]
    groups = images.shape[0] if learner.conditional else 1
    p, length = 1 + learner.n_ctx, classes.max_eot + 1
    rows = groups * len(CLASSNAMES)
    assert counts["plain"] == [rows * 77]
    assert counts["fast"] == [groups * p, rows * (length - p)]  # the prefix once per group, then every row's rest


def test_shared_prefix_with_an_open_clip_tower_and_refusals(single_thread, open_clip_tiny, deep):
    torch.manual_seed(0)
    learner = CoOpPromptLearner(open_clip_tiny.model, open_clip_tiny.tokenize, 4)
    plain = PromptedCLIP(open_clip_tiny, learner, truncate_text=False, share_text_prefix=False)
    fast = PromptedCLIP(open_clip_tiny, learner)
    assert fast.text_encoder.share_prefix and not plain.text_encoder.share_prefix
    for model in (plain, fast):
        model.register_class_set("eval", CLASSNAMES)
    with torch.no_grad():
        assert rel_err(fast.encode_text("eval"), plain.encode_text("eval")) < 1e-5
    # deep prompts must lie inside the shared prefix; the plain path runs when sharing is off or SDPA is forced off
    encoder = TextEncoder(deep.model)
    tokens = deep.tokenize(TEXTS)
    pos = encoder.pool_positions(tokens)
    embeds = deep.model.token_embedding(tokens[:, :int(pos.max()) + 1]).detach()
    with pytest.raises(ValueError, match="shared prefix"):
        encoder(embeds, pos, [torch.zeros(4, embeds.shape[-1])], shared_prefix=3)
    no_sdpa = TextEncoder(deep.model, sdpa=False)
    assert tokens_per_block(no_sdpa, lambda: no_sdpa(embeds, pos, shared_prefix=3)) == [embeds.shape[0] *
                                                                                         embeds.shape[1]]


# ---------------------------------------------------------------------------------- where it is not exact
def test_non_causal_tower_falls_back_to_full_length(single_thread, capsys):
    loaded = load_clip("tiny-vit")
    model = copy.deepcopy(loaded.model)
    for block in model.transformer.resblocks:
        block.attn_mask = None  # bidirectional: later tokens would change the EOT feature
    encoders._NOTES_SHOWN.clear()
    encoder = TextEncoder(model, truncate=True)
    assert not encoder.truncate and not encoder.causal and encoder.cut_length(10) == 77
    assert "Text truncation is off" in capsys.readouterr().out
    TextEncoder(model, truncate=True)
    assert capsys.readouterr().out == ""  # the note is printed once
    tokens = loaded.tokenize(TEXTS)
    with pytest.raises(ValueError, match="full length"):
        encoder(model.token_embedding(tokens[:, :30]), tokens.argmax(-1))
    with torch.no_grad():
        feats = encode_texts(model, loaded.tokenize, TEXTS)
        ref = F.normalize(model.encode_text(tokens), dim=-1)
    assert rel_err(feats, ref) < 1e-5
    open_model = copy.deepcopy(load_clip("tiny-open-clip").model)
    open_model.attn_mask = None
    assert not TextEncoder(open_model).truncate


def test_unknown_block_design_runs_its_own_forward_at_full_length(single_thread):
    loaded = load_clip("tiny-vit")
    model = copy.deepcopy(loaded.model)
    block = model.transformer.resblocks[1]

    class PromptedBlock(type(block)):  # e.g. a fork's block with prompt logic in its forward
        pass

    block.__class__ = PromptedBlock
    assert not is_stock_block(block)
    encoder = TextEncoder(model)
    assert encoder.causal and not encoder.stock and not encoder.truncate
    tokens = loaded.tokenize(TEXTS)
    with torch.no_grad():
        ours = encoder(model.token_embedding(tokens), tokens.argmax(-1))
        ref = model.encode_text(tokens)
    assert rel_err(ours, ref) < 1e-5


def test_deep_prompts_must_fit_in_the_cut_and_towers_must_be_clip_like(deep):
    encoder = TextEncoder(deep.model)
    with pytest.raises(ValueError, match="do not fit"):
        encoder(torch.zeros(2, 4, 64), torch.tensor([3, 3]), [torch.zeros(4, 64)])
    with pytest.raises(UnsupportedTextTower, match="text transformer"):
        TextEncoder(nn.Module())
    mask = torch.full((5, 5), float("-inf")).triu(1)
    assert is_causal_mask(mask) and not is_causal_mask(mask.t()) and not is_causal_mask(None)


# --------------------------------------------------------------------------------------------------- SDPA
def test_sdpa_equals_module_attention(single_thread):
    torch.manual_seed(0)
    for batch_first in (False, True):
        attn = nn.MultiheadAttention(64, 4, batch_first=batch_first)
        x = torch.randn(3, 9, 64, requires_grad=True)
        causal = torch.full((9, 9), float("-inf")).triu(1)
        other = torch.randn(9, 9)
        for mask, is_causal in ((None, False), (causal, True), (other, False)):
            ours = self_attention(attn, x, mask, is_causal, sdpa=True)
            ref = self_attention(attn, x, mask, False, sdpa=False)
            g_ours = torch.autograd.grad(ours.sum(), [x, attn.in_proj_weight])
            g_ref = torch.autograd.grad(ref.sum(), [x, attn.in_proj_weight])
            assert rel_err(ours, ref) < 1e-5
            assert all(rel_err(a, b) < 1e-5 for a, b in zip(g_ours, g_ref))


@pytest.mark.parametrize("name", ["maple", "ivlp"])
def test_sdpa_encoders_equal_module_encoders(single_thread, deep, name):
    """Text and image towers with deep prompts: the same features and prompt gradients through either attention."""
    torch.manual_seed(1)
    learner = LEARNERS[name](deep.model, deep.tokenize)
    model = PromptedCLIP(deep, learner)
    model.register_class_set("eval", CLASSNAMES)
    images = torch.randn(2, 3, 32, 32)
    outs = {}
    for sdpa in (False, True):
        model.text_encoder.sdpa = model.image_encoder.sdpa = sdpa
        learner.zero_grad(set_to_none=True)
        logits = model(images)
        logits.logsumexp(-1).sum().backward()
        outs[sdpa] = (logits.detach(), {n: p.grad.clone() for n, p in learner.named_parameters()})
    assert rel_err(outs[True][0], outs[False][0]) < 1e-5
    for key, g in outs[False][1].items():
        assert rel_err(outs[True][1][key], g) < 1e-5, key


def test_vision_encoder_sdpa_equals_clip_encode_image(single_thread):
    loaded = load_clip("tiny-vit-wide")  # 2 heads
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = loaded.model.encode_image(images)
        for sdpa in (True, False):
            assert rel_err(VisionEncoder(loaded.model, sdpa=sdpa)(images), ref) < 1e-5
