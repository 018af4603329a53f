"""CLIP loading, prompt learners and encoders on tiny random CLIPs (no Dassl, no downloads)."""
from __future__ import annotations

import types

import pytest
import torch

from trainers.core import clip_models
from trainers.core.clip_models import ClipLoadError, build_openai_clip, load_clip
from trainers.core.prompt_learners import (ClassPrompts, CoCoOpPromptLearner, CoOpPromptLearner, IVLPPromptLearner,
                                           MaPLePromptLearner, PromptedCLIP, VPTPromptLearner, load_learner_state,
                                           map_reference_keys)


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny-vit")


def test_tiny_clip_is_deterministic_and_leaves_global_rng(tiny):
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    again = load_clip("tiny-vit")
    after = torch.rand(1)
    assert torch.equal(before, after)
    for (k, a), (_, b) in zip(tiny.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_local_weights_file_goes_through_the_real_loader(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = load_clip("tiny-vit", weights=str(path))
    # build_model stores weights in fp16 (as CLIP ships them); our loader returns them as fp32
    ref = tiny.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.allclose(value, ref[key].half().float() if ref[key].dim() > 1 else ref[key], atol=1e-3), key
    assert loaded.source == str(path)


def test_missing_weights_and_unknown_names_raise_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ClipLoadError, match="does not exist"):
        load_clip("ViT-B/16", weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ClipLoadError, match="Unknown OpenAI CLIP name 'NoSuchNet'"):
        load_clip("NoSuchNet", backend="openai")

    api, _ = clip_models.clip_package()

    def offline(url, root):
        raise OSError("Name or service not known")

    monkeypatch.setattr(api, "_download", offline)
    with pytest.raises(ClipLoadError, match="MODEL.CLIP.DOWNLOAD_ROOT") as err:
        load_clip("ViT-B/16", download_root=str(tmp_path))
    assert str(tmp_path / "ViT-B-16.pt") in str(err.value)


def test_open_clip_missing_weights_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipLoadError, match="TEACHER_PRETRAINED"):
        load_clip("ViT-B-32", backend="open_clip", pretrained="openai")


def test_build_model_with_design_details_signature(tiny, monkeypatch):
    """MaPLe/PromptSRC's vendored clip requires `design_details`; ours passes a plain design."""
    api, real = clip_models.clip_package()
    seen = {}

    def build_model(state_dict, design_details):
        seen.update(design_details)
        return real.build_model(state_dict)

    fake = types.SimpleNamespace(build_model=build_model, CLIP=real.CLIP)
    monkeypatch.setattr(clip_models, "clip_package", lambda: (api, fake))
    model = build_openai_clip(tiny.model.state_dict())
    assert seen["trainer"] == "CoOp" and seen["vision_depth"] == 0
    assert model.visual.conv1.weight.dtype == torch.float32


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch,learner,expected", [
    ("vit_b32", lambda m, t: CoOpPromptLearner(m, t, 4, "a photo of a"), 2048),
    ("vit_b32", lambda m, t: CoCoOpPromptLearner(m, t, 4, "a photo of a"), 35360),
    ("rn50", lambda m, t: CoCoOpPromptLearner(m, t, 4, "a photo of a"), 100928),
    ("vit_b32", lambda m, t: VPTPromptLearner(m, 8, 12), 73728),
    ("vit_b32", lambda m, t: MaPLePromptLearner(m, t, 2, "a photo of a", 9), 3555072),
    ("vit_b32", lambda m, t: IVLPPromptLearner(m, t, 4, 4, "a photo of a", 9, 9), 46080),
    ("vit_b32", lambda m, t: IVLPPromptLearner(m, t, 4, 4, "a photo of a", 3, 3), 15360),
])
def test_learnable_counts_with_real_widths(arch, learner, expected):
    """Shapes of the real OpenAI ViT-B/32 and RN50 (random weights): the counts of the KDPL spec."""
    _, model_mod = clip_models.clip_package()
    dims = {"vit_b32": (512, 224, 12, 768, 32), "rn50": (1024, 224, (3, 4, 6, 3), 64, None)}[arch]
    model = model_mod.CLIP(dims[0], dims[1], dims[2], dims[3], dims[4], 77, 49408, 512, 8, 12)
    assert _count(learner(model, clip_models.openai_tokenize)) == expected


LEARNERS = {
    "coop": lambda m, t: CoOpPromptLearner(m, t, 4, "a photo of a"),
    "cocoop": lambda m, t: CoCoOpPromptLearner(m, t, 4, "a photo of a"),
    "vpt": lambda m, t: VPTPromptLearner(m, 4, 2),
    "maple": lambda m, t: MaPLePromptLearner(m, t, 2, "a photo of a", 2),
    "ivlp": lambda m, t: IVLPPromptLearner(m, t, 4, 4, "a photo of a", 2, 2),
}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_gradients_reach_only_the_prompts(tiny, name):
    student = PromptedCLIP(tiny, LEARNERS[name](tiny.model, tiny.tokenize))
    student.register_class_set("eval", ["cat", "dog", "sea_lion"])
    logits = student(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is None for p in student.clip.parameters())
    grads = [p.grad for p in student.prompt_learner.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert set(student.prompt_learner.state_dict()) == {n for n, _ in student.prompt_learner.named_parameters()}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_gather_first_equals_encode_all_then_index(tiny, name):
    student = PromptedCLIP(tiny, LEARNERS[name](tiny.model, tiny.tokenize))
    student.register_class_set("train", [f"class {i}" for i in range(7)])
    x = torch.randn(3, 3, 32, 32)
    idx = torch.tensor([5, 1, 3])
    with torch.no_grad():
        assert torch.allclose(student(x, key="train", idx=idx), student(x, key="train")[:, idx], atol=1e-4)


def test_class_prompts_splice_context_and_keep_eot(tiny):
    prompts = ClassPrompts(["sea_lion"], "X X X X", tiny.tokenize)
    assert prompts.classnames == ["sea lion"]
    eot = int(prompts.eot_index[0])
    assert eot == int(tiny.tokenize(["X X X X sea lion."])[0].argmax())
    with pytest.raises(ValueError, match="empty"):
        ClassPrompts([], "X", tiny.tokenize)


def test_visual_prompts_change_only_with_prompts(tiny):
    student = PromptedCLIP(tiny, VPTPromptLearner(tiny.model, 4, 2))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = torch.nn.functional.normalize(student.image_encoder(x), dim=-1)
        prompted = student.encode_image(x)
        assert not torch.allclose(plain, prompted)
        # prompts replaced before block 1 make the input prompt irrelevant to later blocks except via block 0
        assert torch.allclose(plain, torch.nn.functional.normalize(tiny.model.encode_image(x), dim=-1), atol=1e-5)


def test_deep_visual_prompt_replaces_last_tokens(tiny):
    """Sequence length is 1 + patches + n_ctx at every block; deep prompts replace the last n_ctx tokens."""
    seen = []
    student = PromptedCLIP(tiny, VPTPromptLearner(tiny.model, 3, 2))
    blocks = student.clip.visual.transformer.resblocks
    # the encoder drives stock blocks batch-first (N, L, D); each block's first op is ln_1 on its input
    hooks = [b.ln_1.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone())) for b in blocks]
    with torch.no_grad():
        student.encode_image(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    patches = (32 // 8) ** 2
    assert [s.shape[1] for s in seen] == [1 + patches + 3] * 2
    deep = student.prompt_learner.vision_deep[0]
    assert torch.allclose(seen[1][0, -3:], deep)


def test_reference_keys_map_and_missing_key_raises(tiny):
    learner = IVLPPromptLearner(tiny.model, tiny.tokenize, 4, 4, "a photo of a", 3, 3)
    reference = {
        "prompt_learner.ctx": torch.ones(4, 64),
        "prompt_learner.token_prefix": torch.zeros(2, 1, 64),
        "image_encoder.VPT": torch.ones(4, 64) * 2,
        "image_encoder.transformer.resblocks.1.VPT_shallow": torch.ones(4, 64) * 3,
        "image_encoder.transformer.resblocks.2.VPT_shallow": torch.ones(4, 64) * 4,
        "text_encoder.transformer.resblocks.1.VPT_shallow": torch.ones(4, 64) * 5,
        "text_encoder.transformer.resblocks.2.VPT_shallow": torch.ones(4, 64) * 6,
        "image_encoder.conv1.weight": torch.zeros(1),
    }
    mapped = map_reference_keys(reference)
    assert "vision_deep.0" in mapped and "text_deep.1" in mapped
    ignored = load_learner_state(learner, reference)
    assert float(learner.vision_deep[1][0, 0]) == 4 and float(learner.text_deep[0][0, 0]) == 5
    assert "token_prefix" in ignored and "image_encoder.conv1.weight" in ignored
    del reference["image_encoder.transformer.resblocks.2.VPT_shallow"]
    with pytest.raises(KeyError, match="vision_deep.1"):
        load_learner_state(learner, reference)
    bad = {k: v for k, v in learner.state_dict().items()}
    bad["ctx"] = torch.zeros(2, 64)
    with pytest.raises(ValueError, match="wrong shape"):
        load_learner_state(learner, bad)


def test_registered_backend_builds_teachers(tiny):
    from trainers.core.clip_models import CLIP_BACKENDS, register_clip_backend

    calls = []

    def builder(name, pretrained, download_root, weights):
        calls.append((name, pretrained))
        return tiny

    register_clip_backend("my-lab", builder)
    try:
        assert load_clip("lab-model", backend="my-lab", pretrained="v2") is tiny
        assert calls == [("lab-model", "v2")]
    finally:
        CLIP_BACKENDS.pop("my-lab")
    with pytest.raises(ClipLoadError, match="register_clip_backend"):
        load_clip("lab-model", backend="my-lab")


# ------------------------------------------------------------------------------------------------ error messages
def _listed(message: str) -> list:
    """The names inside the first [...] of an error message."""
    import ast

    return ast.literal_eval(message[message.index("["):message.index("]") + 1])


def test_unknown_name_with_openai_backend_lists_only_what_that_backend_accepts():
    api, _ = clip_models.clip_package()
    with pytest.raises(ClipLoadError) as err:
        load_clip("random:ViT-L/14", backend="openai")
    message = str(err.value)
    assert _listed(message) == sorted(api._MODELS)
    assert "'random:ViT-L/14'" not in message.split("Its names:")[1]  # not offered as valid for this backend
    assert "backend tiny or auto" in message
    assert clip_models.infer_backend("random:ViT-L/14") == "tiny"  # the hint is true: auto builds it


def test_unknown_student_name_lists_the_student_names():
    api, _ = clip_models.clip_package()
    with pytest.raises(ClipLoadError) as err:
        clip_models.load_student("ViT-B-16-quickgelu")  # an open_clip name: no student
    message = str(err.value)
    assert "Unknown student backbone 'ViT-B-16-quickgelu' (MODEL.BACKBONE.NAME)" in message
    listed = _listed(message)
    assert set(api._MODELS) | {"tiny-vit", "tiny-rn", "random:ViT-B/16"} <= set(listed)
    assert "tiny-open-clip" not in listed  # open_clip-structure models cannot take deep prompts
    assert clip_models.load_student("tiny-vit").backend == "openai"


def test_unknown_open_clip_name_points_at_open_clip_list():
    with pytest.raises(ClipLoadError, match="Unknown open_clip model 'NoSuchNet'; see open_clip.list_models"):
        load_clip("NoSuchNet", backend="open_clip")


def test_importing_the_loader_emits_no_pkg_resources_warning():
    """clip.clip imports pkg_resources, which warns; our import of clip silences exactly that."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    from trainers.core.clip_models import clip_package; clip_package()\n"
            "print([str(w.message) for w in caught if 'pkg_resources' in str(w.message)])")
    root = str(clip_models.__file__).rsplit("/trainers/", 1)[0]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
    assert "pkg_resources" not in proc.stderr, proc.stderr
