"""trainers/dfkd_synthesis.py without a trainer: SyntheticSetBuilder loads the CLIP teacher only when it must
synthesise, and the names split out of trainers/dfkd.py stay importable there as the same objects."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("dassl")

import trainers  # noqa: E402,F401  (registers the config hooks)
from trainers import dfkd, dfkd_synthesis  # noqa: E402
from trainers.config import extend_cfg  # noqa: E402
from trainers.core import domain_eval, students  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def tiny_cfg(cache: Path):
    from dassl.config import get_cfg_default

    cfg = extend_cfg(get_cfg_default())
    cfg.SEED = 1
    cfg.DATASET.SOURCE_DOMAINS = ["photo"]
    cfg.DATASET.TARGET_DOMAINS = ["sketch"]
    cfg.merge_from_list(["TRAINER.DFKD.TEACHER", "tiny-vit", "TRAINER.DFKD.SYN_GENERATOR", "pixel",
                         "TRAINER.DFKD.SYN_ITERS", 2, "TRAINER.DFKD.SYN_CUTOUTS", 2, "TRAINER.DFKD.SYN_SIZE", 32,
                         "TRAINER.DFKD.SYN_PER_CLASS", 1, "TRAINER.DFKD.SYN_BATCH", 2,
                         "TRAINER.DFKD.SYN_PROGRESS", False, "TRAINER.DFKD.SYN_CACHE_DIR", str(cache)])
    return cfg


def test_builder_loads_the_teacher_only_to_synthesise_and_reuses_the_cache(tmp_path, monkeypatch):
    import torch

    loads = []
    real_load = dfkd_synthesis.load_teacher_clip

    def counting_load(cfg):
        loads.append(cfg.TRAINER.DFKD.TEACHER)
        return real_load(cfg)

    monkeypatch.setattr(dfkd_synthesis, "load_teacher_clip", counting_load)
    cfg = tiny_cfg(tmp_path / "cache")
    names = ["dog", "house"]
    builder = dfkd_synthesis.SyntheticSetBuilder(cfg, "handcrafted", names, ["photo", "sketch"], torch.device("cpu"))
    assert loads == []  # building the key and folder needs no model
    assert Path(builder.set_dir).parent == tmp_path / "cache"
    assert os.path.basename(builder.set_dir).startswith("handcrafted_")

    path = dfkd_synthesis.ensure_synthetic_set(cfg, "handcrafted", names, ["photo", "sketch"], torch.device("cpu"))
    assert path == builder.set_dir and loads == ["tiny-vit"]  # loaded once for targets and synthesiser together
    manifest = json.loads(Path(path, "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["key"]["classnames"] == names

    again = dfkd_synthesis.ensure_synthetic_set(cfg, "handcrafted", names, ["photo", "sketch"], torch.device("cpu"))
    assert again == path and loads == ["tiny-vit"]  # a complete cached set loads no teacher


def test_split_names_stay_importable_from_trainers_dfkd():
    assert dfkd.build_student_net is students.build_student_net
    assert dfkd.distillation_loss is students.distillation_loss
    assert dfkd.DomainAccuracy is domain_eval.DomainAccuracy
    assert dfkd.benchmark_domains is domain_eval.benchmark_domains
    assert dfkd.ensure_synthetic_set is dfkd_synthesis.ensure_synthetic_set
    assert dfkd.prompt_classnames is dfkd_synthesis.prompt_classnames
    root = Path(__file__).resolve().parents[1] / "trainers"
    for rel in ("dfkd.py", "dfkd_synthesis.py", "core/students.py", "core/domain_eval.py"):
        with open(root / rel, encoding="utf-8") as f:
            assert sum(1 for _ in f) <= 500, rel


def test_con_joint_set_runs_probe_rounds_before_synthesis_and_has_its_own_key(tmp_path, capsys):
    import torch

    cfg = tiny_cfg(tmp_path / "cache")
    cfg.merge_from_list(["TRAINER.DFKD.N_PROMPTS", 2, "TRAINER.DFKD.CON_STEPS", 2, "TRAINER.DFKD.CON_JOINT", True,
                         "TRAINER.DFKD.CON_JOINT_ROUNDS", 2, "TRAINER.DFKD.CON_JOINT_ITERS", 2,
                         "TRAINER.DFKD.CON_JOINT_STEPS", 3])
    names = ["dog", "house"]
    cpu = torch.device("cpu")
    path = dfkd_synthesis.ensure_synthetic_set(cfg, "contrastive", names, ["photo", "sketch"], cpu)
    assert "CON_JOINT: 2 rounds of 2 latent steps on 2 probe images and 3 prompt steps" in capsys.readouterr().out
    manifest = json.loads(Path(path, "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["key"]["prompts"]["joint"] == {"rounds": 2, "iters": 2, "steps": 3,
                                                                             "lambda": 1.0}
    cfg.merge_from_list(["TRAINER.DFKD.CON_JOINT", False])
    plain = dfkd_synthesis.SyntheticSetBuilder(cfg, "contrastive", names, ["photo", "sketch"], cpu)
    assert plain.set_dir != path and "joint" not in plain.key["prompts"]
