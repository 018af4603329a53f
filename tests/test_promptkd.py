"""PromptKD core (no Dassl): loss, parameter counts with the real widths, student shapes and gradients, teacher
checkpoint loading and its refusals, class vectors computed once, distillation on tiny random CLIPs."""
from __future__ import annotations

import math
import os

import pytest
import torch

from trainers.core import clip_models
from trainers.core.clip_models import CLIP_MEAN, CLIP_STD, load_clip
from trainers.core.losses import promptkd_loss
from trainers.core.projector import Projector, PromptKDStudent, StudentLearner, known_embed_dim
from trainers.core.prompt_learners import IVLPPromptLearner
from trainers.core.prompted_teacher import (build_prompted_teacher, encode_class_set, load_class_vectors,
                                            resolve_teacher_checkpoint, save_class_vectors, split_teacher_state)

CLASSES = ["annual crop land", "forest", "herbaceous vegetation land", "highway or road", "industrial buildings",
           "pasture land", "permanent crop land", "residential buildings", "river", "sea_or_lake"]


# ------------------------------------------------------------------------------------------------------ loss
def test_loss_is_the_reference_formula():
    torch.manual_seed(0)
    b, n, t, w = 4, 10, 2.0, 1000.0
    teacher, student = torch.randn(b, n) * 100, torch.randn(b, n) * 100
    p_t = torch.softmax(teacher.double() / t, -1)
    log_p_s = torch.log_softmax(student.double() / t, -1)
    expected = w * t ** 2 * (p_t * (p_t.log() - log_p_s)).sum() / (b * n)
    got = promptkd_loss(teacher, student, temperature=t, weight=w)
    assert abs(float(got) - float(expected)) <= 1e-5 * abs(float(expected))
    assert float(promptkd_loss(teacher, teacher.clone(), t, w)) == pytest.approx(0.0, abs=1e-4)
    # the normaliser is B*N: doubling N with classes of zero probability under both halves the loss
    pad = torch.full((b, n), -1e4)
    doubled = promptkd_loss(torch.cat([teacher, pad], 1), torch.cat([student, pad], 1), t, w)
    assert float(doubled) == pytest.approx(float(got) / 2, rel=1e-4)


# --------------------------------------------------------------------------------------- real-width parameter count
@pytest.mark.parametrize("depth,expected,tensors", [(9, 1_013_760, 15), (3, 995_328, 9)])
def test_trainable_count_with_vit_b16_student_and_l14_teacher(depth, expected, tensors):
    """Real ViT-B/16 and ViT-L/14 shapes on the meta device (no memory, no weights)."""
    _, model_mod = clip_models.clip_package()
    with torch.device("meta"):
        b16 = model_mod.CLIP(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12)
        l14 = model_mod.CLIP(768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12)
        teacher_dim = int(l14.text_projection.shape[1])
        assert teacher_dim == known_embed_dim("ViT-L/14") == 768
        learner = StudentLearner(b16, 4, depth, teacher_dim, project_layers=2)
    params = dict(learner.named_parameters())
    assert sum(p.numel() for p in params.values()) == expected and len(params) == tensors
    assert sum(p.numel() for n, p in params.items() if not n.startswith("projector.")) == depth * 4 * 768
    assert sum(p.numel() for n, p in params.items() if n.startswith("projector.")) == 986_112
    # BatchNorm statistics are buffers, saved with the checkpoint but not trained
    bn = "projector.conv1.1."
    assert {n for n, _ in learner.named_buffers()} == {bn + "running_mean", bn + "running_var", bn + "num_batches_tracked"}


def test_projector_layers():
    assert sum(p.numel() for p in Projector(512, 768, 1).parameters()) == 512 * 768 + 768
    two = Projector(512, 768, 2)
    assert [type(m).__name__ for m in two.conv1] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert len(Projector(512, 768, 3).conv1) == 7
    assert two(torch.randn(4, 512)).shape == (4, 768)
    with pytest.raises(ValueError, match="PROJECT_LAYER"):
        Projector(512, 768, 4)


# ------------------------------------------------------------------------------------------------ tiny models
def _student(n_classes: int = 10, depth: int = 2) -> PromptKDStudent:
    loaded = load_clip("tiny-vit")
    student = PromptKDStudent(loaded, StudentLearner(loaded.model, 4, depth, 96))
    torch.manual_seed(1)
    student.set_class_vectors(torch.nn.functional.normalize(torch.randn(n_classes, 96), dim=-1))
    return student


def _teacher_learner(seed: int = 0):
    loaded = load_clip("tiny-vit-wide")
    learner = IVLPPromptLearner(loaded.model, loaded.tokenize, 4, 4, "a photo of a", 2, 2)
    with torch.no_grad():
        torch.manual_seed(seed)
        for p in learner.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return loaded, learner


def _reference_state(loaded, learner, n_classes: int = 5):
    """A PromptSRC whole-model state dict (the released teachers' layout) for the given prompts."""
    state = {"prompt_learner.ctx": learner.ctx.detach().clone().half(),
             "prompt_learner.token_prefix": torch.zeros(n_classes, 1, 128),
             "prompt_learner.token_suffix": torch.zeros(n_classes, 72, 128),
             "prompt_learner.ZS_image_encoder.conv1.weight": torch.zeros(1),
             "image_encoder.VPT": learner.vision_ctx.detach().clone(),
             "image_encoder.transformer.resblocks.1.VPT_shallow": learner.vision_deep[0].detach().clone(),
             "text_encoder.transformer.resblocks.1.VPT_shallow": learner.text_deep[0].detach().clone()}
    for key, value in loaded.model.state_dict().items():
        if key.startswith("visual."):
            state["image_encoder." + key[len("visual."):]] = value.clone()
        elif key.startswith(("transformer.", "positional_embedding", "ln_final.", "text_projection")):
            state["text_encoder." + key] = value.clone()
        elif key == "logit_scale":
            state[key] = value.clone()
    return state


def _build(state, meta=None, **kw):
    loaded = load_clip("tiny-vit-wide")
    args = dict(ctx_init="a photo of a", input_size=32, input_mean=CLIP_MEAN, input_std=CLIP_STD)
    args.update(kw)
    return build_prompted_teacher(loaded, state, meta, **args)


def test_student_logit_shapes_and_gradients():
    student = _student(n_classes=7)
    x = torch.randn(3, 3, 32, 32)
    frozen = {k: v.clone() for k, v in student.image_encoder.state_dict().items()}
    logits = student(x, key="train")
    assert logits.shape == (3, 7)
    m = math.ceil(7 / 2)
    for rows, width in (((0, m), 4), ((m, 7), 3), ((0, 7), 7)):
        student.set_eval_rows(*rows)
        with torch.no_grad():
            assert student(x, key="eval").shape == (3, width)
    logits.logsumexp(-1).sum().backward()
    trainable = dict(student.prompt_learner.named_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    assert all(p.grad is None and not p.requires_grad for p in student.image_encoder.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in student.image_encoder.state_dict().items())
    # no text tower, and W is not part of any state dict
    assert not hasattr(student, "text_encoder") and "class_vectors" not in student.state_dict()
    assert student.class_vectors.dtype == torch.float32
    with pytest.raises(ValueError, match="projector"):
        student.set_class_vectors(torch.randn(7, 64))


def test_teacher_loads_ours_and_reference_layout_identically():
    loaded, learner = _teacher_learner()
    meta = {"depth_text": 2, "depth_vision": 2, "backbone": "tiny-vit-wide"}
    ours, parts, design = _build(learner.state_dict(), meta)
    assert (design.n_ctx_text, design.n_ctx_vision, design.depth_text, design.depth_vision) == (4, 4, 2, 2)
    assert not parts.encoder and not parts.unknown
    ref_state = _reference_state(loaded, learner)
    ref, ref_parts, ref_design = _build(ref_state)
    assert ref_design == design and ref_parts.num_classes == 5 and not ref_parts.unknown
    assert "token_prefix" in ref_parts.ignored and "ZS_image_encoder.conv1.weight" in ref_parts.ignored
    x = torch.randn(4, 3, 32, 32)
    w_ours, w_ref = ours.set_class_names(CLASSES), ref.set_class_names(CLASSES)
    assert torch.allclose(w_ours, w_ref, atol=1e-2)  # the reference stores ctx in fp16
    assert torch.allclose(w_ours.norm(dim=-1), torch.ones(len(CLASSES)), atol=1e-5)
    assert ours.logits(x, ours.logit_scale).shape == (4, len(CLASSES))
    ours.train()
    assert not ours.training and all(not p.requires_grad for p in ours.parameters())


def test_teacher_checkpoint_with_missing_prompt_is_refused():
    loaded, learner = _teacher_learner()
    state = _reference_state(loaded, learner)
    for key in ("prompt_learner.ctx", "image_encoder.VPT"):
        broken = {k: v for k, v in state.items() if k != key}
        with pytest.raises(KeyError, match="lacks the prompt tensor"):
            _build(broken)
    # a missing deep prompt: explicit depth (or our metadata) makes it an error instead of a shallower teacher
    broken = {k: v for k, v in state.items() if k != "text_encoder.transformer.resblocks.1.VPT_shallow"}
    with pytest.raises(KeyError, match="text_encoder.transformer.resblocks.1.VPT_shallow"):
        _build(broken, depth_text=2)
    ours = dict(learner.state_dict())
    del ours["vision_deep.0"]
    with pytest.raises(KeyError, match="image_encoder.transformer.resblocks.1.VPT_shallow"):
        _build(ours, {"depth_text": 2, "depth_vision": 2})
    # a frozen-encoder key missing from a whole-model checkpoint
    broken = {k: v for k, v in state.items() if k != "text_encoder.ln_final.weight"}
    with pytest.raises(KeyError, match="ln_final.weight"):
        _build(broken)
    # design mismatches name the setting
    with pytest.raises(ValueError, match="N_CTX_TEXT"):
        _build(state, n_ctx_text=2)
    with pytest.raises(ValueError, match="CTX_INIT"):
        _build(state, ctx_init="a photo")
    with pytest.raises(ValueError, match="wrong shape|TEACHER_BACKBONE"):
        build_prompted_teacher(load_clip("tiny-vit"), state, None, "a photo of a", 32, CLIP_MEAN, CLIP_STD)


def test_class_vectors_computed_once_equal_a_per_step_recomputation():
    """The reference recomputes W from the teacher every step; ours computes it once: same logits, same loss."""
    loaded, learner = _teacher_learner()
    teacher, _, _ = _build(learner.state_dict())
    calls = []
    hook = teacher.prompted.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    w = teacher.set_class_names(CLASSES)
    student = _student(n_classes=len(CLASSES))
    student.set_class_vectors(w)
    x = torch.randn(4, 3, 32, 32)
    for _ in range(3):
        loss = promptkd_loss(teacher.logits(x, teacher.logit_scale), student(x), 1.0, 1000.0)
        recomputed = encode_class_set(teacher.prompted, "all")  # what the reference does every step
        with torch.no_grad():
            feats = teacher.encode_image(x)
            ref_teacher = teacher.logit_scale * feats @ recomputed.t()
            ref_student = student.logit_scale * student.encode_image(x) @ recomputed.t()
            ref_loss = promptkd_loss(ref_teacher, ref_student, 1.0, 1000.0)
        assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    hook.remove()
    assert teacher.text_encoder_calls == 1 and len(calls) == 1 + 3  # once for W, then only the reference's copies


def test_distillation_kl_decreases_on_fixed_images():
    loaded, learner = _teacher_learner()
    teacher, _, _ = _build(learner.state_dict())
    w = teacher.set_class_names(CLASSES)
    student = _student(n_classes=len(CLASSES))
    student.set_class_vectors(w)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD(student.prompt_learner.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    student.train()
    losses = []
    for _ in range(30):
        loss = promptkd_loss(teacher.logits(x, teacher.logit_scale), student(x), 1.0, 10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


# ----------------------------------------------------------------------------------------------- files on disk
def test_teacher_checkpoint_file_resolution(tmp_path):
    with pytest.raises(FileNotFoundError, match="TEACHER_CKPT is empty"):
        resolve_teacher_checkpoint("")
    with pytest.raises(FileNotFoundError, match="model-best.pth.tar"):
        resolve_teacher_checkpoint(str(tmp_path))
    released = tmp_path / "EuroSAT" / "VLPromptLearner"
    released.mkdir(parents=True)
    (released / "model-best.pth.tar").write_bytes(b"x")
    assert resolve_teacher_checkpoint(str(tmp_path / "EuroSAT")) == str(released / "model-best.pth.tar")
    ours = tmp_path / "run" / "VLPromptLearner"
    ours.mkdir(parents=True)
    for epoch in (5, 20, 10):
        (ours / f"model.pth.tar-{epoch}").write_bytes(b"x")
    assert resolve_teacher_checkpoint(str(tmp_path / "run")) == str(ours / "model.pth.tar-20")
    assert resolve_teacher_checkpoint(str(ours / "model.pth.tar-5")) == str(ours / "model.pth.tar-5")


def test_class_vector_file_checks_class_list_and_checkpoint(tmp_path):
    path = str(tmp_path / "class_vectors.pt")
    w = torch.nn.functional.normalize(torch.randn(4, 96), dim=-1)
    save_class_vectors(path, w, ["a", "b", "sea_lion", "d"], template="a photo of a {}.", backbone="tiny-vit-wide",
                       checkpoint="x", checkpoint_sha256="abc")
    record = load_class_vectors(str(tmp_path), ["a", "b", "sea lion", "d"], "abc")
    assert torch.equal(record["class_vectors"], w) and record["template"] == "a photo of a {}."
    with pytest.raises(ValueError, match="do not match"):
        load_class_vectors(path, ["a", "b", "d", "sea lion"])
    with pytest.raises(ValueError, match="do not match"):
        load_class_vectors(path, ["a", "b", "sea lion"])
    with pytest.raises(ValueError, match="different|not from"):
        load_class_vectors(path, None, "other")
    assert not os.path.exists(path + ".tmp")


def test_split_teacher_state_counts_base_and_novel_buffers():
    parts = split_teacher_state({"prompt_learner.ctx": torch.zeros(4, 8),
                                 "prompt_learner.token_prefix": torch.zeros(3, 1, 8),
                                 "prompt_learner.token_prefix2": torch.zeros(2, 1, 8), "mystery": torch.zeros(1)})
    assert parts.num_classes == 5 and parts.unknown == ["mystery"] and set(parts.prompts) == {"ctx"}
