"""A CoOp fork adopts our trainers with `python -m tools.adopt FORK_DIR`, then trains them with its own train.py.

The fork-shaped trees are written here (nothing is copied from the forks). Each reproduces what matters in
KaiyangZhou/CoOp, muzairkhattak/multimodal-prompt-learning (MaPLe) and muzairkhattak/PromptSRC: trainer imports at the
top of train.py, an ``extend_cfg`` that REPLACES ``TRAINER.COOP`` / ``MAPLE`` / ``PROMPTSRC`` ... with ``CN()`` and the
fork's keys, ``setup_cfg`` (defaults -> extend_cfg -> dataset yaml -> method yaml -> args -> opts -> freeze),
``main(args)`` under ``if __name__ == "__main__":``, the fork's own trainers and dataset class (registered under the
fork's names), and either the registry's ``clip`` (CoOp) or a vendored ``clip`` whose ``build_model`` and ``CLIP``
require ``design_details`` (MaPLe, PromptSRC).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import Dict, List

import pytest

from tools import adopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import dassl  # noqa: F401
except ImportError:
    HAVE_DASSL = False
else:
    HAVE_DASSL = True
needs_dassl = pytest.mark.skipif(not HAVE_DASSL, reason="Dassl.pytorch is not installed (install it from source, "
                                 "see README): fork end-to-end runs skipped")

# ------------------------------------------------------------------------------------------- the fork-shaped trees
# The nodes each fork's extend_cfg creates (keys and defaults as in the forks' train.py).
COOP_NODES = {
    "COOP": {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"},
    "COCOOP": {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16"},
}
MAPLE_NODE = {"MAPLE": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}}
IVLP_NODE = {"IVLP": {"N_CTX_VISION": 2, "N_CTX_TEXT": 2, "CTX_INIT": "a photo of a", "PREC": "fp16",
                      "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9}}
FORKS = {
    "coop": {"trainers": {"coop": ["CoOp"], "cocoop": ["CoCoOp"], "zsclip": ["ZeroshotCLIP"]},
             "nodes": COOP_NODES, "vendored_clip": False},
    "maple": {"trainers": {"coop": ["CoOp"], "cocoop": ["CoCoOp"], "zsclip": ["ZeroshotCLIP"], "maple": ["MaPLe"],
                           "independentVL": ["IVLP"], "vpt": ["VPT"]},
              "nodes": {**COOP_NODES, **MAPLE_NODE, **IVLP_NODE,
                        "VPT": {"N_CTX_VISION": 2, "CTX_INIT": "a photo of a", "PREC": "fp16",
                                "PROMPT_DEPTH_VISION": 1}},
              "vendored_clip": True},
    "promptsrc": {"trainers": {"coop": ["CoOp"], "cocoop": ["CoCoOp"], "zsclip": ["ZeroshotCLIP"],
                               "maple": ["MaPLe"], "independentVL": ["IVLP"], "promptsrc": ["PromptSRC"]},
                  "nodes": {**COOP_NODES, **MAPLE_NODE,
                            "PROMPTSRC": {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a",
                                          "PREC": "fp16", "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9,
                                          "TEXT_LOSS_WEIGHT": 25, "IMAGE_LOSS_WEIGHT": 10, "GPA_MEAN": 15,
                                          "GPA_STD": 1},
                            **IVLP_NODE},
                  "vendored_clip": True},
}

FORK_TRAIN = '''\
import argparse

import torch

from dassl.utils import setup_logger, set_random_seed
from dassl.config import get_cfg_default
from dassl.engine import build_trainer

# the fork's datasets and trainers
import datasets.eurosat

{imports}


def reset_cfg(cfg, args):
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.seed:
        cfg.SEED = args.seed
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer


def extend_cfg(cfg):
    """The fork's config nodes: each one REPLACES whatever node of that name the defaults held."""
    from yacs.config import CfgNode as CN

{extend}
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=str, default="")
    parser.add_argument("--output-dir", type=str, default="")
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--config-file", type=str, default="")
    parser.add_argument("--dataset-config-file", type=str, default="")
    parser.add_argument("--trainer", type=str, default="")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--model-dir", type=str, default="")
    parser.add_argument("--load-epoch", type=int)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER)
    args = parser.parse_args()
    main(args)
'''

FORK_TRAINER = '''\
from clip import clip  # noqa: F401  (the fork's trainers import the clip package the fork runs with)
from dassl.engine import TRAINER_REGISTRY, TrainerX
{classes}
'''

FORK_DATASET = '''\
import json
import math
import os

from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase


def keep_classes(subsample, *splits):
    """base = the first half of the sorted labels, new = the rest (relabelled from 0), all = everything."""
    labels = sorted({d.label for d in splits[0]})
    m = math.ceil(len(labels) / 2)
    kept = {"all": labels, "base": labels[:m], "new": labels[m:]}[subsample]
    relabel = {y: i for i, y in enumerate(kept)}
    return [[Datum(impath=d.impath, label=relabel[d.label], classname=d.classname) for d in split
             if d.label in relabel] for split in splits]


@DATASET_REGISTRY.register()
class EuroSAT(DatasetBase):
    """The fork's own EuroSAT: split file, few-shot sampling, base/new classes."""

    dataset_dir = "eurosat"

    def __init__(self, cfg):
        root = os.path.join(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)), self.dataset_dir)
        with open(os.path.join(root, "split_zhou_EuroSAT.json")) as f:
            split = json.load(f)
        train, val, test = ([Datum(impath=os.path.join(root, "2750", path), label=int(label), classname=name)
                             for path, label, name in split[key]] for key in ("train", "val", "test"))
        shots = cfg.DATASET.NUM_SHOTS
        if shots >= 1:
            train = self.generate_fewshot_dataset(train, num_shots=shots)
            val = self.generate_fewshot_dataset(val, num_shots=min(shots, 4))
        train, val, test = keep_classes(cfg.DATASET.SUBSAMPLE_CLASSES, train, val, test)
        print(f"FORK DATASET {__name__}.EuroSAT: {len(train)} training images")
        super().__init__(train_x=train, val=val, test=test)
'''

DESIGN_KEYS = ("trainer", "vision_depth", "language_depth", "vision_ctx", "language_ctx", "maple_length")


def vendor_design_details_clip(dest: str) -> None:
    """A `clip/` package whose build_model(state_dict, design_details) and CLIP(..., design_details) require MaPLe's
    prompt design (made from the registry's clip, not from a fork)."""
    import clip as registry_clip

    shutil.copytree(os.path.dirname(registry_clip.__file__), dest, ignore=shutil.ignore_patterns("__pycache__"))
    path = os.path.join(dest, "model.py")
    with open(path) as f:
        text = f.read()
    edits = [
        ("def build_model(state_dict: dict):", "def build_model(state_dict: dict, design_details):"),
        ("transformer_layers: int\n                 ):\n        super().__init__()\n",
         "transformer_layers: int,\n                 design_details\n                 ):\n        super().__init__()\n"
         f"        self.design = {{k: design_details[k] for k in {DESIGN_KEYS!r}}}\n"),
        ("context_length, vocab_size, transformer_width, transformer_heads, transformer_layers\n",
         "context_length, vocab_size, transformer_width, transformer_heads, transformer_layers, design_details\n"),
    ]
    for old, new in edits:
        assert text.count(old) == 1, f"the registry clip changed; cannot vendor it ({old!r})"
        text = text.replace(old, new)
    with open(path, "w") as f:
        f.write(text)


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make_fork(root: str, kind: str) -> str:
    """Write a fork-shaped tree of ``kind`` (coop, maple, promptsrc) under ``root``; returns its path."""
    spec = FORKS[kind]
    fork = os.path.join(root, f"fork_{kind}")
    extend = []
    for node, keys in spec["nodes"].items():
        extend.append(f"    cfg.TRAINER.{node} = CN()")
        extend += [f"    cfg.TRAINER.{node}.{k} = {v!r}" for k, v in keys.items()]
    imports = "\n".join(f"import trainers.{module}" for module in spec["trainers"])
    write(os.path.join(fork, "train.py"), FORK_TRAIN.format(imports=imports, extend="\n".join(extend)))
    write(os.path.join(fork, "trainers", "__init__.py"), "")
    for module, names in spec["trainers"].items():
        classes = "".join(f'\n\n@TRAINER_REGISTRY.register()\nclass {n}(TrainerX):\n    """The fork\'s own {n}."""\n'
                          for n in names)
        write(os.path.join(fork, "trainers", f"{module}.py"), FORK_TRAINER.format(classes=classes))
    write(os.path.join(fork, "datasets", "__init__.py"), "")
    write(os.path.join(fork, "datasets", "eurosat.py"), FORK_DATASET)
    write(os.path.join(fork, "configs", "datasets", "eurosat.yaml"), 'DATASET:\n  NAME: "EuroSAT"\n')
    write(os.path.join(fork, "configs", "trainers", "CoOp", "vit_b16.yaml"), "OPTIM:\n  MAX_EPOCH: 200\n")
    if spec["vendored_clip"]:
        vendor_design_details_clip(os.path.join(fork, "clip"))
    return fork


def snapshot(folder: str) -> Dict[str, tuple]:
    """Relative path -> (bytes, mtime) of every file: proves what a command did or did not touch."""
    out = {}
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            path = os.path.join(base, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


def run_adopt(capsys, *argv: str):
    code = adopt.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------------------------- tools.adopt itself
def test_adopt_inserts_the_import_after_the_last_trainer_import_and_copies_package_and_configs(tmp_path, capsys):
    fork = make_fork(str(tmp_path), "maple")
    code, out, _ = run_adopt(capsys, fork)
    assert code == 0
    lines = open(os.path.join(fork, "train.py")).read().splitlines()
    ours = [i for i, line in enumerate(lines) if line.startswith("import trainers.kd  ")]
    assert ours == [lines.index("import trainers.vpt") + 1]  # right after the fork's last trainer import
    assert ours[0] < lines.index("def extend_cfg(cfg):")
    assert "--- a/train.py" in out and "+import trainers.kd  # KDPL_*" in out  # the diff of what changed
    # the package, without caches, and our configs where the fork's scripts look them up
    copied = adopt.read_tree(os.path.join(fork, "trainers", "kd"))
    ours_tree = adopt.read_tree(os.path.join(ROOT, "trainers"))
    assert {k: v for k, v in copied.items() if k != adopt.MANIFEST} == ours_tree
    assert not any("__pycache__" in k for k in copied)
    for trainer in adopt.our_trainer_configs():
        assert adopt.read_tree(os.path.join(fork, "configs", "trainers", trainer)) == \
            adopt.read_tree(os.path.join(ROOT, "configs", "trainers", trainer))
    assert os.path.isfile(os.path.join(fork, "configs", "trainers", "KDPL_CoOp", "vit_b32_ctxv1.yaml"))
    assert open(os.path.join(fork, "configs", "trainers", "CoOp", "vit_b16.yaml")).read() == \
        "OPTIM:\n  MAX_EPOCH: 200\n"  # the fork's own folder is untouched
    manifest = json.load(open(os.path.join(fork, "trainers", "kd", adopt.MANIFEST)))
    assert manifest["configs"] == adopt.our_trainer_configs() and manifest["name"] == "kd"


def test_second_run_changes_nothing_and_says_so(tmp_path, capsys):
    fork = make_fork(str(tmp_path), "coop")
    assert run_adopt(capsys, fork)[0] == 0
    before = snapshot(fork)
    code, out, _ = run_adopt(capsys, fork)
    assert code == 0
    assert "train.py already imports trainers.kd: unchanged" in out and "Nothing to do" in out
    assert "written" not in out and "up to date: kd" in out
    assert snapshot(fork) == before  # not even a timestamp changed


def test_refresh_replaces_an_outdated_copy_and_dry_run_writes_nothing(tmp_path, capsys):
    fork = make_fork(str(tmp_path), "coop")
    assert run_adopt(capsys, fork)[0] == 0
    stale = os.path.join(fork, "trainers", "kd", "removed_module.py")
    write(stale, "x = 1\n")
    write(os.path.join(fork, "configs", "trainers", "KDPL_CoOp", "old.yaml"), "{}\n")
    manifest_path = os.path.join(fork, "trainers", "kd", adopt.MANIFEST)  # a config folder we no longer ship
    manifest = json.load(open(manifest_path))
    write(manifest_path, json.dumps({**manifest, "configs": manifest["configs"] + ["KDPL_Retired"]}))
    write(os.path.join(fork, "configs", "trainers", "KDPL_Retired", "a.yaml"), "{}\n")
    before = snapshot(fork)
    code, out, _ = run_adopt(capsys, fork, "--dry-run")
    assert code == 0 and "would be written: kd" in out and "would be written: KDPL_CoOp" in out
    assert "Dry run: nothing written" in out and snapshot(fork) == before
    code, out, _ = run_adopt(capsys, fork)
    assert code == 0 and "written: kd" in out and "written: KDPL_CoOp" in out
    assert not os.path.exists(stale)
    assert not os.path.exists(os.path.join(fork, "configs", "trainers", "KDPL_CoOp", "old.yaml"))
    assert "removed (no longer shipped): KDPL_Retired" in out
    assert not os.path.exists(os.path.join(fork, "configs", "trainers", "KDPL_Retired"))
    assert os.path.isdir(os.path.join(fork, "configs", "trainers", "CoOp"))


def test_an_import_appended_after_main_is_moved_before_it(tmp_path, capsys):
    """The old README appended the import at the end of train.py, where it runs after training started."""
    fork = make_fork(str(tmp_path), "coop")
    with open(os.path.join(fork, "train.py"), "a") as f:
        f.write("import trainers.kd  # appended by hand\n")
    code, out, _ = run_adopt(capsys, fork)
    assert code == 0 and "-import trainers.kd  # appended by hand" in out
    text = open(os.path.join(fork, "train.py")).read()
    assert text.count("import trainers.kd") == 1
    assert text.index("import trainers.kd") < text.index('if __name__ == "__main__":')
    assert text.endswith("    main(args)\n")


@pytest.mark.parametrize("case", ["no-train-py", "no-trainer-import", "foreign-package", "foreign-config-folder"])
def test_refuses_with_a_clear_message_and_writes_nothing(tmp_path, capsys, case):
    fork = make_fork(str(tmp_path), "coop")
    expected = {"no-train-py": "has no train.py", "no-trainer-import": "has no top-level trainer import",
                "foreign-package": "was not written by tools.adopt",
                "foreign-config-folder": "already has config folders ['PromptKD']"}[case]
    if case == "no-train-py":
        os.remove(os.path.join(fork, "train.py"))
    elif case == "no-trainer-import":
        path = os.path.join(fork, "train.py")
        text = open(path).read()
        write(path, "\n".join(line for line in text.splitlines() if not line.startswith("import trainers.")) + "\n")
    elif case == "foreign-package":
        write(os.path.join(fork, "trainers", "kd", "__init__.py"), "# the fork's own package\n")
    else:
        write(os.path.join(fork, "configs", "trainers", "PromptKD", "theirs.yaml"), "{}\n")
    before = snapshot(fork)
    code, out, err = run_adopt(capsys, fork)
    assert code == 2 and out == ""
    assert "refused, nothing written" in err and expected in err
    assert snapshot(fork) == before


def test_node_view_reads_declared_defaults_where_a_fork_replaced_the_node():
    from yacs.config import CfgNode as CN

    from trainers.config import add_keys, cfg_node, cfg_value

    cfg = CN()
    add_keys(cfg, "TESTFORK.NODE", {"OURS": "x", "THEIRS": 1})
    cfg.TESTFORK.NODE = CN()  # what a fork's extend_cfg does
    cfg.TESTFORK.NODE.THEIRS = 2
    view = cfg_node(cfg, "TESTFORK.NODE")
    assert view.THEIRS == 2 and view.OURS == "x" and view["OURS"] == "x" and view.get("OURS") == "x"
    assert "OURS" in view and dict(view) == {"THEIRS": 2, "OURS": "x"}
    assert cfg_value(cfg, "TESTFORK.NODE.OURS") == "x" and cfg_value(CN(), "TESTFORK.NODE.THEIRS") == 1
    with pytest.raises(AttributeError, match="TESTFORK.NODE.UNDECLARED is missing"):
        view.UNDECLARED
    with pytest.raises(AttributeError, match="read-only"):
        view.OURS = "y"


# --------------------------------------------------------------------------------------- with Dassl: the fork runs
def fork_cfg(kind: str):
    """Dassl's defaults (with our keys, as after `import trainers.kd`) put through the fork's extend_cfg."""
    from dassl.config import get_cfg_default
    from yacs.config import CfgNode as CN

    import trainers  # noqa: F401  (registers our keys in Dassl's defaults)

    cfg = get_cfg_default()
    for node, keys in FORKS[kind]["nodes"].items():
        cfg.TRAINER[node] = CN(dict(keys))
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    return cfg


@needs_dassl
@pytest.mark.parametrize("kind", sorted(FORKS))
def test_every_config_we_ship_merges_in_each_fork_and_every_key_reads(kind):
    from trainers.config import DECLARED, cfg_node

    names = adopt.our_trainer_configs()
    yamls = [os.path.join(ROOT, "configs", "trainers", n, f) for n in names
             for f in sorted(os.listdir(os.path.join(ROOT, "configs", "trainers", n)))]
    assert len(yamls) > len(names)
    for path in yamls:
        cfg = fork_cfg(kind)
        cfg.merge_from_file(os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"))
        cfg.merge_from_file(path)  # a key the fork's node lacks would raise KeyError here
    cfg = fork_cfg(kind)
    for path, keys in DECLARED.items():
        if path.startswith("TESTFORK"):
            continue
        view = cfg_node(cfg, path)
        assert all(view[k] is not None for k in keys), path  # every key we declare reads, fork node or not


def driver(runs: List[List[str]]) -> str:
    """A Python program that executes the fork's train.py as __main__ once per argv (Dassl is imported once per
    fork, not once per run: on 2 CPU cores that import costs more than a tiny run)."""
    return textwrap.dedent(f'''\
        import os, runpy, sys
        sys.path.insert(0, os.getcwd())  # as `python train.py` run in the fork's root
        tees = []  # Dassl's tee closes the real stdout when collected: keep each one alive
        for argv in {runs!r}:
            stdout = sys.stdout
            sys.argv = ["train.py"] + argv
            try:
                runpy.run_path("train.py", run_name="__main__")
            finally:
                tees.append(sys.stdout)  # setup_logger replaced stdout with a tee into that run's log.txt
                sys.stdout = stdout
            print("RUN OK", argv[argv.index("--trainer") + 1], "eval" if "--eval-only" in argv else "train")
        import clip
        print("CLIP package:", clip.__file__)
        ''')


def base_to_new(data: str, trainer: str, config: str, out: str, opts: List[str] = ()) -> List[List[str]]:
    """The fork scripts' pair of calls: train on base classes, then --eval-only on new classes."""
    common = ["--root", data, "--seed", "1", "--trainer", trainer,
              "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", config]
    tail = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", *opts]
    return [common + ["--output-dir", f"{out}/train_base", *tail, "DATASET.SUBSAMPLE_CLASSES", "base"],
            common + ["--output-dir", f"{out}/test_new", "--model-dir", f"{out}/train_base", "--load-epoch", "1",
                      "--eval-only", *tail, "DATASET.SUBSAMPLE_CLASSES", "new"]]


TINY_KDPL = "configs/trainers/KDPL_CoOp/tiny_vit_ep2_cpu.yaml"


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory) -> str:
    from datasets.synthetic import make_synthetic_dataset

    data = str(tmp_path_factory.mktemp("fork_data"))
    make_synthetic_dataset(data, "eurosat", num_classes=4, per_class=4, seed=1)
    return data


@needs_dassl
@pytest.mark.parametrize("kind", sorted(FORKS))
def test_fork_trains_on_base_and_evaluates_new_with_its_own_train_py(tmp_path, eurosat, kind):
    fork = make_fork(str(tmp_path), kind)
    before = snapshot(fork)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the fork's packages are importable
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "tools.adopt", fork], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "+import trainers.kd" in done.stdout

    runs = base_to_new(eurosat, "KDPL_CoOp", TINY_KDPL, "out/KDPL_CoOp")
    if kind == "maple":
        runs += base_to_new(eurosat, "KDPL_MaPLe", TINY_KDPL, "out/KDPL_MaPLe")
    if kind == "promptsrc":
        templates = str(tmp_path / "templates.txt")
        write(templates, "a photo of a {}.\na satellite photo of {}.\n")
        # TRAINER.SCL.TEMPLATES_FILE lives in our own node: settable although the fork replaced TRAINER.PROMPTSRC
        runs += base_to_new(eurosat, "KDPL_PromptSRC", TINY_KDPL, "out/KDPL_PromptSRC",
                            ["TRAINER.SCL.TEMPLATES_FILE", templates])
        runs += base_to_new(eurosat, "PromptKD_Teacher", "configs/trainers/PromptKD_Teacher/tiny_vit_wide_ep2_cpu.yaml",
                            "out/teacher")[:1]
        runs += base_to_new(eurosat, "PromptKD", "configs/trainers/PromptKD/tiny_vit_ep2_cpu.yaml", "out/PromptKD",
                            ["TRAINER.PROMPTKD.TEACHER_CKPT", os.path.join(fork, "out", "teacher", "train_base")])
    program = str(tmp_path / "run_fork.py")
    write(program, driver(runs))
    done = subprocess.run([sys.executable, program], cwd=fork, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count("RUN OK") == len(runs)
    assert "FORK DATASET datasets.eurosat.EuroSAT" in done.stdout  # the fork's own dataset class
    clip_dir = os.path.join(fork, "clip") if FORKS[kind]["vendored_clip"] else \
        os.path.dirname(__import__("clip").__file__)
    assert f"CLIP package: {os.path.join(clip_dir, '__init__.py')}" in done.stdout

    for argv in runs:
        out = os.path.join(fork, argv[argv.index("--output-dir") + 1])
        record = json.load(open(os.path.join(out, "results.json")))
        trainer = argv[argv.index("--trainer") + 1]
        subsample = argv[-1]
        assert (record["trainer"], record["subsample_classes"], record["num_classes"]) == (trainer, subsample, 2)
        assert record["eval_only"] == ("--eval-only" in argv)
        assert record["dataset"] == "EuroSAT" and 0.0 <= record["accuracy"] <= 100.0
    if kind == "promptsrc":
        assert os.path.isfile(os.path.join(fork, "out", "teacher", "train_base", "class_vectors.pt"))

    after = snapshot(fork)  # the fork's own files are untouched; only train.py gained one line
    changed = sorted(k for k in before if k != "train.py" and after.get(k, (None,))[0] != before[k][0])
    assert changed == []
    old, new = before["train.py"][0].decode().splitlines(), after["train.py"][0].decode().splitlines()
    assert [line for line in new if line not in old] == [adopt.import_line("kd").rstrip("\n")]
