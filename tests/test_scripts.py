"""Tests of scripts/ and configs/trainers/: launched commands, config names, train and test scripts agree on paths.

The KDPL reference test scripts looked in a directory its train scripts never wrote, and MaPLe's "_ep5_" yaml
trains 2 epochs (protocols.md §10). Here every script runs with DRY_RUN=1 (common.sh prints each train.py
command instead of running it); the printed commands are parsed and compared. A second group runs the scripts
for real in a scratch copy of scripts/ and configs/ with a fake interpreter, to check skip / resume / missing
checkpoint behaviour.
"""
from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]  # importable via tests/conftest.py

from tools.datasets_table import DATASETS, DG_TARGETS, XD_SOURCE, XD_TARGETS  # noqa: E402
from tools.results import classify  # noqa: E402

SCRIPTS = ROOT / "scripts"
ALL_SCRIPTS = sorted(SCRIPTS.rglob("*.sh"))
SOURCED = {"common.sh", "env.sh"}  # helpers, never executed
ENTRY_SCRIPTS = [p for p in ALL_SCRIPTS if p.name not in SOURCED]

KDPL_TRAINERS = ["KDPL_CoOp", "KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe", "KDPL_PromptSRC"]
DEFAULT_CFG = {  # kdpl.md §8: (base2new / few-shot, cross-dataset / DG)
    "KDPL_CoOp": ("vit_b32_ctxv1", "vit_b32_ctxv1"),
    "KDPL_CoCoOp": ("vit_b32_c4_ep10_batch1_ctxv1", "vit_b32_c4_ep10_batch1_ctxv1"),
    "KDPL_VPT": ("vit_b32_c2_ep5_batch4_4", "vit_b32_c2_ep5_batch4_4"),
    "KDPL_MaPLe": ("vit_b32_c2_ep5_batch4_2ctx", "vit_b32_c2_ep5_batch4_2ctx"),
    "KDPL_PromptSRC": ("vit_b32_c2_ep20_batch4_4+4ctx", "vit_b32_c2_ep20_batch4_4+4ctx_cross_datasets"),
}
CA_OPTS = ["TRAINER.KDPL.CLASS_AGNOSTIC", "True"]


@dataclass
class Call:
    """One printed train.py command, split into flags and trailing yacs opts."""

    flags: dict[str, str] = field(default_factory=dict)
    eval_only: bool = False
    opts: list[str] = field(default_factory=list)

    @property
    def out(self) -> str:
        return self.flags["--output-dir"]

    def opt(self, key: str) -> str | None:
        pairs = dict(zip(self.opts[::2], self.opts[1::2]))
        return pairs.get(key)


def parse_call(line: str) -> Call:
    tokens = shlex.split(line[len("[dry-run] "):])
    assert tokens[1] == "train.py", line
    call = Call()
    rest = iter(tokens[2:])
    for token in rest:
        if token == "--eval-only":
            call.eval_only = True
        elif token.startswith("--"):
            call.flags[token] = next(rest)
        else:
            call.opts.append(token)
    return call


def run_script(script: str, *args: str, cwd: Path = ROOT, check: bool = True, **env: str
               ) -> subprocess.CompletedProcess[str]:
    ours = {"TRAINER", "CFG", "CA", "SHOTS", "EXTRA_OPTS", "DATA", "OUTPUT", "PYTHON", "XD_SOURCE", "DRY_RUN",
            "TEACHER_CACHE_ROOT", "CACHE_LAUNCHER", "TEACHER_CKPT", "TEACHER_ROOT", "KDPL_CACHE_TAG"}
    full_env = {k: v for k, v in os.environ.items() if k not in ours}
    full_env.update(env)
    proc = subprocess.run(["bash", f"scripts/{script}", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, check=False)
    if check:
        assert proc.returncode == 0, f"{script} {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def dry_run(script: str, *args: str, **env: str) -> list[Call]:
    proc = run_script(script, *args, DRY_RUN="1", OUTPUT="out", **env)
    return [parse_call(line) for line in proc.stdout.splitlines() if line.startswith("[dry-run] ")]


def yaml_max_epoch(config_file: str) -> int:
    with open(ROOT / config_file) as f:
        return int(yaml.safe_load(f)["OPTIM"]["MAX_EPOCH"])


def check_common(call: Call, trainer: str, cfg: str, ca: bool) -> None:
    """Invariants of every KDPL command: standard flags, existing yaml, CA opts iff CA."""
    assert call.flags["--trainer"] == trainer
    assert call.flags["--config-file"] == f"configs/trainers/{trainer}/{cfg}.yaml"
    assert (ROOT / call.flags["--config-file"]).is_file()
    assert call.flags["--root"] == "/path/to/datasets"
    assert call.flags["--dataset-config-file"].startswith("configs/datasets/")
    assert (CA_OPTS[0] in call.opts) == ca
    if ca:
        assert call.opt(CA_OPTS[0]) == "True"
    tag = f"{trainer}-CA" if ca else trainer
    assert f"/{tag}/" in call.out + "/"


def check_test_loads(test: Call, train: Call) -> None:
    """A test run loads exactly the directory its train script wrote, at the yaml's MAX_EPOCH."""
    assert test.eval_only
    assert test.flags["--model-dir"] == train.out
    assert int(test.flags["--load-epoch"]) == yaml_max_epoch(train.flags["--config-file"])
    assert test.flags["--config-file"] == train.flags["--config-file"]
    assert test.flags["--seed"] == train.flags["--seed"]


# ----------------------------------------------------------------------------------------------- static checks


def test_entry_script_conventions() -> None:
    """Strict mode, executable, no hard-wired GPU or directory changes (the dry runs below check what they do)."""
    bad = []
    for script in ENTRY_SCRIPTS:
        text = script.read_text()
        if not text.startswith("#!/usr/bin/env bash\n") or "set -euo pipefail" not in text:
            bad.append(f"{script.name}: needs '#!/usr/bin/env bash' and 'set -euo pipefail'")
        if not os.access(script, os.X_OK):
            bad.append(f"{script.name}: not executable")
        for line in text.splitlines():
            code = line.split("#", 1)[0]
            if "cd .." in code or "CUDA_VISIBLE_DEVICES" in code:
                bad.append(f"{script.name}: {line.strip()}")
    assert not bad, bad


# every entry script, with the arguments a dry run gets (a new script must be added here: see the next test)
DRY_RUN_ARGS: dict[str, tuple[str, ...]] = {
    "demo.sh": (), "results.sh": ("out", "--protocol", "xd"),
    "dfkd/compare_modes.sh": ("pacs",), "dfkd/distill.sh": ("pacs", "1"), "dfkd/eval.sh": ("pacs", "1"),
    "dfkd/synthesize.sh": ("pacs",),
    "kdpl/base2new.sh": ("dtd", "1"), "kdpl/base2new_test.sh": ("dtd", "1"), "kdpl/base2new_train.sh": ("dtd", "1"),
    "kdpl/dg.sh": ("1",), "kdpl/few_shot.sh": ("dtd", "4", "1"), "kdpl/xd.sh": ("1",), "kdpl/xd_test.sh": ("dtd", "1"),
    "kdpl/xd_train.sh": ("1",),
    "promptkd/base2new.sh": ("dtd", "1"), "promptkd/base2new_test.sh": ("dtd", "1"),
    "promptkd/base2new_train.sh": ("dtd", "1"), "promptkd/teacher_train.sh": ("dtd", "1"),
    "promptkd/xd_test.sh": ("dtd", "1"), "promptkd/xd_train.sh": ("dtd", "1"),
    "zeroshot/base2new.sh": ("dtd",), "zeroshot/dg.sh": (), "zeroshot/xd.sh": (), "zeroshot/xd_test.sh": ("dtd",),
}
RECORDING_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$CALLS"
"""
LAUNCHED_MODULES = {"train.py", "tools.synthesize", "tools.build_teacher_cache", "datasets.synthetic",
                    "tools.results"}


def test_every_entry_script_is_dry_run() -> None:
    names = {str(p.relative_to(SCRIPTS)) for p in ENTRY_SCRIPTS}
    assert names - {"install_dassl.sh"} == set(DRY_RUN_ARGS), "add new scripts to DRY_RUN_ARGS"


def merged_cfg_keys() -> set[str] | None:
    """Every dotted key of Dassl's defaults plus ours; None without Dassl."""
    try:
        import trainers  # noqa: F401
        from dassl.config import get_cfg_default
    except ImportError:
        return None
    from trainers.config import extend_cfg

    keys: set[str] = set()

    def walk(node, prefix):
        for key, value in node.items():
            (walk(value, f"{prefix}{key}.") if isinstance(value, dict) else keys.add(f"{prefix}{key}"))
    walk(extend_cfg(get_cfg_default()), "")
    return keys


@pytest.mark.parametrize("script", sorted(DRY_RUN_ARGS))
def test_dry_run_launches_valid_commands(script: str, tmp_path: Path) -> None:
    """Each script, with DRY_RUN=1 and an interpreter that only records, launches known entry points with a
    registered trainer, an existing trainer yaml of that trainer, an existing dataset yaml, an output directory
    under OUTPUT ending in its seed, and yacs opts that are keys of the merged config."""
    fake = tmp_path / "python"
    fake.write_text(RECORDING_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls_file = tmp_path / "calls"
    proc = run_script(script, *DRY_RUN_ARGS[script], DRY_RUN="1", OUTPUT="out", PYTHON=str(fake),
                      CALLS=str(calls_file), DEMO=str(tmp_path / "demo"))
    commands = [shlex.split(line[len("[dry-run] "):]) for line in proc.stdout.splitlines()
                if line.startswith("[dry-run] ")]
    if calls_file.exists():
        commands += [[str(fake), *shlex.split(line)] for line in calls_file.read_text().splitlines()]
    assert commands, f"{script} launched nothing:\n{proc.stdout}\n{proc.stderr}"
    trainer_dirs = {d.name for d in (ROOT / "configs" / "trainers").iterdir() if d.is_dir()}
    cfg_keys = merged_cfg_keys()
    for tokens in commands:
        assert tokens[0] == str(fake), tokens  # PYTHON is honoured
        entry = tokens[2] if tokens[1] == "-m" else tokens[1]
        assert entry in LAUNCHED_MODULES, tokens
        if entry in ("datasets.synthetic", "tools.results"):
            continue
        rest = tokens[3 if tokens[1] == "-m" else 2:]
        flags: dict[str, str] = {}
        opts: list[str] = []
        items = iter(rest)
        for token in items:
            if token == "--eval-only":
                continue
            if token.startswith("--"):
                flags[token] = next(items)
            else:
                opts.append(token)
        trainer = flags["--trainer"]
        assert trainer in trainer_dirs, f"{script}: unknown trainer {trainer}"
        config = Path(flags["--config-file"])
        assert config.parent == Path("configs/trainers") / trainer and (ROOT / config).is_file(), \
            f"{script}: {config} is not an existing yaml of {trainer}"
        assert (ROOT / flags["--dataset-config-file"]).is_file(), flags["--dataset-config-file"]
        if "--output-dir" in flags:
            out = flags["--output-dir"]
            assert out.startswith(("out/", str(tmp_path / "demo"))), f"{script}: {out} is not under OUTPUT"
            assert out.endswith(f"/seed{flags['--seed']}"), out
        assert len(opts) % 2 == 0, f"{script}: odd yacs opts {opts}"
        if cfg_keys is not None:
            unknown = [k for k in opts[::2] if k not in cfg_keys]
            assert not unknown, f"{script} passes opts that are no config key: {unknown}"


def test_install_dassl_rejects_what_is_not_dassl(tmp_path: Path) -> None:
    """The installer stops, naming the file, before pip sees a wrong archive."""
    fake = tmp_path / "python"
    fake.write_text(RECORDING_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(tmp_path / "calls")}
    not_archive = tmp_path / "dassl.zip"
    not_archive.write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README").write_text("not dassl")
    empty = tmp_path / "empty.tar.gz"
    subprocess.run(["tar", "-czf", str(empty), "-C", str(tmp_path / "src"), "."], check=True)
    for source, message in ((not_archive, "is a file but not a .tar.gz"), (empty, "does not contain Dassl")):
        proc = subprocess.run(["bash", "scripts/install_dassl.sh", str(source)], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 2 and message in proc.stderr and str(source) in proc.stderr, proc.stderr
    assert not (tmp_path / "calls").exists()  # pip never ran


def test_common_defaults() -> None:
    text = (SCRIPTS / "common.sh").read_text()
    for default in ("DATA=${DATA:-/path/to/datasets}", "OUTPUT=${OUTPUT:-output}", "PYTHON=${PYTHON:-python}"):
        assert default in text
    assert "CUDA_VISIBLE_DEVICES" not in text


def test_script_dataset_lists_match_datasets_table() -> None:
    calls = dry_run("kdpl/xd.sh", "1")
    assert [c.flags["--dataset-config-file"] for c in calls[1:]] == \
        [f"configs/datasets/{d}.yaml" for d in XD_TARGETS]
    calls = dry_run("kdpl/dg.sh", "1")
    assert [c.flags["--dataset-config-file"] for c in calls[1:]] == \
        [f"configs/datasets/{d}.yaml" for d in (XD_SOURCE, *DG_TARGETS)]


def test_dataset_configs_exist() -> None:
    folder = ROOT / "configs" / "datasets"
    for key, name in DATASETS.items():
        path = folder / f"{key}.yaml"
        assert path.is_file(), f"scripts use dataset key {key!r} but {path} is missing"
        with open(path) as f:
            assert yaml.safe_load(f)["DATASET"]["NAME"] == name, path


# ----------------------------------------------------------------------------------------------- dry runs


@pytest.mark.parametrize("ca", [0, 1])
@pytest.mark.parametrize("trainer", KDPL_TRAINERS)
def test_base2new_train_and_test_agree(trainer: str, ca: int) -> None:
    env = {"TRAINER": trainer, "CA": str(ca)}
    cfg = DEFAULT_CFG[trainer][0]
    (train,) = dry_run("kdpl/base2new_train.sh", "eurosat", "2", **env)
    tests = dry_run("kdpl/base2new_test.sh", "eurosat", "2", **env)
    assert [t.opt("DATASET.SUBSAMPLE_CLASSES") for t in tests] == ["base", "new"]
    assert train.opt("DATASET.SUBSAMPLE_CLASSES") == "base" and not train.eval_only
    tag = f"{trainer}-CA" if ca else trainer
    assert train.out == f"out/base2new/train_base/eurosat/shots_16/{tag}/{cfg}/seed2"
    for test, sub in zip(tests, ("base", "new")):
        check_common(test, trainer, cfg, bool(ca))
        check_test_loads(test, train)
        assert test.out == train.out.replace("/train_base/", f"/test_{sub}/")
        assert test.opt("DATASET.NUM_SHOTS") == "16"
    check_common(train, trainer, cfg, bool(ca))
    # the one-shot script issues the same three commands
    combined = dry_run("kdpl/base2new.sh", "eurosat", "2", **env)
    assert [c.flags for c in combined] == [c.flags for c in (train, *tests)]
    # and the aggregator files them where the tables expect them
    where = classify(Path(tests[1].out))
    assert where is not None
    assert (where["layout"], where["phase"], where["dataset"], where["tag"], where["cfg"], where["shots"],
            where["seed"]) == ("b2n", "test_new", "eurosat", tag, cfg, 16, 2)


@pytest.mark.parametrize("ca", [0, 1])
@pytest.mark.parametrize("trainer", KDPL_TRAINERS)
def test_xd_train_and_test_agree(trainer: str, ca: int) -> None:
    env = {"TRAINER": trainer, "CA": str(ca)}
    cfg = DEFAULT_CFG[trainer][1]
    (train,) = dry_run("kdpl/xd_train.sh", "3", **env)
    (explicit,) = dry_run("kdpl/xd_train.sh", "imagenet", "3", **env)
    assert explicit.flags == train.flags
    tag = f"{trainer}-CA" if ca else trainer
    assert train.out == f"out/imagenet/{tag}/{cfg}_16shots/seed3"
    assert train.opt("DATASET.SUBSAMPLE_CLASSES") == "all"
    check_common(train, trainer, cfg, bool(ca))
    (test,) = dry_run("kdpl/xd_test.sh", "dtd", "3", **env)
    check_common(test, trainer, cfg, bool(ca))
    check_test_loads(test, train)
    assert test.out == f"out/evaluation/{tag}/{cfg}_16shots/dtd/seed3"
    for script, targets in (("kdpl/xd.sh", XD_TARGETS), ("kdpl/dg.sh", (XD_SOURCE, *DG_TARGETS))):
        first, *rest = dry_run(script, "3", **env)
        assert first.flags == train.flags
        assert len(rest) == len(targets)
        for call, dataset in zip(rest, targets):
            check_common(call, trainer, cfg, bool(ca))
            check_test_loads(call, train)
            assert call.out == f"out/evaluation/{tag}/{cfg}_16shots/{dataset}/seed3"
            where = classify(Path(call.out))
            assert where is not None and (where["layout"], where["dataset"], where["cfg"]) == ("xd_eval", dataset, cfg)


@pytest.mark.parametrize("ca", [0, 1])
@pytest.mark.parametrize("trainer", KDPL_TRAINERS)
def test_few_shot_paths(trainer: str, ca: int) -> None:
    env = {"TRAINER": trainer, "CA": str(ca)}
    cfg = DEFAULT_CFG[trainer][0]
    calls = dry_run("kdpl/few_shot.sh", "dtd", "4", **env)
    assert [c.flags["--seed"] for c in calls] == ["1", "2", "3"]
    tag = f"{trainer}-CA" if ca else trainer
    for call in calls:
        check_common(call, trainer, cfg, bool(ca))
        assert call.out == f"out/dtd/{tag}/{cfg}_4shots/seed{call.flags['--seed']}"
        assert call.opt("DATASET.NUM_SHOTS") == "4" and call.opt("DATASET.SUBSAMPLE_CLASSES") == "all"
        assert not call.eval_only
    (single,) = dry_run("kdpl/few_shot.sh", "dtd", "8", "0", **env)
    assert single.flags["--seed"] == "0" and single.out.endswith(f"{cfg}_8shots/seed0")


def test_cfg_env_overrides_default() -> None:
    (call,) = dry_run("kdpl/base2new_train.sh", "dtd", "1", TRAINER="KDPL_CoOp", CFG="rn50_ctxv1")
    assert call.flags["--config-file"] == "configs/trainers/KDPL_CoOp/rn50_ctxv1.yaml"
    (call,) = dry_run("kdpl/xd_train.sh", "1", TRAINER="KDPL_CoCoOp", CFG="rn50_c4_ep10_batch1_ctxv1")
    assert call.out.endswith("/KDPL_CoCoOp/rn50_c4_ep10_batch1_ctxv1_16shots/seed1")


def test_extra_opts_appended_and_epoch_override_followed() -> None:
    extra = "OPTIM.MAX_EPOCH 2 MODEL.BACKBONE.NAME tiny"
    (train,) = dry_run("kdpl/base2new_train.sh", "dtd", "1", CA="1", EXTRA_OPTS=extra)
    assert train.opts[-4:] == extra.split()
    assert train.opts.index(CA_OPTS[0]) < train.opts.index("OPTIM.MAX_EPOCH")
    for test in dry_run("kdpl/base2new_test.sh", "dtd", "1", CA="1", EXTRA_OPTS=extra):
        assert test.flags["--load-epoch"] == "2"  # the checkpoint training really wrote last
        assert test.opts[-4:] == extra.split()


def test_shell_reads_max_epoch_like_yaml() -> None:
    """common.sh's max_epoch (awk) against a YAML parser, on every trainer yaml."""
    for config in sorted((ROOT / "configs" / "trainers").glob("KDPL_*/*.yaml")):
        rel = config.relative_to(ROOT)
        proc = subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/common.sh; max_epoch '{rel}'"],
                              cwd=ROOT, capture_output=True, text=True, check=True,
                              env={**os.environ, "EXTRA_OPTS": ""})
        assert int(proc.stdout.strip()) == yaml_max_epoch(str(rel)), rel


@pytest.mark.parametrize("cfg", ["vit_b32", "rn50"])
def test_zeroshot_scripts(cfg: str) -> None:
    calls = dry_run("zeroshot/base2new.sh", "dtd", CFG=cfg)
    assert [c.out for c in calls] == [f"out/base2new/test_{s}/dtd/shots_0/ZeroshotCLIP_KD/{cfg}/seed1"
                                      for s in ("base", "new")]
    calls += dry_run("zeroshot/xd.sh", CFG=cfg) + dry_run("zeroshot/dg.sh", "2", CFG=cfg)
    calls += dry_run("zeroshot/xd_test.sh", "eurosat", "3", CFG=cfg)
    for call in calls:
        assert call.eval_only and "--model-dir" not in call.flags and "--load-epoch" not in call.flags
        assert call.flags["--trainer"] == "ZeroshotCLIP_KD"
        assert (ROOT / call.flags["--config-file"]).is_file()
        assert call.opt("DATASET.NUM_SHOTS") == "0"
    xd_dirs = [c.out for c in calls if "/evaluation/" in c.out]
    assert f"out/evaluation/ZeroshotCLIP_KD/{cfg}_0shots/imagenet/seed1" in xd_dirs
    assert len(xd_dirs) == 1 + len(XD_TARGETS) + 1 + len(DG_TARGETS) + 1


@pytest.mark.parametrize("script, args, message", [
    ("kdpl/base2new.sh", ("dtd",), "usage"),
    ("kdpl/base2new_train.sh", ("dtd", "x"), "SEED must be"),
    ("kdpl/few_shot.sh", ("dtd", "0"), "SHOTS must be"),
    ("kdpl/xd.sh", ("1",), "CA must be 0 or 1"),
])
def test_bad_arguments_fail_clearly(script: str, args: tuple[str, ...], message: str) -> None:
    proc = run_script(script, *args, check=False, DRY_RUN="1", CA="2" if "CA" in message else "0")
    assert proc.returncode != 0 and message in proc.stderr


def test_unknown_trainer_needs_cfg() -> None:
    proc = run_script("kdpl/xd.sh", "1", check=False, DRY_RUN="1", TRAINER="MyKDPL")
    assert proc.returncode != 0 and "set CFG" in proc.stderr


# ----------------------------------------------------------------------------------------------- real runs


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: records the call, writes a checkpoint and results.json into --output-dir.
printf '%s\\n' "$*" >> "$CALLS"
out=""; prev=""; epoch=""
for a in "$@"; do
    [[ $prev == --output-dir ]] && out=$a
    [[ $prev == OPTIM.MAX_EPOCH ]] && epoch=$a
    prev=$a
done
mkdir -p "$out/prompt_learner"
touch "$out/prompt_learner/model.pth.tar-${epoch:-50}"
echo '{"accuracy": 50.0}' > "$out/results.json"
"""


@pytest.fixture()
def scratch_repo(tmp_path: Path) -> Path:
    """scripts/ and configs/trainers/ copied, fake dataset yamls, a fake interpreter: runs without torch or data."""
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    shutil.copytree(ROOT / "configs" / "trainers", tmp_path / "configs" / "trainers")
    (tmp_path / "configs" / "datasets").mkdir()
    for key, name in DATASETS.items():
        (tmp_path / "configs" / "datasets" / f"{key}.yaml").write_text(f"DATASET:\n  NAME: \"{name}\"\n")
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def real_run(repo: Path, script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_script(script, *args, cwd=repo, check=check, PYTHON=str(repo / "fake_python"),
                      CALLS=str(repo / "calls.txt"), OUTPUT="output", DATA="/data")


def calls(repo: Path) -> list[str]:
    path = repo / "calls.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_skip_finished_and_resume_unfinished(scratch_repo: Path) -> None:
    real_run(scratch_repo, "kdpl/base2new.sh", "eurosat", "1")
    assert len(calls(scratch_repo)) == 3
    second = real_run(scratch_repo, "kdpl/base2new.sh", "eurosat", "1")
    assert calls(scratch_repo) == [] and second.stdout.count("skip: results exist") == 3
    test_new = scratch_repo / "output/base2new/test_new/eurosat/shots_16/KDPL_CoOp/vit_b32_ctxv1/seed1"
    (test_new / "results.json").unlink()
    third = real_run(scratch_repo, "kdpl/base2new.sh", "eurosat", "1")
    (call,) = calls(scratch_repo)
    assert f"--output-dir output/{test_new.relative_to(scratch_repo / 'output').as_posix()}" in "--output-dir " + \
        call.split("--output-dir ", 1)[1]
    assert "resume:" in third.stdout
    (test_new / "results.json").write_text('{"accur')  # damaged: rerun it, never skip it
    fourth = real_run(scratch_repo, "kdpl/base2new.sh", "eurosat", "1")
    assert len(calls(scratch_repo)) == 1 and fourth.stdout.count("skip: results exist") == 2
    assert f"{test_new.relative_to(scratch_repo).as_posix()}/results.json has no accuracy" in fourth.stderr


def test_test_without_checkpoint_fails_clearly(scratch_repo: Path) -> None:
    proc = real_run(scratch_repo, "kdpl/xd_test.sh", "dtd", "1", check=False)
    assert proc.returncode != 0
    assert "no checkpoint model.pth.tar-50" in proc.stderr and "run the matching train script" in proc.stderr
    assert calls(scratch_repo) == []
    real_run(scratch_repo, "kdpl/xd.sh", "1")
    assert len(calls(scratch_repo)) == 1 + len(XD_TARGETS)


# ----------------------------------------------------------------------------------------------- configs

EXPECTED_CONFIGS = {  # kdpl.md §7: (backbone, batch, LR, epochs, print freq, trainer section)
    "KDPL_CoOp/rn50_ctxv1": ("RN50", 32, 0.002, 50, 5, "COOP"),
    "KDPL_CoOp/vit_b32_ctxv1": ("ViT-B/32", 32, 0.002, 50, 5, "COOP"),
    "KDPL_CoCoOp/rn50_c4_ep10_batch1_ctxv1": ("RN50", 1, 0.002, 10, 20, "COCOOP"),
    "KDPL_CoCoOp/vit_b32_c4_ep10_batch1_ctxv1": ("ViT-B/32", 1, 0.002, 10, 20, "COCOOP"),
    "KDPL_VPT/vit_b32_c2_ep5_batch4_4": ("ViT-B/32", 4, 0.0025, 5, 20, "VPT"),
    "KDPL_MaPLe/vit_b32_c2_ep5_batch4_2ctx": ("ViT-B/32", 4, 0.0035, 5, 20, "MAPLE"),
    "KDPL_PromptSRC/vit_b32_c2_ep20_batch4_4+4ctx": ("ViT-B/32", 4, 0.0025, 20, 20, "PROMPTSRC"),
    "KDPL_PromptSRC/vit_b32_c2_ep20_batch4_4+4ctx_cross_datasets": ("ViT-B/32", 4, 0.0025, 20, 20, "PROMPTSRC"),
}
TRAINER_SECTIONS = {
    "COOP": {"N_CTX": 4, "CSC": False, "CTX_INIT": "a photo of a", "CLASS_TOKEN_POSITION": "end", "PREC": "fp16"},
    "COCOOP": {"N_CTX": 4, "CTX_INIT": "a photo of a", "PREC": "fp16"},
    "VPT": {"N_CTX_VISION": 8, "PROMPT_DEPTH_VISION": 12, "CTX_INIT": "a photo of a", "PREC": "fp16"},
    "MAPLE": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9},
    "PROMPTSRC": {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
                  "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25, "IMAGE_LOSS_WEIGHT": 10,
                  "GPA_MEAN": 15, "GPA_STD": 1},
}
# the reference-value yamls; tiny_* yamls (demo and tests, tiny random CLIPs) are checked by the integration tests
OWN_YAMLS = sorted(p for p in [*(ROOT / "configs" / "trainers").glob("KDPL_*/*.yaml"),
                               *(ROOT / "configs" / "trainers" / "ZeroshotCLIP_KD").glob("*.yaml")]
                   if not p.name.startswith("tiny_"))


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def test_exactly_the_expected_kdpl_configs() -> None:
    found = {f"{p.parent.name}/{p.stem}" for p in OWN_YAMLS if p.parent.name.startswith("KDPL_")}
    assert found == set(EXPECTED_CONFIGS)
    assert {p.name for p in (ROOT / "configs/trainers/ZeroshotCLIP_KD").glob("*.yaml")} == {"vit_b32.yaml", "rn50.yaml"}


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIGS))
def test_kdpl_config_values(name: str) -> None:
    backbone, batch, lr, epochs, freq, section = EXPECTED_CONFIGS[name]
    cfg = load_yaml(ROOT / "configs" / "trainers" / f"{name}.yaml")
    assert cfg["MODEL"]["BACKBONE"]["NAME"] == backbone
    assert cfg["DATALOADER"] == {"TRAIN_X": {"BATCH_SIZE": batch}, "TEST": {"BATCH_SIZE": 100}, "NUM_WORKERS": 8}
    assert cfg["INPUT"]["SIZE"] == "(224, 224)" and cfg["INPUT"]["INTERPOLATION"] == "bicubic"
    assert cfg["INPUT"]["PIXEL_MEAN"] == [0.48145466, 0.4578275, 0.40821073]
    assert cfg["INPUT"]["PIXEL_STD"] == [0.26862954, 0.26130258, 0.27577711]
    assert cfg["INPUT"]["TRANSFORMS"] == ["random_resized_crop", "random_flip", "normalize"]
    optim = cfg["OPTIM"]
    assert (optim["NAME"], optim["LR"], optim["MAX_EPOCH"], optim["LR_SCHEDULER"]) == ("sgd", lr, epochs, "cosine")
    assert (optim["WARMUP_EPOCH"], optim["WARMUP_TYPE"], float(optim["WARMUP_CONS_LR"])) == (1, "constant", 1e-5)
    assert cfg["TRAIN"]["PRINT_FREQ"] == freq
    assert cfg["TEST"]["FINAL_MODEL"] == "last_step"
    expected = dict(TRAINER_SECTIONS[section])
    if name.endswith("_cross_datasets"):
        expected.update(PROMPT_DEPTH_VISION=3, PROMPT_DEPTH_TEXT=3, GPA_MEAN=6, GPA_STD=10)
    assert cfg["TRAINER"] == {section: expected}
    assert f"_ep{epochs}_" in name or "_ep" not in name  # names must not lie about the epochs


ALL_TRAINER_YAMLS = sorted((ROOT / "configs" / "trainers").glob("*/*.yaml"))


def yaml_leaves(node, prefix: str = ""):
    """(dotted key, value) for every leaf of a loaded yaml mapping."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from yaml_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_every_trainer_folder_has_yamls() -> None:
    """The glob below finds each trainer's folder (a moved folder would silently drop out of the merge test)."""
    assert {p.parent.name for p in ALL_TRAINER_YAMLS} == \
        {d.name for d in (ROOT / "configs" / "trainers").iterdir() if d.is_dir()}
    assert len(ALL_TRAINER_YAMLS) >= 24


@pytest.mark.parametrize("path", ALL_TRAINER_YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_merge_into_trainer_defaults(path: Path) -> None:
    """Dataset yaml + trainer yaml merge into Dassl's defaults plus our keys (yacs rejects unknown keys and type
    mismatches), and every value the yaml sets is the merged config's value."""
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README)")
    import trainers  # noqa: F401  (registers every trainer's keys)
    from dassl.config import get_cfg_default
    from yacs.config import CfgNode as CN

    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(str(ROOT / "configs" / "datasets" / "eurosat.yaml"))
    cfg.merge_from_file(str(path))
    with open(path) as f:
        expected = yaml.safe_load(f)
    leaves = list(yaml_leaves(expected))
    assert leaves, f"{path} sets nothing"
    for key, value in leaves:
        merged = cfg
        for part in key.split("."):
            merged = merged[part]
        value = CN._decode_cfg_value(value)  # as the merge decodes it: "(224, 224)" -> (224, 224)
        if isinstance(value, (list, tuple)):
            value, merged = list(value), list(merged)
        assert merged == value, f"{path}: {key} is {merged!r} after the merge, the yaml says {value!r}"


@pytest.mark.parametrize("script, node, tail, cache_tail", [
    ("kdpl/base2new.sh", "KDPL", "base2new/train_base/eurosat/shots_16/KDPL_CoOp/vit_b32_ctxv1/seed1",
     "kdpl/eurosat/base/shots_16/seed1/teacher/classes"),
    ("promptkd/base2new.sh", "PROMPTKD",
     "base2new/train_base/eurosat/shots_0/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx/seed1",
     "base2new/train_base/eurosat/shots_0/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx/seed1"),
])
def test_teacher_cache_root_builds_the_cache_then_trains_from_it(script, node, tail, cache_tail):
    proc = run_script(script, "eurosat", "1", DRY_RUN="1", OUTPUT="out", TEACHER_CACHE_ROOT="cache",
                      CACHE_LAUNCHER="torchrun --nproc_per_node 2")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[dry-run] ")]
    build = shlex.split(lines[0][len("[dry-run] "):])
    train, tests = parse_call(lines[1]), [parse_call(line) for line in lines[2:]]
    assert build[:5] == ["torchrun", "--nproc_per_node", "2", "-m", "tools.build_teacher_cache"]
    cache_dir = build[build.index("--cache-dir") + 1]
    assert cache_dir == f"cache/{cache_tail}" and train.out == f"out/{tail}"
    # the builder gets the training run's exact arguments and opts
    for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file"):
        assert build[build.index(flag) + 1] == train.flags[flag]
    key = f"TRAINER.{node}.TEACHER_CACHE"
    assert build[build.index("--cache-dir") + 2:] == train.opts[:-2] and train.opts[-2:] == [key, cache_dir]
    assert len(tests) == 2 and all(t.eval_only and key not in t.opts for t in tests)


def test_kdpl_trainers_share_one_teacher_cache_per_dataset_seed_and_teacher():
    """The KDPL cache path holds no trainer, CFG or student option: one teacher pass serves the whole table."""
    def cache_dir(script: str, *args: str, **env: str) -> str:
        proc = run_script(script, *args, DRY_RUN="1", OUTPUT="out", TEACHER_CACHE_ROOT="cache", **env)
        build = shlex.split(proc.stdout.splitlines()[0][len("[dry-run] "):])
        assert build[build.index("-m") + 1] == "tools.build_teacher_cache"
        return build[build.index("--cache-dir") + 1]

    coop = cache_dir("kdpl/base2new_train.sh", "eurosat", "1")
    assert coop == "cache/kdpl/eurosat/base/shots_16/seed1/teacher/classes"
    for trainer in ("KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe", "KDPL_PromptSRC"):
        assert cache_dir("kdpl/base2new_train.sh", "eurosat", "1", TRAINER=trainer) == coop
    assert cache_dir("kdpl/base2new_train.sh", "eurosat", "1", CFG="rn50_ctxv1", EXTRA_OPTS="OPTIM.LR 0.1") == coop
    others = {cache_dir("kdpl/base2new_train.sh", "eurosat", "2"),
              cache_dir("kdpl/base2new_train.sh", "eurosat", "1", CA="1"),
              cache_dir("kdpl/base2new_train.sh", "eurosat", "1", SHOTS="4"),
              cache_dir("kdpl/base2new_train.sh", "dtd", "1"),
              cache_dir("kdpl/xd_train.sh", "1"),
              cache_dir("kdpl/base2new_train.sh", "eurosat", "1", EXTRA_OPTS="TRAINER.KDPL.TEACHER ViT-L/14"),
              cache_dir("kdpl/base2new_train.sh", "eurosat", "1", KDPL_CACHE_TAG="dfn5b-h14")}
    assert len(others) == 7 and coop not in others
    assert "cache/kdpl/imagenet/all/shots_16/seed1/teacher/classes" in others


def test_teacher_cache_root_is_ignored_where_there_is_no_teacher_cache():
    proc = run_script("promptkd/teacher_train.sh", "eurosat", "1", DRY_RUN="1", OUTPUT="out",
                      TEACHER_CACHE_ROOT="cache")
    assert "TEACHER_CACHE_ROOT ignored: PromptKD_Teacher" in proc.stdout
    calls = [parse_call(line) for line in proc.stdout.splitlines() if line.startswith("[dry-run] ")]
    assert len(calls) == 3 and not any("TEACHER_CACHE" in o for c in calls for o in c.opts)  # train, test base, new
