"""A CoOp fork adopts KDPL_CoOp by copying our `trainers/` folder and adding one import line.

The fork-shaped tree has its own train.py (CoOp's pattern: its own extend_cfg), its own `trainers` package that
registers `CoOp`, and, in one variant, a vendored `clip/` whose `build_model` requires MaPLe's `design_details`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README): "
                                    "Dassl integration tests skipped")

from datasets.synthetic import make_synthetic_dataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FORK_TRAIN = '''
import argparse, sys
sys.modules.setdefault("outdated", None)
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from yacs.config import CfgNode as CN

import datasets  # the fork's datasets
import trainers.coop  # the fork's own trainer
import trainers.kd  # <- the one line a fork adds


def extend_cfg(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


p = argparse.ArgumentParser()
p.add_argument("--config-file"); p.add_argument("--dataset-config-file"); p.add_argument("--trainer")
p.add_argument("--eval-only", action="store_true"); p.add_argument("--model-dir", default="")
p.add_argument("--load-epoch", type=int); p.add_argument("opts", nargs=argparse.REMAINDER)
a = p.parse_args()
cfg = get_cfg_default(); extend_cfg(cfg)
cfg.merge_from_file(a.dataset_config_file); cfg.merge_from_file(a.config_file)
cfg.TRAINER.NAME = a.trainer
cfg.merge_from_list(a.opts); cfg.freeze()
set_random_seed(1)
trainer = build_trainer(cfg)
if a.eval_only:
    trainer.load_model(a.model_dir, epoch=a.load_epoch); trainer.test()
else:
    trainer.train()
import clip.model
print("CLIP package:", clip.model.__file__)
'''

FORK_COOP = '''
from dassl.engine import TRAINER_REGISTRY, TrainerX


@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    """The fork's own CoOp (its registration must keep working next to ours)."""
'''


def _make_fork(tmp_path, vendored_clip: bool) -> str:
    fork = tmp_path / "fork"
    (fork / "trainers").mkdir(parents=True)
    (fork / "trainers" / "__init__.py").write_text("")
    (fork / "trainers" / "coop.py").write_text(FORK_COOP)
    shutil.copytree(os.path.join(ROOT, "trainers"), fork / "trainers" / "kd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(ROOT, "datasets"), fork / "datasets", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(ROOT, "configs"), fork / "configs")
    (fork / "train.py").write_text(textwrap.dedent(FORK_TRAIN))
    if vendored_clip:  # MaPLe/PromptSRC style: build_model(state_dict, design_details)
        import clip as registry_clip

        src = os.path.dirname(registry_clip.__file__)
        shutil.copytree(src, fork / "clip", ignore=shutil.ignore_patterns("__pycache__"))
        model_py = fork / "clip" / "model.py"
        text = model_py.read_text()
        assert "def build_model(state_dict: dict):" in text and "transformer_layers: int\n" in text
        text = text.replace("def build_model(state_dict: dict):",
                            "def build_model(state_dict: dict, design_details):\n"
                            "    assert design_details['trainer'] in ('CoOp', 'IVLP', 'MaPLe')")
        text = text.replace("transformer_layers: int\n", "transformer_layers: int,\n design_details\n", 1)
        text = text.replace("context_length, vocab_size, transformer_width, transformer_heads, transformer_layers\n",
                            "context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,"
                            " design_details\n")
        model_py.write_text(text)
    return str(fork)


@pytest.mark.parametrize("vendored_clip", [False, True], ids=["registry-clip", "vendored-design-details-clip"])
def test_fork_adopts_kdpl_coop_with_one_import(tmp_path, vendored_clip):
    fork = _make_fork(tmp_path, vendored_clip)
    data = str(tmp_path / "data")
    make_synthetic_dataset(data, "eurosat", num_classes=4, per_class=4, seed=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    common = [sys.executable, "train.py", "--dataset-config-file", "configs/datasets/eurosat.yaml",
              "--config-file", "configs/trainers/KDPL_CoOp/tiny_vit_ep2_cpu.yaml", "--trainer", "KDPL_CoOp"]
    opts = ["DATASET.ROOT", data, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
            "OUTPUT_DIR", os.path.join(fork, "out"), "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CTX_INIT",
            "a photo of a"]
    done = subprocess.run(common + opts + ["DATASET.SUBSAMPLE_CLASSES", "base"], cwd=fork, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Finish training" in done.stdout and "* accuracy:" in done.stdout
    expected_clip = os.path.join(fork, "clip") if vendored_clip else os.path.dirname(__import__("clip").__file__)
    assert f"CLIP package: {os.path.join(expected_clip, 'model.py')}" in done.stdout
    assert json.load(open(os.path.join(fork, "out", "results.json")))["num_classes"] == 2
    test = subprocess.run(common + ["--eval-only", "--model-dir", os.path.join(fork, "out"), "--load-epoch", "1"]
                          + opts[:-6] + ["OUTPUT_DIR", os.path.join(fork, "out_new"), "TRAINER.COOP.N_CTX", "4",
                                         "TRAINER.COOP.CTX_INIT", "a photo of a", "DATASET.SUBSAMPLE_CLASSES", "new"],
                          cwd=fork, env=env, capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert json.load(open(os.path.join(fork, "out_new", "results.json")))["num_classes"] == 2
