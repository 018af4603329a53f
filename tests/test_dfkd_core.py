"""DFKD core (no Dassl): prompt diversification, image parameterisations, VQGAN loading, cutouts, resumable sets,
and a student that learns from synthetic images alone.

Everything runs on the tiny random CLIPs ``tiny-vit`` / ``tiny-vit-wide`` (32 px) and a tiny random VQGAN decoder in
taming's format.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch

from trainers.core.clip_models import load_clip
from trainers.core.diversify import (DiversifyConfig, PromptEncoder, PromptTargets, build_prompt_targets,
                                     contrastive_prompt_loss, filter_styles, guard_accepts, image_space_loss,
                                     init_style_words,
                                     learn_style_words, mix_features, mix_targets, pairwise_stats, random_targets,
                                     sample_mix, StyleWords)
from trainers.core.generators import (VQGAN_F16_16384, FourierParam, VQGANCheckpointError, VQGANDecoder, VQGANParam,
                                      build_image_param, clamp_with_grad, load_vqgan_decoder,
                                      straight_through_quantize)
from trainers.core.probe_images import ProbeImages
from trainers.core.synthesis import (CutoutConfig, SynthesisConfig, Synthesizer, SyntheticSetError, make_cutouts,
                                     read_synthetic_set, synthesize_set)

NAMES = ["dog", "guitar", "house"]  # distinct enough under the random tiny CLIP for a class-consistency check
TINY_VQGAN = {"embed_dim": 8, "n_embed": 32,
              "ddconfig": {"double_z": False, "z_channels": 8, "resolution": 32, "in_channels": 3, "out_ch": 3,
                           "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                           "dropout": 0.0}}
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-vit")


@pytest.fixture(scope="module")
def encoder(clip):
    return PromptEncoder(clip.model, clip.tokenize)


@pytest.fixture(scope="module")
def heads(encoder):
    return encoder.class_features(NAMES, "a photo of a {}.")


@pytest.fixture(scope="module")
def decoder():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = VQGANDecoder(TINY_VQGAN)
    return model.eval().requires_grad_(False)


def synthesizer(clip, heads, decoder=None, **kw) -> Synthesizer:
    cut = CutoutConfig(**kw.pop("cut", {"n": 4}))
    cfg = SynthesisConfig(size=32, cutouts=cut, **kw)
    pre = clip.preprocess
    return Synthesizer(clip.model, pre.size, pre.mean, pre.std, heads, cfg, CPU, decoder)


# ------------------------------------------------------------------------------------------------ prompt modes
def test_contrastive_spreads_prompts_and_keeps_their_class(encoder, heads):
    """§7.1: nearly identical initial words; L_div lowers the mean pairwise cosine and raises the minimum distance,
    while the class anchor keeps every t_{p,c} classified as c."""
    cfg = DiversifyConfig(n_prompts=6, con_steps=100, con_lr=2e-3, style_template="a [S*] style of a {}.")
    slots = encoder.slot_prompts(cfg.style_template, NAMES)
    init = init_style_words(encoder, ["watercolor"], 6, 1, std=1e-3, seed=0)  # the same word six times
    with torch.no_grad():
        before = StyleWords(init).features(encoder, slots)
    words, history = learn_style_words(encoder, slots, heads, init, cfg)
    with torch.no_grad():
        after = StyleWords(words).features(encoder, slots)
    cos0, dist0 = pairwise_stats(before)
    cos1, dist1 = pairwise_stats(after)
    assert cos1 < cos0 - 0.05 and dist1 > dist0
    assert history[-1]["div"] < history[0]["div"]
    pred = (after.reshape(-1, after.shape[-1]) @ heads.t()).argmax(-1).view(6, len(NAMES))
    assert (pred == torch.arange(len(NAMES))).all()


def test_contrastive_loss_forms(heads):
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(4, 3, heads.shape[1]), dim=-1)
    loss, terms = contrastive_prompt_loss(feats, heads, 0.1, 0.0)
    manual = torch.stack([torch.logsumexp((feats[:, c] @ feats[:, c].t() / 0.1)
                                          .masked_fill(torch.eye(4, dtype=torch.bool), float("-inf")), 1).mean()
                          for c in range(3)]).mean()
    assert torch.allclose(loss, manual) and torch.allclose(terms["div"], manual)
    bank = torch.nn.functional.normalize(torch.randn(2, 3, heads.shape[1]), dim=-1)
    assert contrastive_prompt_loss(feats, heads, 0.1, 0.0, bank=bank)[0] > loss  # more negatives, more repulsion


def _cross_class_by_hand(feats, heads, tau, lam, scale, bank=None) -> tuple:
    """CON_POSITIVES cross_class written out term by term (float64): word p under class c is pulled towards the same
    word p under class c+1 (mod K) and pushed from the other words there and from the bank's words under c."""
    f, w = feats.double(), heads.double()
    p_n, k_n = f.shape[0], f.shape[1]
    div = 0.0
    for c in range(k_n):
        for p in range(p_n):
            sims = [float(f[p, c] @ f[q, (c + 1) % k_n]) / tau for q in range(p_n)]
            if bank is not None:
                sims += [float(f[p, c] @ bank[m, c].double()) / tau for m in range(bank.shape[0])]
            div += -sims[p] + float(torch.logsumexp(torch.tensor(sims, dtype=torch.float64), 0))
    div /= k_n * p_n
    cls = 0.0
    for p in range(p_n):
        for c in range(k_n):
            logits = torch.tensor([scale * float(f[p, c] @ w[j]) for j in range(k_n)], dtype=torch.float64)
            cls += -float(logits[c]) + float(torch.logsumexp(logits, 0))
    cls /= p_n * k_n
    return div + lam * cls, div, cls


@pytest.mark.parametrize("with_bank", [False, True])
def test_contrastive_cross_class_value_matches_the_formula(heads, with_bank):
    gen = torch.Generator().manual_seed(1)
    feats = torch.nn.functional.normalize(torch.randn(4, 3, heads.shape[1], generator=gen), dim=-1)
    bank = torch.nn.functional.normalize(torch.randn(2, 3, heads.shape[1], generator=gen), dim=-1) if with_bank \
        else None
    loss, terms = contrastive_prompt_loss(feats, heads, 0.2, 0.5, scale=10.0, positives="cross_class", bank=bank)
    total, div, cls = _cross_class_by_hand(feats, heads, 0.2, 0.5, 10.0, bank)
    assert float(loss) == pytest.approx(total, rel=1e-5)
    assert float(terms["div"]) == pytest.approx(div, rel=1e-5)
    assert float(terms["cls"]) == pytest.approx(cls, rel=1e-5)
    # the positive matters: swapping which word sits where under the next class changes the value
    shuffled = feats.clone()
    shuffled[:, 1] = feats[[1, 0, 2, 3], 1]
    assert float(contrastive_prompt_loss(shuffled, heads, 0.2, 0.5, 10.0, "cross_class", bank)[1]["div"]) \
        == pytest.approx(_cross_class_by_hand(shuffled, heads, 0.2, 0.5, 10.0, bank)[1], rel=1e-5)
    assert abs(_cross_class_by_hand(shuffled, heads, 0.2, 0.5, 10.0, bank)[1] - div) > 1e-3
    with pytest.raises(ValueError, match="at least two classes"):
        contrastive_prompt_loss(feats[:, :1], heads[:1], 0.2, 0.5, positives="cross_class")


def test_contrastive_targets_round_robin(encoder):
    cfg = DiversifyConfig(n_prompts=3, con_steps=2, con_rounds=2)
    t = build_prompt_targets("contrastive", encoder, NAMES[:2], 5, cfg, seed=0)
    assert t.prompt_ids == [0, 1, 2, 0, 1] * 2 and t.labels == [0] * 5 + [1] * 5
    assert t.extra["words"].shape == (3, 1, encoder.width)
    assert torch.equal(t.features[0], t.features[3]) and not torch.equal(t.features[0], t.features[1])


def test_image_space_loss_value_matches_the_formula():
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=-1)  # P=4 prompts, K=3 classes
    images = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    prompts, classes = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([0, 1, 2, 0, 2])
    expected = torch.stack([-torch.log_softmax(torch.stack([images[i] @ feats[q, classes[i]] for q in range(4)]) / 0.1,
                                               dim=0)[prompts[i]] for i in range(5)]).mean()
    assert torch.allclose(image_space_loss(feats, images, prompts, classes, 0.1), expected, atol=1e-6)
    # an image that sits on its own prompt's feature has a lower loss than one that sits on another prompt's
    own = image_space_loss(feats, feats[prompts, classes], prompts, classes, 0.1)
    other = image_space_loss(feats, feats[(prompts + 1) % 4, classes], prompts, classes, 0.1)
    assert own < other


def test_con_joint_alternates_latent_steps_on_persistent_probes_with_prompt_steps(clip, encoder, heads):
    """CON_JOINT: each round continues the same probe latents towards the current prompts, then prompt steps lower
    the image-space term; the words differ from the text-only ones, and the targets carry the joint history."""
    synth = synthesizer(clip, heads, generator="fourier", lr=0.05)
    probe = ProbeImages(synth, seeds=[101, 102, 103, 104], iters=3, batch=3)  # chunks of 3 and 1 images
    latents, targets_seen = [], []
    real_run = synth.run

    def watching_run(targets, labels, seeds, iters=None, gen=None):
        assert len(seeds) == len(targets) <= 3 and gen is not None
        result = real_run(targets, labels, seeds, iters, gen=gen)
        if len(seeds) == 3:
            targets_seen.append(targets.clone())
            latents.append(gen.latent().detach().clone())
        return result

    synth.run = watching_run
    base = dict(n_prompts=4, con_steps=5, style_template="a [S*] style of a {}.")
    cfg = DiversifyConfig(**base, con_joint=True, con_joint_rounds=3, con_joint_steps=8, con_joint_lambda=5.0)
    joint = build_prompt_targets("contrastive", encoder, NAMES, 4, cfg, seed=0, probe=probe)
    text_only = build_prompt_targets("contrastive", encoder, NAMES, 4, DiversifyConfig(**base), seed=0)
    assert probe.calls == 3 and len(latents) == 3
    assert all(not torch.equal(a, b) for a, b in zip(latents, latents[1:]))  # the same latents, moved on each round
    assert len(probe.gens) == 2 and torch.equal(probe.gens[0].latent().detach(), latents[-1])
    assert not torch.equal(targets_seen[0], targets_seen[1])  # the probes chase the prompts as they move
    history = joint.extra["history"]
    assert len(history) == 5 + 3 * 8 and all("img" in h for h in history[5:]) and "img" not in history[0]
    for r in range(3):  # within each round the prompt steps lower the image-space term
        round_hist = history[5 + 8 * r: 5 + 8 * (r + 1)]
        assert round_hist[-1]["img"] < round_hist[0]["img"]
    assert not torch.allclose(joint.extra["words"], text_only.extra["words"])
    assert joint.prompt_ids == text_only.prompt_ids and joint.labels == text_only.labels
    assert torch.allclose(joint.features.norm(dim=-1), torch.ones(len(joint)), atol=1e-5)
    with pytest.raises(ValueError, match="CON_JOINT .*probe"):
        build_prompt_targets("contrastive", encoder, NAMES, 4, cfg, seed=0)
    with pytest.raises(ValueError, match="3 probe targets for 4 probe images"):
        probe(torch.zeros(3, heads.shape[1]), [0, 1, 2])


def test_con_joint_changes_the_set_key_only_when_on():
    off = DiversifyConfig().key("contrastive")
    assert "joint" not in off  # sets built before the option existed keep their key
    on = DiversifyConfig(con_joint=True).key("contrastive")
    assert on["joint"] == {"rounds": 4, "iters": 25, "steps": 50, "lambda": 1.0}
    assert DiversifyConfig(con_joint=True, con_joint_lambda=2.0).key("contrastive") != on
    assert {k: v for k, v in on.items() if k != "joint"} == off


@pytest.mark.parametrize("space", ["feature", "token"])
def test_mix_one_hot_is_the_pure_style_prompt_exactly(encoder, space):
    cfg = DiversifyConfig(style_dict=("sketch", "oil painting", "pixel art"), mix_space=space)
    n = len(NAMES)
    idx = np.array([[1, 0]] * n)  # "oil painting" (multi-token) with weight 1, "sketch" with weight 0
    one_hot = mix_targets(encoder, NAMES, 1, cfg, 0, idx, np.array([[1.0, 0.0]] * n, dtype=np.float32))
    if space == "feature":
        pure = encoder.encode([f"a oil painting of a {c}." for c in NAMES])
    else:
        slots = encoder.slot_prompts(cfg.style_template, NAMES)
        word = encoder.word_embedding("oil painting").expand(n, 1, -1)
        with torch.no_grad():
            pure = encoder.encode_slots(slots, word, torch.arange(n))
    assert torch.equal(one_hot.features, pure.float())


def test_mix_convex_hull_and_seeding(encoder):
    comps = torch.nn.functional.normalize(torch.randn(5, 2, 16), dim=-1)
    lam = torch.tensor([[0.3, 0.7]] * 5)
    normed, raw = mix_features(comps, lam)
    assert torch.allclose(raw, 0.3 * comps[:, 0] + 0.7 * comps[:, 1])
    assert torch.allclose(normed.norm(dim=-1), torch.ones(5))
    idx, w = sample_mix(50, 6, 2, 1.0, seed=3)
    assert (idx[:, 0] != idx[:, 1]).all() and np.allclose(w.sum(1), 1) and (w >= 0).all()
    cfg = DiversifyConfig(style_dict=("drawing", "mosaic", "origami", "tattoo"))
    a, b = (mix_targets(encoder, NAMES, 2, cfg, seed=s) for s in (1, 1))
    c = mix_targets(encoder, NAMES, 2, cfg, seed=2)
    assert torch.equal(a.features, b.features) and a.texts == b.texts
    assert not torch.equal(a.features, c.features)


def test_style_dictionary_never_names_a_domain():
    kept, dropped = filter_styles(["photo", "oil painting", "mosaic", "Sketch"], ["art_painting", "photo", "sketch"])
    assert kept == ["mosaic"] and set(dropped) == {"photo", "oil painting", "Sketch"}


def test_random_prompt_matches_table_statistics(encoder):
    cfg = DiversifyConfig(rand_guard=False)
    t = random_targets(encoder, NAMES[:2], 300, cfg, seed=0,
                       class_features=encoder.class_features(NAMES[:2], cfg.template))
    words = t.extra["words"][:, 0]
    mean, std = encoder.embedding_stats()
    z = (words.mean(0) - mean) / std
    assert z.abs().mean() < 0.1 and abs(float((words.std(0) / std).mean()) - 1) < 0.05
    assert len({tuple(w[:4].tolist()) for w in words}) == len(words)  # fresh draw per image
    iso = random_targets(encoder, NAMES[:2], 300, DiversifyConfig(rand_guard=False, rand_stats="isotropic"), 0,
                         encoder.class_features(NAMES[:2], cfg.template))
    assert abs(float(iso.extra["words"].std()) - 0.02) < 0.002


def test_splice_keeps_the_eot_position(encoder):
    slots = encoder.slot_prompts("a [S*] style of a {}.", NAMES, n_tokens=1)
    plain = encoder.tokenize([f"a sketch style of a {c}." for c in NAMES])
    assert torch.equal(slots.eot_index.cpu(), plain.argmax(-1))
    # splicing the real word's embedding reproduces the plain prompt's features
    word = encoder.word_embedding("sketch").expand(len(NAMES), 1, -1)
    with torch.no_grad():
        spliced = encoder.encode_slots(slots, word, torch.arange(len(NAMES)))
    assert torch.allclose(spliced, encoder.encode([f"a sketch style of a {c}." for c in NAMES]), atol=1e-5)


def test_slot_prompts_run_cut_after_their_last_eot_with_the_same_features_and_gradients(clip):
    """Pseudo-word prompts (Contrastive-Prompt's learned words) run cut after the set's last EOT: the features and the
    words' gradients equal the full 77-token encode."""
    full, cut = PromptEncoder(clip.model, clip.tokenize, truncate=False), PromptEncoder(clip.model, clip.tokenize)
    slots = cut.slot_prompts("a [S*] style of a {}.", NAMES, n_tokens=2)
    lengths = []
    hook = cut.text_encoder.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    grads, feats = [], []
    for encoder in (full, cut):
        words = torch.randn(len(NAMES), 2, encoder.width, generator=torch.Generator().manual_seed(0),
                            requires_grad=True)
        out = encoder.encode_slots(slots, words, torch.arange(len(NAMES)))
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        feats.append(out.detach())
        grads.append(words.grad)
    hook.remove()
    assert lengths == [slots.max_eot + 1] and slots.max_eot + 1 < 77
    assert torch.allclose(feats[1], feats[0], atol=1e-5) and torch.allclose(grads[1], grads[0], atol=1e-5)
    assert grads[0].abs().sum() > 0


def test_random_guard_rejects_misclassified_prompts(encoder, heads):
    feats = heads[[0, 1, 2]].clone()
    assert guard_accepts(feats, torch.tensor([0, 1, 2]), heads).all()
    assert not guard_accepts(feats, torch.tensor([1, 1, 2]), heads)[0]
    t = random_targets(encoder, NAMES, 4, DiversifyConfig(rand_max_tries=50), seed=0, class_features=heads)
    ok = guard_accepts(t.features, torch.tensor(t.labels), heads)
    assert int((~ok).sum()) == t.extra["guard_failed"]
    assert int(t.extra["tries"].max()) > 1  # something was resampled


def test_empty_class_list_is_a_clear_error(encoder, tmp_path):
    with pytest.raises(ValueError, match="class-name list is empty"):
        build_prompt_targets("handcrafted", encoder, [], 2, DiversifyConfig(), 0)
    with pytest.raises(SyntheticSetError, match="class-name list is empty"):
        synthesize_set(str(tmp_path / "s"), {}, [], 2, lambda: None, lambda: None, 4, 0)


# ------------------------------------------------------------------------------------------------- synthesis
@pytest.mark.parametrize("kind,augment", [("pixel", True), ("fourier", True), ("vqgan", False)])
def test_synthesis_raises_target_similarity_and_teacher_probability(clip, encoder, heads, decoder, kind, augment):
    targets = build_prompt_targets("handcrafted", encoder, NAMES, 2, DiversifyConfig(), 0)
    synth = synthesizer(clip, heads, decoder, generator=kind, iters=30,
                        cut={"n": 4, "augment": augment, "noise": 0.1 if augment else 0.0})
    out = synth.run(targets.features, torch.tensor(targets.labels), list(range(6)))
    assert (out.clip_score > out.init_clip_score).all()
    assert out.teacher_prob.mean() > out.init_teacher_prob.mean()
    assert out.images.min() >= 0 and out.images.max() <= 1 and out.images.shape == (6, 3, 32, 32)


def test_same_seed_same_images(clip, encoder, heads):
    targets = build_prompt_targets("handcrafted", encoder, NAMES, 1, DiversifyConfig(), 0)
    labels = torch.tensor(targets.labels)
    synth = synthesizer(clip, heads, generator="fourier", iters=3)
    a, b = (synth.run(targets.features, labels, [1, 2, 3]) for _ in range(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.images, synth.run(targets.features, labels, [4, 5, 6]).images)


def _target_distance(clip, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Half the squared angle between CLIP's embedding of each 32 px image and its target (the spherical distance
    2 arcsin(|u - t| / 2)^2 written through the angle), computed here without the synthesiser."""
    pre = clip.preprocess
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = torch.nn.functional.normalize(clip.model.encode_image((images - mean) / std).float(), dim=-1)
    cos = (feats * torch.nn.functional.normalize(targets.float(), dim=-1)).sum(-1).clamp(-1, 1)
    return torch.arccos(cos).pow(2) / 2


def test_keep_best_keeps_the_iterate_with_the_lowest_loss(clip, encoder, heads):
    """SYN_KEEP best: of the iterates seen during optimisation (after 0..iters-1 steps), the kept image is the one
    whose loss is lowest. Un-augmented single views make that loss a plain function of the image, and a strong pull
    back to the init (SYN_INIT_WEIGHT) makes it go down then up, so the best iterate is neither the first nor the
    last one."""
    targets = build_prompt_targets("handcrafted", encoder, NAMES, 1, DiversifyConfig(), 0)
    labels, seeds, iters = torch.tensor(targets.labels), [1, 2, 3], 8
    recipe = dict(generator="pixel", lr=0.5, init_weight=10.0, cut={"n": 1, "augment": False, "noise": 0.0})
    final = synthesizer(clip, heads, **recipe, iters=iters)
    candidates = torch.stack([final.run(targets.features, labels, seeds, iters=k).images for k in range(iters)])
    losses = torch.stack([_target_distance(clip, c, targets.features) for c in candidates])  # (iters, B)
    best_k = losses.argmin(0)
    assert ((best_k > 0) & (best_k < iters - 1)).all(), losses  # the check below tells best from first and last
    best = synthesizer(clip, heads, **recipe, iters=iters, keep="best").run(targets.features, labels, seeds)
    expected = candidates[best_k, torch.arange(len(seeds))]
    assert torch.equal(best.images, expected)
    assert torch.allclose(best.loss, losses.min(0).values, atol=5e-3)  # the 8-bit candidates vs float iterates
    last = final.run(targets.features, labels, seeds).images
    assert not torch.equal(best.images, last)


class PatchStudent(torch.nn.Module):
    """A tiny student (4x4 patch embedding + linear head) standing in for the torchvision student at 32 px."""

    def __init__(self, num_classes: int, width: int = 32, patch: int = 4, size: int = 32):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, width, patch, stride=patch)
        self.head = torch.nn.Linear(width * (size // patch) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.embed(x)).flatten(1))


def test_dfkd_student_learns_to_agree_with_the_teacher_on_held_out_synthetic_images():
    """The DFKD pipeline without Dassl: hand-crafted prompts -> pixel synthesis against a tiny CLIP teacher -> a
    student trained on those images alone with the DFKD loss (T^2 KL at KD_T = 4 on the teacher's 100 x cosine
    logits; KD_CE_WEIGHT 0, so no label is used). Its top-1 agreement with the teacher on held-out synthetic images
    (other seeds, never trained on) rises from chance to well above the teacher's majority-class share."""
    from trainers.core.losses import kd_loss
    from trainers.core.teacher import FrozenTeacher

    names, per_class = ["apple", "bicycle", "castle"], 6  # tiny-vit-wide synthesises each of these recognisably
    teacher_clip = load_clip("tiny-vit-wide")
    pre = teacher_clip.preprocess
    prompts = PromptEncoder(teacher_clip.model, teacher_clip.tokenize)
    head = prompts.class_features(names, "a photo of a {}.")
    targets = build_prompt_targets("handcrafted", prompts, names, per_class, DiversifyConfig(), 0)
    n = len(targets)
    cfg = SynthesisConfig(generator="pixel", size=32, iters=30, lr=0.5,
                          cutouts=CutoutConfig(n=1, augment=False, noise=0.0))
    synth = Synthesizer(teacher_clip.model, pre.size, pre.mean, pre.std, head, cfg, CPU)
    images = synth.run(torch.cat([targets.features] * 2), torch.tensor(targets.labels * 2), list(range(2 * n))).images
    train, held = images[:n], images[n:]  # same prompts, other seeds

    teacher = FrozenTeacher(teacher_clip, pre.size, pre.mean, pre.std)
    teacher.class_features = head
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    train_x, held_x = (train - mean) / std, (held - mean) / std
    teacher_train, teacher_held = teacher.logits(train_x, 100.0), teacher.logits(held_x, 100.0).argmax(-1)
    counts = torch.bincount(teacher_held, minlength=len(names))
    assert (counts > 0).all(), counts  # every class occurs: agreement cannot come from one constant answer
    majority = float(counts.max()) / n

    with torch.random.fork_rng():
        torch.manual_seed(0)
        student = PatchStudent(len(names))

    def agreement() -> float:
        with torch.no_grad():
            return float((student(held_x).argmax(-1) == teacher_held).float().mean())

    before = agreement()
    optim = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(40):
        loss = kd_loss(teacher_train, student(train_x), 4.0)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    after = agreement()
    assert after >= before + 0.3 and after >= majority + 0.2, (before, after, majority)


@pytest.mark.parametrize("kind", ["pixel", "fourier", "vqgan"])
def test_batching_equals_one_by_one(clip, encoder, heads, decoder, kind):
    targets = build_prompt_targets("handcrafted", encoder, NAMES, 1, DiversifyConfig(), 0)
    synth = synthesizer(clip, heads, decoder, generator=kind, iters=4, cut={"n": 2, "augment": False, "noise": 0.0})
    labels = torch.tensor(targets.labels)
    batched = synth.run(targets.features, labels, [5, 6, 7]).images
    single = torch.cat([synth.run(targets.features[i:i + 1], labels[i:i + 1], [5 + i]).images for i in range(3)])
    assert torch.allclose(batched, single, atol=1.01 / 255)  # the decoder's batched convs may flip one 8-bit level


def test_straight_through_quantizer_and_codebook_box(decoder):
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    q = straight_through_quantize(z, decoder.codebook)
    assert all(bool((decoder.codebook == v).all(-1).any()) for v in q.permute(0, 2, 3, 1).reshape(-1, 8))
    (q * torch.randn_like(q)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    param = VQGANParam(decoder, [1, 2], 32)
    opt = torch.optim.Adam([param.z], lr=1.0)
    for _ in range(3):
        img = param()
        assert img.min() >= 0 and img.max() <= 1
        opt.zero_grad()
        (-img.mean()).backward()
        assert param.z.grad.abs().sum() > 0
        opt.step()
        param.post_step()
    lo, hi = decoder.codebook_box()
    assert (param.z >= lo).all() and (param.z <= hi).all()


def test_clamp_with_grad_passes_only_inward_gradients():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    clamp_with_grad(x).backward(torch.tensor([-1.0, 1.0, -1.0]))  # descent moves x by -grad
    assert x.grad.tolist() == [-1.0, 1.0, 0.0]  # 1.5 would move further out: blocked
    x.grad = None
    clamp_with_grad(x).backward(torch.tensor([1.0, 1.0, 1.0]))
    assert x.grad.tolist() == [0.0, 1.0, 1.0]


def test_fourier_zero_spectrum_is_grey_and_params_are_seeded():
    param = FourierParam([1, 2], 32)
    with torch.no_grad():
        param.spectrum.zero_()
    assert torch.allclose(param(), torch.full((2, 3, 32, 32), 0.5))
    a, b = build_image_param("pixel", [3, 4], 16), build_image_param("pixel", [4], 16)
    assert torch.equal(a.logits[1], b.logits[0])  # an image's init depends on its seed only
    with pytest.raises(ValueError, match="SYN_GENERATOR"):
        build_image_param("diffusion", [1], 16)


def test_cutouts_shape_and_determinism():
    images = torch.rand(2, 3, 48, 48)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    cfg = CutoutConfig(n=5)
    a, b = make_cutouts(images, 32, cfg, gens()), make_cutouts(images, 32, cfg, gens())
    assert a.shape == (10, 3, 32, 32) and torch.equal(a, b)
    c = make_cutouts(images, 32, cfg, [torch.Generator().manual_seed(s) for s in (8, 9)])
    assert not torch.equal(a, c)
    plain = make_cutouts(images, 48, CutoutConfig(n=2, augment=False, noise=0.0), gens())
    assert torch.equal(plain, images.repeat_interleave(2, 0))


# ---------------------------------------------------------------------------------------------------- VQGAN
def _taming_checkpoint(path, decoder, extra=None, **overrides) -> str:
    state = {"encoder.conv_in.weight": torch.zeros(1), "quant_conv.weight": torch.zeros(1),
             "loss.discriminator.main.0.weight": torch.zeros(1)}
    state.update(decoder.state_dict())
    state.update(overrides)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10, **(extra or {})}, path)
    return str(path)


def test_vqgan_decoder_loads_a_taming_checkpoint_and_decodes(tmp_path, decoder):
    ckpt = _taming_checkpoint(tmp_path / "last.ckpt", decoder)
    cfg_path = tmp_path / "model.yaml"
    cfg_path.write_text(json.dumps({"model": {"target": "taming.models.vqgan.VQModel", "params": TINY_VQGAN}}))
    loaded = load_vqgan_decoder(ckpt, str(cfg_path))
    z = torch.rand(2, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), decoder.decode(z))
    assert loaded.decode(z).shape == (2, 3, 32, 32)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_decoder_uses_taming_key_names():
    with torch.device("meta"):
        model = VQGANDecoder(VQGAN_F16_16384)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {"quantize.embedding.weight": (16384, 256), "post_quant_conv.weight": (256, 256, 1, 1),
                "decoder.conv_in.weight": (512, 256, 3, 3), "decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
                "decoder.up.4.attn.2.q.weight": (512, 512, 1, 1), "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
                "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
                "decoder.up.1.block.2.norm2.weight": (128,), "decoder.conv_out.weight": (3, 128, 3, 3)}
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    assert not any(k.startswith("decoder.up.0.upsample") or ".attn." in k and not k.startswith("decoder.up.4")
                   for k in shapes)


def test_vqgan_checkpoint_errors(tmp_path, decoder):
    with pytest.raises(VQGANCheckpointError, match="VQGAN_CKPT"):
        load_vqgan_decoder("", TINY_VQGAN)
    with pytest.raises(VQGANCheckpointError, match="does not exist"):
        load_vqgan_decoder(str(tmp_path / "missing.ckpt"), TINY_VQGAN)
    bad = _taming_checkpoint(tmp_path / "bad.ckpt", decoder, **{"post_quant_conv.weight": torch.zeros(16, 8, 1, 1)})
    with pytest.raises(VQGANCheckpointError, match="does not match"):
        load_vqgan_decoder(bad, TINY_VQGAN)
    with pytest.raises(VQGANCheckpointError, match="does not match"):
        load_vqgan_decoder(_taming_checkpoint(tmp_path / "ok.ckpt", decoder), VQGAN_F16_16384)
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "enc.ckpt")
    with pytest.raises(VQGANCheckpointError, match="no taming VQGAN decoder"):
        load_vqgan_decoder(str(tmp_path / "enc.ckpt"), TINY_VQGAN)
    pickled = _taming_checkpoint(tmp_path / "lightning.ckpt", decoder,
                                 extra={"hyper_parameters": argparse.Namespace(lr=1.0)})
    with pytest.raises(VQGANCheckpointError, match="VQGAN_TRUSTED"):
        load_vqgan_decoder(pickled, TINY_VQGAN)
    assert isinstance(load_vqgan_decoder(pickled, TINY_VQGAN, trusted=True), VQGANDecoder)


# ----------------------------------------------------------------------------------------- the set on disk
class _Interrupt(Exception):
    pass


def test_interrupted_synthesis_resumes_without_redoing_or_losing_images(tmp_path, clip, encoder, heads):
    names = NAMES[:2]
    calls = {"targets": 0, "batches": []}

    def make_targets() -> PromptTargets:
        calls["targets"] += 1
        return build_prompt_targets("handcrafted", encoder, names, 3, DiversifyConfig(), 0)

    def make_synth(fail_after: int):
        synth = synthesizer(clip, heads, generator="pixel", iters=2)
        run = synth.run

        def counted(targets, labels, seeds, iters=None):
            if len(calls["batches"]) == fail_after:
                raise _Interrupt()
            calls["batches"].append(list(seeds))
            return run(targets, labels, seeds, iters)

        synth.run = counted
        return lambda: synth

    set_dir = str(tmp_path / "handcrafted_x")
    key = {"mode": "handcrafted", "n": 1}
    with pytest.raises(_Interrupt):
        synthesize_set(set_dir, key, names, 3, make_targets, make_synth(fail_after=2), batch=2, seed=7,
                       progress=False)
    partial = set_dir + ".partial"
    assert not os.path.exists(set_dir) and os.path.isdir(partial)
    done = {p: open(os.path.join(partial, p), "rb").read() for p in
            ("images/dog/00000.png", "images/dog/00001.png", "images/dog/00002.png", "images/guitar/00000.png")}
    first = [s for b in calls["batches"] for s in b]
    with pytest.raises(SyntheticSetError, match="other settings"):
        synthesize_set(set_dir, {"mode": "other"}, names, 3, make_targets, make_synth(99), 2, 7, progress=False)
    synthesize_set(set_dir, key, names, 3, make_targets, make_synth(fail_after=99), batch=2, seed=7, progress=False)
    resumed = [s for b in calls["batches"] for s in b][len(first):]
    assert len(first) == 4 and len(resumed) == 2 and not set(first) & set(resumed)  # nothing redone
    assert calls["targets"] == 1  # the saved prompts were reused
    assert not os.path.exists(partial)
    for rel, data in done.items():
        assert open(os.path.join(set_dir, rel), "rb").read() == data  # nothing lost or rewritten
    items = read_synthetic_set(set_dir, names)
    assert len(items) == 6 and [y for _, y, _ in items] == [0, 0, 0, 1, 1, 1]
    manifest = json.load(open(os.path.join(set_dir, "manifest.json")))
    assert manifest["count"] == 6 and {"prompt", "seed", "clip_score", "teacher_prob"} <= set(manifest["images"][0])
    # a complete set is reused without building anything
    assert synthesize_set(set_dir, key, names, 3, None, None, 2, 7) == set_dir


def test_synthetic_folder_errors(tmp_path):
    (tmp_path / "empty" / "images" / "dog").mkdir(parents=True)
    with pytest.raises(SyntheticSetError, match="contains no images"):
        read_synthetic_set(str(tmp_path / "empty"), ["dog"])
    with pytest.raises(SyntheticSetError, match="does not exist"):
        read_synthetic_set(str(tmp_path / "nowhere"))
    (tmp_path / "other" / "cat").mkdir(parents=True)
    with pytest.raises(SyntheticSetError, match="not classes of this run"):
        read_synthetic_set(str(tmp_path / "other"), ["dog"])


def test_synthesised_images_are_written_atomically(tmp_path, monkeypatch):
    """A PNG is written whole or not at all: a write that fails half-way (disk full) leaves no file behind that a
    folder scan could read as an image."""
    from PIL import Image

    from trainers.core import synthesis

    image = torch.rand(3, 6, 5)
    path = tmp_path / "cls" / "a.png"
    synthesis._save_png(str(path), image)
    expected = image.mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(path)), expected)

    def disk_full(self, fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):
            with open(fp, "wb") as f:
                f.write(b"\x89PNG partial")
        else:
            fp.write(b"\x89PNG partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        synthesis._save_png(str(tmp_path / "cls" / "b.png"), torch.rand(3, 6, 5))
    assert os.listdir(tmp_path / "cls") == ["a.png"]
