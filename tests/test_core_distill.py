"""Teacher wrapper, KD losses and class-agnostic selection (no Dassl)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trainers.core.clip_models import CLIP_MEAN, CLIP_STD, load_clip
from trainers.core.losses import kd_loss, kl_divergence, promptkd_loss, symmetric_kl
from trainers.core.selection import select_top_classes
from trainers.core.teacher import FrozenTeacher


def _hand_kl(p_logits, q_logits, t=1.0):
    p = torch.softmax(p_logits.double() / t, -1)
    q = torch.softmax(q_logits.double() / t, -1)
    return (p * (p.log() - q.log())).sum(-1)  # per sample


def test_symmetric_kl_matches_the_formula():
    torch.manual_seed(0)
    t, s = torch.randn(8, 5) * 3, torch.randn(8, 5) * 3
    total, fwd, rev = symmetric_kl(t, s)
    assert torch.allclose(fwd.double(), _hand_kl(t, s).sum() / 8, rtol=1e-5)
    assert torch.allclose(rev.double(), _hand_kl(s, t).sum() / 8, rtol=1e-5)
    assert torch.allclose(total, 0.5 * fwd + 0.5 * rev)
    zero, f0, r0 = symmetric_kl(t, t.clone())
    assert float(zero) == pytest.approx(0, abs=1e-6) and float(f0) == pytest.approx(0, abs=1e-6)
    weighted, _, _ = symmetric_kl(t, s, 0.2, 0.8)
    assert torch.allclose(weighted, 0.2 * fwd + 0.8 * rev)


def test_symmetric_kl_is_invariant_to_class_permutation():
    torch.manual_seed(1)
    t, s = torch.randn(4, 6), torch.randn(4, 6)
    perm = torch.randperm(6)
    assert torch.allclose(symmetric_kl(t, s)[0], symmetric_kl(t[:, perm], s[:, perm])[0], atol=1e-6)


def test_promptkd_loss_normaliser_is_number_of_logits():
    torch.manual_seed(2)
    t, s = torch.randn(4, 10) * 5, torch.randn(4, 10) * 5
    expected = 1000 * 2.0 ** 2 * _hand_kl(t, s, 2.0).sum() / (4 * 10)
    assert torch.allclose(promptkd_loss(t, s, temperature=2.0, weight=1000).double(), expected, rtol=1e-5)
    # doubling N at a fixed per-sample KL halves the loss: pad with classes of equal probability under both
    pad = torch.full((4, 10), -1e4)
    assert torch.allclose(promptkd_loss(torch.cat([t, pad], 1), torch.cat([s, pad], 1)),
                          promptkd_loss(t, s) / 2, rtol=1e-4)
    assert float(promptkd_loss(t, t)) == pytest.approx(0, abs=1e-6)


def test_kd_loss_and_reductions():
    torch.manual_seed(3)
    t, s = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(kd_loss(t, s, 4.0).double(), 16 * _hand_kl(t, s, 4.0).mean(), rtol=1e-5)
    assert torch.allclose(kl_divergence(t, s, reduction="sum").double(), _hand_kl(t, s).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        kl_divergence(t, s, reduction="median")


def test_select_top_classes_matches_numpy_argpartition():
    torch.manual_seed(4)
    logits = torch.randn(6, 50) * 4
    idx = select_top_classes(logits, 8)
    mean = torch.softmax(logits, -1).mean(0).numpy()
    expected = set(np.argpartition(-mean, 8)[:8].tolist())
    assert set(idx.tolist()) == expected and len(idx) == 8
    assert logits.softmax(-1).argmax(-1).unique().numel() <= 8
    single = torch.randn(1, 50)
    assert int(single.argmax()) in select_top_classes(single, 3).tolist()
    with pytest.warns(UserWarning, match="exceeds"):
        assert len(select_top_classes(logits, 80)) == 50


def test_select_includes_each_images_top1_when_k_is_large_enough():
    torch.manual_seed(5)
    logits = torch.randn(4, 100) * 10
    idx = set(select_top_classes(logits, 4).tolist())
    # with confident, distinct top-1s the batch mean keeps each of them
    assert set(logits.argmax(-1).tolist()) <= idx


@pytest.fixture(scope="module")
def teacher():
    t = FrozenTeacher(load_clip("tiny-vit-wide"), 32, CLIP_MEAN, CLIP_STD)
    t.set_class_texts(["a photo of a cat.", "a photo of a dog.", "a photo of a car."])
    return t


def test_teacher_is_frozen_in_eval_and_builds_no_graph(teacher):
    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    logits = teacher.logits(x, 100.0)
    assert logits.shape == (2, 3) and not logits.requires_grad
    # usable as a target of a differentiable loss
    student = torch.randn(2, 3, requires_grad=True)
    symmetric_kl(logits, student)[0].backward()
    assert student.grad is not None and x.grad is None
    assert teacher.text_encoder_calls == 1
    assert torch.allclose(teacher.class_features.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_teacher_input_adaptation():
    loaded = load_clip("tiny-vit-wide")
    same = FrozenTeacher(loaded, 32, CLIP_MEAN, CLIP_STD)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(same.adapt_input(x), x)
    other = FrozenTeacher(loaded, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pixels = torch.rand(2, 3, 32, 32)
    student_view = (pixels - 0.5) / 0.5
    own = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(other.adapt_input(student_view), own, atol=1e-5)
    bigger = FrozenTeacher(load_clip("tiny-open-clip"), 32, CLIP_MEAN, CLIP_STD)
    assert bigger.preprocess.size == 48
    assert bigger.adapt_input(x).shape == (2, 3, 48, 48)
    bigger.set_class_texts(["a", "b"])
    assert bigger.logits(x, 100.0).shape == (2, 2)


def test_teacher_requires_class_texts():
    t = FrozenTeacher(load_clip("tiny-vit"), 32, CLIP_MEAN, CLIP_STD)
    with pytest.raises(RuntimeError, match="set_class_texts"):
        t.logits(torch.randn(1, 3, 32, 32), 100.0)
    with pytest.raises(ValueError, match="at least one"):
        t.set_class_texts([])


def test_class_dictionary_reading_and_offline_error(tmp_path, monkeypatch):
    import urllib.error

    from trainers.core import class_dictionary as cd

    path = tmp_path / "d.csv"
    path.write_text("ClassName\ngolden retriever\nŠkoda yeti\n\ntench\n", encoding="utf-8")
    names, where, digest = cd.load_class_dictionary(str(path))
    assert names == ["golden retriever", "Škoda yeti", "tench"] and where == str(path) and len(digest) == 64

    def offline(url, target):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(cd.urllib.request, "urlretrieve", offline)
    with pytest.raises(RuntimeError, match="TRAINER.KDPL.CA_DICTIONARY"):
        cd.download_class_dictionary(str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="CA_DICTIONARY"):
        cd.read_class_dictionary(str(tmp_path / "missing.csv"))


AUTHORS_DICTIONARY = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                  "kdpl_classnames_dictionary.csv")


@pytest.mark.skipif(not os.path.isfile(AUTHORS_DICTIONARY), reason="the authors' dictionary copy in ../shared/data "
                                                                    "is not present (it is not part of the project)")
def test_authors_dictionary_matches_the_pinned_checksum():
    from trainers.core.class_dictionary import DICTIONARY_SHA256, DICTIONARY_SIZE, load_class_dictionary

    names, _, digest = load_class_dictionary(AUTHORS_DICTIONARY)
    assert digest == DICTIONARY_SHA256 and len(names) == DICTIONARY_SIZE
    assert len({n.lower() for n in names}) == DICTIONARY_SIZE
    assert {"golden retriever", "tench", "accordion", "apple pie", "forest"} <= {n.lower() for n in names}


def test_promptsrc_self_consistency_terms_match_hand_computation():
    from torch.nn import functional as F

    from trainers.promptsrc import gaussian_weights, self_consistency_terms

    torch.manual_seed(6)
    img, zs_img = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    txt, zs_txt = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    total, terms = self_consistency_terms(img, txt, zs_img, zs_txt, torch.tensor(100.0), 25, 10)
    text_l1 = (txt - zs_txt).abs().mean()
    image_l1 = (img - zs_img).abs().mean()
    kl = _hand_kl(100 * zs_img @ zs_txt.t(), 100 * img @ txt.t()).sum() / (3 * 5)
    assert torch.allclose(terms["loss SCL KL"].double(), kl, rtol=1e-5)
    assert torch.allclose(total.double(), 25 * text_l1.double() + 10 * image_l1.double() + kl, rtol=1e-5)
    weights = gaussian_weights(20, 15, 1)
    assert sum(weights) == pytest.approx(1.0) and max(range(20), key=weights.__getitem__) == 14
    assert sum(weights[12:17]) > 0.95
