"""The last block run for the pooled token only (tiny random CLIPs, no Dassl).

A tower's feature is one token of its last block (the class token of a ViT, each prompt's EOT token of the causal
text tower), so that block needs every token's keys and values but the queries, attention output and MLP of the read
token alone. Checked here: features and prompt gradients equal the unshortened towers (and the CLIP packages' own
``encode_image`` / ``encode_text``), the last block's MLP sees one token per row, and towers pooled otherwise keep
their own forward.
"""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainers.core.clip_models import load_clip
from trainers.core.encoders import TextEncoder, VisionEncoder, class_token_pooled, run_stock_block, \
    run_stock_block_pooled
from trainers.core.projector import PromptKDStudent, StudentLearner
from trainers.core.prompt_learners import (CoCoOpPromptLearner, CoOpPromptLearner, IVLPPromptLearner,
                                           MaPLePromptLearner, PromptedCLIP, VPTPromptLearner)
from trainers.core.teacher import FrozenTeacher

CLASSNAMES = ["cat", "sea_lion", "a very long class name made of many many different words for a test",
              "golden retriever", "x"]

LEARNERS = {
    "coop": lambda m, t: CoOpPromptLearner(m, t, 4),
    "cocoop": lambda m, t: CoCoOpPromptLearner(m, t, 4, "a photo of a"),
    "vpt_deep": lambda m, t: VPTPromptLearner(m, 4, 4),  # a deep visual prompt in the last block too
    "maple": lambda m, t: MaPLePromptLearner(m, t, 2, "a photo of a", 4),
    "ivlp_all_blocks": lambda m, t: IVLPPromptLearner(m, t, 4, 4, "a photo of a", 4, 4),
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm().clamp_min(1e-12))


def last_mlp_tokens(blocks: nn.Module, fn) -> list:
    """Run ``fn``; the (rows, tokens) each call of the last block's MLP received."""
    seen = []
    hook = blocks[-1].mlp.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape[:-1])))
    try:
        fn()
    finally:
        hook.remove()
    return seen


@pytest.fixture(scope="module")
def deep():
    return load_clip("tiny-vit-deep")  # 4 text and 4 vision blocks


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_pooled_last_block_equals_the_whole_last_block(single_thread, deep, name, shared):
    """Logits and every prompt gradient equal the towers without the shortcut (77 tokens, no shared prefix), through
    the shared-prefix path and the plain truncated path; the last blocks' MLPs see one token per row."""
    torch.manual_seed(0)
    learner = LEARNERS[name](deep.model, deep.tokenize)
    whole = PromptedCLIP(deep, learner, truncate_text=False, share_text_prefix=False)
    whole.text_encoder.read_only_pooled = whole.image_encoder.read_only_pooled = False
    pooled = PromptedCLIP(deep, learner, truncate_text=True, share_text_prefix=shared)
    assert pooled.text_encoder.read_only_pooled and pooled.image_encoder.read_only_pooled
    for model in (whole, pooled):
        model.register_class_set("eval", CLASSNAMES)
    images = torch.randn(3, 3, 32, 32)
    out, grads, text_seen, image_seen = {}, {}, {}, {}
    for tag, model in (("whole", whole), ("pooled", pooled)):
        learner.zero_grad(set_to_none=True)

        def run():
            out[tag] = model(images)

        image_seen[tag] = last_mlp_tokens(deep.model.visual.transformer.resblocks,
                                          lambda: text_seen.__setitem__(tag, last_mlp_tokens(
                                              deep.model.transformer.resblocks, run)))
        out[tag].logsumexp(-1).sum().backward()
        grads[tag] = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
    assert rel_err(out["pooled"], out["whole"]) < 1e-5
    assert grads["pooled"].keys() == grads["whole"].keys() and grads["whole"]
    for key, g in grads["whole"].items():
        assert g.abs().sum() > 0 and rel_err(grads["pooled"][key], g) < 1e-5, key
    rows = len(CLASSNAMES) * (images.shape[0] if learner.conditional else 1)
    if not learner.fixed_text:
        assert text_seen["whole"] == [(rows, 77)] and text_seen["pooled"] == [(rows, 1)]
    prompts = learner.vision_prompts()[0].shape[0] if learner.has_vision_prompts else 0
    image_tokens = 1 + (32 // 8) ** 2 + prompts  # CLS, 4x4 patches, visual prompts
    assert image_seen["whole"] == [(3, image_tokens)] and image_seen["pooled"] == [(3, 1)]


def test_pooled_block_reads_the_given_token_causally():
    """The helper alone: row n's output at ``position[n]`` of the causal block, and at token 0 of the full one."""
    torch.manual_seed(0)
    block = copy.deepcopy(load_clip("tiny-vit").model.transformer.resblocks[0])
    x = torch.randn(4, 9, 64)
    position = torch.tensor([8, 0, 3, 5])
    with torch.no_grad():
        causal = run_stock_block(block, x, None, True, True)
        full = run_stock_block(block, x, None, False, True)
        assert rel_err(run_stock_block_pooled(block, x, position), causal[torch.arange(4), position]) < 1e-6
        assert rel_err(run_stock_block_pooled(block, x, None), full[:, 0]) < 1e-6
        # a wrong mask would let row 1's token 0 see later tokens: its output would then differ
        assert rel_err(run_stock_block_pooled(block, x, torch.zeros(4, dtype=torch.long))[1], full[1, 0]) > 1e-3


@pytest.mark.parametrize("name", ["tiny-vit-wide", "tiny-open-clip"])
def test_frozen_teacher_image_features_equal_encode_image(single_thread, name):
    """The KDPL teacher now drives its image tower through our blocks: the same features as the package's own."""
    loaded = load_clip(name)
    size = loaded.preprocess.size
    teacher = FrozenTeacher(loaded, size, loaded.preprocess.mean, loaded.preprocess.std)
    assert teacher.image_encoder.vit and teacher.image_encoder.read_only_pooled
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = F.normalize(loaded.model.encode_image(images).float(), dim=-1)
    seen = last_mlp_tokens(loaded.model.visual.transformer.resblocks, lambda: teacher.encode_image(images))
    assert rel_err(teacher.encode_image(images), ref) < 1e-5
    assert seen == [(3, 1)]


def test_tower_pooled_otherwise_runs_its_own_forward_and_refuses_prompts(single_thread):
    """An open_clip tower that averages its patch tokens reads every token: no shortcut, no visual prompts."""
    loaded = load_clip("tiny-open-clip")
    model = copy.deepcopy(loaded.model)
    assert class_token_pooled(model.visual)
    model.visual.pool_type = "avg"
    assert not class_token_pooled(model.visual)
    encoder = VisionEncoder(model)
    assert not encoder.vit
    images = torch.randn(2, 3, loaded.preprocess.size, loaded.preprocess.size)
    with torch.no_grad():
        assert rel_err(encoder(images), model.encode_image(images)) < 1e-6
    with pytest.raises(ValueError, match="pooled by 'avg'.*class token"):
        encoder(images, torch.zeros(4, model.visual.conv1.out_channels))
    # learners with visual prompts are refused when the model is built, before any training
    avg = dataclasses.replace(loaded, model=model)
    with pytest.raises(ValueError, match="pooled by 'avg'.*ViT backbone"):
        PromptedCLIP(avg, VPTPromptLearner(model, 4, 2))
    with pytest.raises(ValueError, match="pooled by 'avg'"):
        PromptKDStudent(avg, StudentLearner(model, 4, 2, 32))
    PromptedCLIP(avg, CoOpPromptLearner(model, loaded.tokenize, 4))  # text prompts alone are fine
    with pytest.raises(ValueError, match="ResNet"):
        VisionEncoder(load_clip("tiny-rn").model)(torch.randn(1, 3, 64, 64), torch.zeros(4, 64))


def test_text_encoder_without_sdpa_or_shortcut_reads_the_whole_last_block(single_thread, deep):
    tokens = deep.tokenize([f"a photo of a {c}." for c in CLASSNAMES])
    pos = tokens.argmax(-1)
    embeds = deep.model.token_embedding(tokens).detach()
    out = []
    with torch.no_grad():
        ref = deep.model.encode_text(tokens)
        for encoder, expected in ((TextEncoder(deep.model), (5, 1)), (TextEncoder(deep.model, sdpa=False), (5, 77)),
                                  (TextEncoder(deep.model, read_only_pooled=False), (5, 77))):
            seen = last_mlp_tokens(deep.model.transformer.resblocks, lambda: out.append(encoder(embeds, pos)))
            assert seen == [expected]
            assert rel_err(out[-1], ref) < 1e-5
