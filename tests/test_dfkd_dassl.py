"""DFKD trainers with real Dassl on CPU: synthesis -> distillation -> per-domain evaluation on a PACS-layout tree.

Tiny random CLIP teacher (32 px), pixel generator, 2 classes x 2 images, a few iterations, one student epoch.
Skipped when Dassl is not importable.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import pytest
import torch

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: the DFKD trainers need it")
sys.modules.setdefault("outdated", None)  # type: ignore[arg-type]

import trainers  # noqa: E402,F401  (registers the trainers and their keys)
from trainers.core import synthesis  # noqa: E402
from trainers.core.clip_models import load_clip  # noqa: E402
from trainers.core.generators import VQGANCheckpointError, VQGANDecoder  # noqa: E402
from trainers.core.teacher import FrozenTeacher  # noqa: E402
from trainers.core.students import build_student_net, distillation_loss  # noqa: E402
from trainers.core.synthesis import SyntheticSetError  # noqa: E402
from trainers.dfkd import DFKD_DEFAULTS, MODES_BY_TRAINER  # noqa: E402
from trainers.dfkd_synthesis import prompt_classnames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = ["DFKD_Handcrafted", "DFKD_Mix", "DFKD_Random", "DFKD_Contrastive"]
PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
DOMAIN_OPTS = ["DATASET.SOURCE_DOMAINS", "['photo']", "DATASET.TARGET_DOMAINS", str(PACS_DOMAINS)]


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def make_pacs(root: Path) -> None:
    """A 2-class PACS tree in Dassl's layout (the datasets package's generator when present)."""
    try:
        from datasets.synthetic import make_synthetic_dataset
    except ImportError:  # pragma: no cover - the datasets work is not in this tree
        from PIL import Image

        for d in PACS_DOMAINS:
            lines = []
            for label, c in enumerate(["dog", "elephant"]):
                for i in range(3):
                    rel = f"{d}/{c}/{i}.jpg"
                    (root / "pacs/images" / d / c).mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (32, 32), (80 * label, 40 * i, 120)).save(root / "pacs/images" / rel)
                    lines.append(f"{rel} {label + 1}\n")
            (root / "pacs/splits").mkdir(parents=True, exist_ok=True)
            for split in ("train", "crossval", "test"):
                (root / "pacs/splits" / f"{d}_{split}_kfold.txt").write_text("".join(lines))
        return
    make_synthetic_dataset(str(root), layout="pacs", num_classes=2, per_class=2, size=32)


def run(data: Path, out: Path, trainer: str, opts: Optional[List[str]] = None, eval_only: bool = False,
        model_dir: str = "", load_epoch: Optional[int] = None, seed: int = 1, cache: Optional[Path] = None):
    """train.py's pipeline in-process, with the tiny config."""
    import train

    argv = ["--root", str(data), "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", str(ROOT / "configs/datasets/pacs.yaml"),
            "--config-file", str(ROOT / f"configs/trainers/{trainer}/tiny_cpu.yaml"), "--output-dir", str(out)]
    if eval_only:
        argv += ["--eval-only"] + (["--model-dir", model_dir] if model_dir else [])
        argv += ["--load-epoch", str(load_epoch)] if load_epoch is not None else []
    argv += DOMAIN_OPTS + ["USE_CUDA", "False", "TRAINER.DFKD.SYN_CACHE_DIR", str(cache or data.parent / "cache")]
    argv += list(opts or [])
    args = train.build_parser().parse_args(argv)
    if hasattr(train, "run"):
        return train.run(args, log_to_file=False)
    from dassl.engine import build_trainer  # pragma: no cover - older train.py without run()
    trainer_obj = build_trainer(train.setup_cfg(args))
    if eval_only:
        trainer_obj.load_model(model_dir, epoch=load_epoch)
        trainer_obj.test()
    else:
        trainer_obj.train()
    return trainer_obj


def results(out: Path) -> dict:
    with open(out / "results.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("dfkd")
    make_pacs(ws / "data")
    return ws


@pytest.fixture(scope="module")
def four_modes(workspace):
    """The end-to-end run of every mode, in the protocol layout (output/dfkd/DATASET/TAG/CFG/seedS)."""
    outs = {}
    for trainer in TRAINERS:
        out = workspace / "output/dfkd/pacs" / trainer / "tiny_cpu/seed1"
        run(workspace / "data", out, trainer)
        outs[trainer] = out
    return outs


# ------------------------------------------------------------------------------------------- registration
def test_trainers_registered_with_their_keys():
    from dassl.config import get_cfg_default
    from dassl.engine import TRAINER_REGISTRY

    from trainers.config import extend_cfg

    assert set(TRAINERS) <= set(TRAINER_REGISTRY.registered_names())
    assert MODES_BY_TRAINER == {"DFKD_Handcrafted": "handcrafted", "DFKD_Mix": "mix", "DFKD_Random": "random",
                                "DFKD_Contrastive": "contrastive"}
    cfg = extend_cfg(get_cfg_default())
    assert set(DFKD_DEFAULTS) <= set(cfg.TRAINER.DFKD)
    for trainer in TRAINERS:
        for name in ("vit_b32", "tiny_cpu"):
            cfg.merge_from_file(str(ROOT / f"configs/trainers/{trainer}/{name}.yaml"))


# ---------------------------------------------------------------------------------------------- end to end
def test_all_four_modes_end_to_end(four_modes):
    sets = set()
    for trainer, out in four_modes.items():
        res = results(out)
        assert res["trainer"] == trainer and res["prompt_mode"] == MODES_BY_TRAINER[trainer]
        assert set(res["domains"]) == set(PACS_DOMAINS)
        assert all(0 <= v <= 100 for v in res["domains"].values())
        assert res["n_synthetic"] == 4 and res["regime"]["images"].startswith("synthetic only")
        assert (out / "student/model.pth.tar-1").is_file()
        manifest = json.loads(Path(res["synthetic_set"], "manifest.json").read_text())
        assert manifest["count"] == 4 and manifest["key"]["mode"] == MODES_BY_TRAINER[trainer]
        split = json.loads(Path(res["synthetic_set"], "split.json").read_text())
        assert [y for _, y, _ in split["train"]] == [0, 0, 1, 1]
        sets.add(res["synthetic_set"])
    assert len(sets) == 4  # one cached set per mode


def test_results_table_compares_the_modes(four_modes, workspace):
    tools_results = pytest.importorskip("tools.results", reason="tools/results/ is not in this tree")
    tables, _ = tools_results.build_tables(workspace / "output/dfkd", protocol="dfkd")
    rows = [r for t in tables for r in t.rows if r.get("domain") == "Mean"]
    assert {r["tag"] for r in rows} == set(TRAINERS)


def test_second_run_reuses_the_cached_set(four_modes, workspace, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the cached synthetic set should have been reused")

    monkeypatch.setattr(synthesis.Synthesizer, "run", refuse)
    out = workspace / "rerun"
    run(workspace / "data", out, "DFKD_Random", seed=2, opts=["OPTIM.LR", "0.05"])  # student settings differ
    assert results(out)["synthetic_set"] == results(four_modes["DFKD_Random"])["synthetic_set"]


def test_eval_only_reproduces_the_final_test(four_modes, workspace):
    out = workspace / "eval_mix"
    run(workspace / "data", out, "DFKD_Mix", eval_only=True, model_dir=str(four_modes["DFKD_Mix"]), load_epoch=1)
    trained, evaluated = results(four_modes["DFKD_Mix"]), results(out)
    assert evaluated["eval_only"] and evaluated["domains"] == trained["domains"]


def test_teacher_reference_row(workspace):
    out = workspace / "output/dfkd/pacs/CLIP_teacher/tiny_cpu/seed1"
    run(workspace / "data", out, "DFKD_Handcrafted", eval_only=True, opts=["TRAINER.DFKD.EVAL_WHO", "teacher"])
    res = results(out)
    assert res["evaluated"] == "teacher" and set(res["domains"]) == set(PACS_DOMAINS)
    assert res["regime"]["student"] == "none" and res["regime"]["labels"] == "none"


def test_few_shot_finetuning_and_union(four_modes, workspace, monkeypatch):
    init = str(four_modes["DFKD_Contrastive"] / "student/model.pth.tar-1")
    out = workspace / "fewshot"
    run(workspace / "data", out, "DFKD_Contrastive",
        opts=["TRAINER.DFKD.FEWSHOT_K", "1", "MODEL.INIT_WEIGHTS", init, "DATASET.NUM_SHOTS", "1"])
    res = results(out)
    assert res["n_synthetic"] == 0 and res["fewshot_k"] == 1 and "1-shot real" in res["regime"]["images"]
    import torchvision

    weights = workspace / "resnet18_imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = workspace / "union"
    trainer = run(workspace / "data", out, "DFKD_Contrastive",
                  opts=["TRAINER.DFKD.FEWSHOT_K", "1", "TRAINER.DFKD.FEWSHOT_MODE", "union",
                        "TRAINER.DFKD.TEACHER_CACHE", "cached", "TRAINER.DFKD.STUDENT_PRETRAINED", str(weights)])
    res = results(out)
    assert res["n_synthetic"] == 4 and "+ synthetic" in res["regime"]["images"]
    body, head = trainer.optim.param_groups
    assert head["initial_lr"] == pytest.approx(10 * body["initial_lr"])  # new head x10 on a pretrained body


def test_vqgan_generator_through_the_trainer(workspace, tmp_path):
    tiny = {"embed_dim": 8, "n_embed": 16,
            "ddconfig": {"z_channels": 8, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
                         "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0}}
    ckpt, yaml_path = tmp_path / "last.ckpt", tmp_path / "model.yaml"
    torch.save({"state_dict": VQGANDecoder(tiny).state_dict()}, ckpt)
    yaml_path.write_text(json.dumps({"model": {"params": tiny}}))
    out = tmp_path / "vqgan"
    run(workspace / "data", out, "DFKD_Handcrafted", cache=tmp_path / "cache",
        opts=["TRAINER.DFKD.SYN_GENERATOR", "vqgan", "TRAINER.DFKD.VQGAN_CKPT", str(ckpt),
              "TRAINER.DFKD.VQGAN_CONFIG", str(yaml_path)])
    manifest = json.loads(Path(results(out)["synthetic_set"], "manifest.json").read_text())
    assert manifest["key"]["synthesis"]["generator"] == "vqgan" and manifest["count"] == 4


def test_synthesize_cli_fills_the_cache_the_trainer_reads(workspace, tmp_path, monkeypatch):
    from tools.synthesize import main

    cache = tmp_path / "cli_cache"
    argv = ["--root", str(workspace / "data"), "--seed", "1", "--trainer", "DFKD_Mix",
            "--dataset-config-file", str(ROOT / "configs/datasets/pacs.yaml"),
            "--config-file", str(ROOT / "configs/trainers/DFKD_Mix/tiny_cpu.yaml"),
            *DOMAIN_OPTS, "USE_CUDA", "False", "TRAINER.DFKD.SYN_CACHE_DIR", str(cache)]
    path = main(argv)
    assert Path(path, "manifest.json").is_file() and Path(path).parent == cache
    monkeypatch.setattr(synthesis.Synthesizer, "run", lambda *a, **k: pytest.fail("should reuse the CLI's set"))
    out = tmp_path / "after_cli"
    run(workspace / "data", out, "DFKD_Mix", cache=cache)
    assert results(out)["synthetic_set"] == path


# -------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("opts,error,match", [
    (["TRAINER.DFKD.SYN_DIR", "EMPTY"], SyntheticSetError, "contains no images"),
    (["TRAINER.DFKD.SYN_GENERATOR", "vqgan", "TRAINER.DFKD.VQGAN_CKPT", "MISSING"], VQGANCheckpointError,
     "does not exist"),
    (["TRAINER.DFKD.SYN_GENERATOR", "vqgan"], VQGANCheckpointError, "VQGAN_CKPT"),
    (["TRAINER.DFKD.PROMPT_MODE", "mix"], ValueError, "prompt mode"),
    (["TEST.FINAL_MODEL", "best_val"], ValueError, "best_val"),
])
def test_clear_errors(workspace, tmp_path, opts, error, match):
    (tmp_path / "empty/images/dog").mkdir(parents=True)
    opts = [str(tmp_path / "empty") if o == "EMPTY" else str(tmp_path / "no.ckpt") if o == "MISSING" else o
            for o in opts]
    with pytest.raises(error, match=match):
        run(workspace / "data", tmp_path / "out", "DFKD_Random", opts=opts, cache=tmp_path / "cache")


def test_class_names_are_required(tmp_path):
    with pytest.raises(ValueError, match="non-empty class name"):
        prompt_classnames([])
    with pytest.raises(ValueError, match="non-empty class name"):
        prompt_classnames(["dog", ""])
    overrides = tmp_path / "names.txt"
    overrides.write_text("monitor computer monitor\npeople person\n")
    assert prompt_classnames(["monitor", "people", "dog"], str(overrides)) == ["computer monitor", "person", "dog"]


# -------------------------------------------------------------------------------------- student and loss
def test_kd_loss_zero_for_equal_logits_and_gradients_reach_only_the_student():
    loaded = load_clip("tiny-vit")
    teacher = FrozenTeacher(loaded, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    teacher.set_class_texts(["a photo of a dog.", "a photo of a cat."])
    teacher.train()
    assert not teacher.training and not teacher.model.training
    student = build_student_net("resnet18", 2)
    images = torch.randn(3, 3, 32, 32)
    t_logits = teacher.logits(images, 100.0)
    assert torch.allclose(t_logits, 100 * teacher.encode_image(images) @ teacher.class_features.t())
    s_logits = student(images)
    labels = torch.tensor([0, 1, 0])
    zero, terms = distillation_loss(s_logits.detach(), s_logits, labels, 4.0, 1.0, 0.0)
    assert "loss_ce" not in terms
    assert float(zero.detach()) == pytest.approx(0.0, abs=1e-6)
    loss, terms = distillation_loss(t_logits, s_logits, labels, 4.0, 1.0, torch.tensor([0.0, 1.0, 0.0]))
    loss.backward()
    assert "loss_ce" in terms and all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.model.parameters())


def test_student_builder(tmp_path, monkeypatch):
    """The student is the named torchvision body with its last Linear replaced by a fresh K-way head; weights come
    only from a local file (exactly those weights), never from the network."""
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("the student builder tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    net = build_student_net("resnet18", 5)
    assert isinstance(net.body, torchvision.models.ResNet) and isinstance(net.body.fc, torch.nn.Identity)
    assert (net.head.in_features, net.head.out_features) == (512, 5)
    for size in (32, 97):  # any input size: the body pools globally
        assert net(torch.randn(2, 3, size, size)).shape == (2, 5)
    # mobilenet: only the classifier's last Linear is replaced; its hidden Linear stays in the body
    small = build_student_net("mobilenet_v3_small", 3)
    assert isinstance(small.body.classifier[0], torch.nn.Linear) and isinstance(small.body.classifier[3],
                                                                                torch.nn.Identity)
    assert (small.head.in_features, small.head.out_features) == (1024, 3)
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    # pretrained: every body tensor is the file's (plain or {"state_dict": ...} checkpoint), the head is new
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    for i, saved in enumerate([reference.state_dict(), {"state_dict": reference.state_dict()}]):
        weights = tmp_path / f"resnet18_{i}.pth"
        torch.save(saved, weights)
        loaded = build_student_net("resnet18", 5, str(weights))
        body = loaded.body.state_dict()
        assert set(body) == {k for k in reference.state_dict() if not k.startswith("fc.")}
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in body.items())
    # without a file: random init, not the reference weights
    assert not torch.equal(build_student_net("resnet18", 5).body.conv1.weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match="never"):
        build_student_net("resnet18", 5, str(tmp_path / "none.pth"))
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(RuntimeError, match="does not fit torchvision's resnet18"):
        build_student_net("resnet18", 5, str(tmp_path / "resnet34.pth"))
    with pytest.raises(ValueError, match="Unknown torchvision classifier 'resnet_9000'"):
        build_student_net("resnet_9000", 5)
