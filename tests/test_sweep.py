"""tools.sweep: jobs from the protocol scripts, the local executor (order, GPUs, skip, resume, failures), the Slurm
job arrays submitit writes (without a cluster), and one real tiny sweep that is interrupted and resumed.

The fast tests run the real scripts with a fake interpreter (as tests/test_scripts.py does): it records each call and
writes the files a finished run leaves. Only the last test trains (tiny CLIPs, one epoch, 2 datasets x 2 seeds).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tools import sweep, sweep_exec
from tools.sweep_worker import Job, list_commands, runs_in_process

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: records the call (start, end, GPUs, output dir), writes a checkpoint and results.json.
start=$(date +%s.%N)
out=""; prev=""; epoch=""
for a in "$@"; do
    [[ $prev == --output-dir ]] && out=$a
    [[ $prev == OPTIM.MAX_EPOCH ]] && epoch=$a
    prev=$a
done
if [[ -n ${FAIL_MATCH:-} && "$*" == *"${FAIL_MATCH}"* ]]; then echo "fake failure" >&2; exit 3; fi
sleep "${FAKE_SLEEP:-0}"
mkdir -p "$out/prompt_learner"
touch "$out/prompt_learner/model.pth.tar-${epoch:-50}"
echo '{"accuracy": 50.0}' > "$out/results.json"
printf '%s\\t%s\\t%s\\t%s\\n' "$start" "$(date +%s.%N)" "${CUDA_VISIBLE_DEVICES:-none}" "$out" >> "$CALLS"
"""


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch) -> Path:
    """A fake interpreter as PYTHON, its call log as CALLS; returns the call log path."""
    script = tmp_path / "fake_python"
    script.write_text(FAKE_PYTHON)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.tsv"
    monkeypatch.setenv("PYTHON", str(script))
    monkeypatch.setenv("CALLS", str(calls))
    for var in ("TRAINER", "CFG", "CA", "SHOTS", "EXTRA_OPTS", "TEACHER_CACHE_ROOT", "DRY_RUN", "FAIL_MATCH"):
        monkeypatch.delenv(var, raising=False)
    return calls


def read_calls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    path.unlink()
    return [{"start": float(a), "end": float(b), "gpu": g, "out": o} for a, b, g, o in rows]


def base_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--protocol", "base2new", "--trainer", "KDPL_CoOp", "--datasets", "eurosat", "dtd", "--seeds", "1", "2",
            "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"), *extra]


def phase_of(out: str) -> tuple[str, str, str]:
    parts = Path(out).parts  # .../base2new/PHASE/DATASET/shots_K/TAG/CFG/seedS
    return parts[-6], parts[-5], parts[-1]


# ----------------------------------------------------------------------------------------------- planning


def test_jobs_and_commands_come_from_the_scripts(fake, tmp_path):
    """The job's listing is exactly the script's DRY_RUN output; a test job waits for its own training job."""
    args = sweep.build_parser().parse_args(base_args(tmp_path))
    jobs, considered = sweep.plan(args)
    assert [j.stage for j in jobs] == ["train"] * 4 + ["test"] * 4
    train = next(j for j in jobs if j.name == "train:KDPL_CoOp:dtd:seed2")
    test = next(j for j in jobs if j.name == "test:KDPL_CoOp:dtd:seed2")
    assert (train.script, train.args) == ("kdpl/base2new_train.sh", ["dtd", "2"])
    assert test.after == [train.name]
    again = list_commands(train.script, train.args, train.env)
    assert train.commands == again.commands and len(train.commands) == 1
    (argv,) = train.commands
    assert argv[0] == str(tmp_path / "fake_python") and argv[1] == "train.py"
    assert argv[argv.index("--output-dir") + 1] == str(
        tmp_path / "out/base2new/train_base/dtd/shots_16/KDPL_CoOp/vit_b32_ctxv1/seed2")
    assert [c[c.index("DATASET.SUBSAMPLE_CLASSES") + 1] for c in test.commands] == ["base", "new"]
    assert not runs_in_process(argv)  # another interpreter: started as it is


def test_protocols_plan_their_stages(fake, tmp_path):
    def stages(*argv: str) -> dict[str, list[str]]:
        args = sweep.build_parser().parse_args(["--data", "/d", "--output", str(tmp_path / "o"), *argv])
        jobs, _ = sweep.plan(args)
        out: dict[str, list[str]] = {}
        for job in jobs:
            out.setdefault(job.stage, []).append(job.name)
        return out

    xd = stages("--protocol", "xd", "--trainer", "KDPL_CoOp", "--seeds", "1", "--teacher-cache", str(tmp_path / "c"))
    assert xd["cache"] == ["cache:KDPL_CoOp:imagenet:seed1"] and xd["train"] == ["train:KDPL_CoOp:imagenet:seed1"]
    assert len(xd["test"]) == 10  # the 10 cross-dataset targets
    pkd = stages("--protocol", "base2new", "--trainer", "PromptKD", "--datasets", "dtd", "--seeds", "1", "2")
    assert pkd["teacher"] == ["teacher:PromptKD_Teacher:dtd:seed1"]  # one teacher (TEACHER_SEED) for both seeds
    assert len(pkd["train"]) == 2 and len(pkd["test"]) == 2
    dfkd = stages("--protocol", "dfkd", "--trainer", "dfkd", "--datasets", "pacs", "--seeds", "1")
    assert len(dfkd["synthesize"]) == 4 and len(dfkd["train"]) == 4 and dfkd["test"] == ["test:CLIP_teacher:pacs:seed1"]
    # the five KDPL trainers share one teacher cache per dataset and seed: their cache jobs are chained, so the
    # teacher runs once (the first job) and the later ones add only their student's part
    args = sweep.build_parser().parse_args(["--data", "/d", "--output", str(tmp_path / "o"), "--protocol", "xd",
                                            "--trainer", "kdpl", "--seeds", "1", "--teacher-cache", str(tmp_path)])
    caches = [j for j in sweep.plan(args)[0] if j.stage == "cache"]
    assert len(caches) == 5 and caches[0].after == []
    assert all(later.after == [earlier.name] for earlier, later in zip(caches, caches[1:]))
    few = stages("--protocol", "fewshot", "--trainer", "KDPL_VPT", "--datasets", "dtd", "--seeds", "1")
    assert few["train"] == [f"train:KDPL_VPT:dtd:{k}shots:seed1" for k in (1, 2, 4, 8, 16)]


def test_bad_requests_fail_clearly(fake, tmp_path, capsys):
    assert sweep.main(base_args(tmp_path, "--trainer", "Foo")) == 2
    assert "--trainer Foo: no protocol scripts" in capsys.readouterr().err
    assert sweep.main(["--protocol", "dfkd", "--trainer", "KDPL_CoOp", "--data", "/d"]) == 2
    assert "does not apply to KDPL_CoOp" in capsys.readouterr().err
    assert sweep.main(base_args(tmp_path, "--datasets", "nope")) == 2
    assert "no configs/datasets/<key>.yaml for nope" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- local executor


def test_local_sweep_skips_finished_and_resumes_what_is_missing(fake, tmp_path, capsys):
    assert sweep.main(base_args(tmp_path)) == 0
    calls = read_calls(fake)
    assert len(calls) == 12
    ends = {phase_of(c["out"]): c["end"] for c in calls}
    for c in calls:  # every test after its own training run
        phase, dataset, seed = phase_of(c["out"])
        if phase != "train_base":
            assert c["start"] >= ends[("train_base", dataset, seed)]
    out = capsys.readouterr()
    assert "| EuroSAT |" in out.out and "| DTD |" in out.out  # the results table at the end
    assert "12 command(s) to run" in out.err

    assert sweep.main(base_args(tmp_path)) == 0  # all finished: nothing runs
    assert read_calls(fake) == []
    assert "0 command(s) to run (0 resuming), 12 run(s) already finished" in capsys.readouterr().err

    # interrupted: a training run without results.json (its dir exists) and a missing test
    seed2 = tmp_path / "out/base2new/{}/dtd/shots_16/KDPL_CoOp/vit_b32_ctxv1/seed2"
    (Path(str(seed2).format("train_base")) / "results.json").unlink()
    shutil.rmtree(str(seed2).format("test_new"))
    assert sweep.main(base_args(tmp_path)) == 0
    assert sorted(phase_of(c["out"]) for c in read_calls(fake)) == [("test_new", "dtd", "seed2"),
                                                                     ("train_base", "dtd", "seed2")]
    assert "2 command(s) to run (1 resuming), 10 run(s) already finished" in capsys.readouterr().err


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_sweep_and_the_same_command_finishes_it(fake, tmp_path, signame):
    """A real interruption (Ctrl-C or kill while a run is going): the running command is stopped, nothing is left
    half-done that looks finished, and the rerun runs exactly what had not finished."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "FAKE_SLEEP": "1"}
    # as from a terminal: a test session started in the background of a non-interactive shell ignores SIGINT, and an
    # ignored signal stays ignored across exec (Unix semantics, which the sweep keeps)
    proc = subprocess.Popen([sys.executable, "-m", "tools.sweep", *base_args(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and (not fake.exists() or len(fake.read_text().splitlines()) < 2):
        time.sleep(0.1)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: rerun the same command to resume" in err, (proc.returncode, err)
    first = read_calls(fake)
    assert 2 <= len(first) < 12
    assert sweep.main(base_args(tmp_path)) == 0
    second = read_calls(fake)
    assert sorted(c["out"] for c in first + second) == sorted({c["out"] for c in first + second})  # none twice
    assert len(first) + len(second) == 12


def test_local_gpus_run_jobs_in_parallel(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.6")
    args = base_args(tmp_path, "--gpus", "0,1", "--datasets", "eurosat", "dtd", "--seeds", "1")
    assert sweep.main(args) == 0
    calls = read_calls(fake)
    assert len(calls) == 6 and {c["gpu"] for c in calls} == {"0", "1"}
    overlapping = [(a, b) for a in calls for b in calls
                   if a is not b and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping and all(a["gpu"] != b["gpu"] for a, b in overlapping)  # two at once, never on one GPU


def test_a_failed_job_blocks_only_its_dependents(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAIL_MATCH", "train_base/dtd")
    assert sweep.main(base_args(tmp_path, "--seeds", "1")) == 1
    ran = sorted(phase_of(c["out"]) for c in read_calls(fake))
    assert ran == [("test_base", "eurosat", "seed1"), ("test_new", "eurosat", "seed1"),
                   ("train_base", "eurosat", "seed1")]
    err = capsys.readouterr().err
    log = tmp_path / "out/sweep/logs/train_KDPL_CoOp_dtd_seed1.log"
    assert f"failed: train:KDPL_CoOp:dtd:seed1" in err and str(log) in err and "fake failure" in log.read_text()
    assert "blocked: test:KDPL_CoOp:dtd:seed1" in err and "rerun the same command to resume" in err


# ----------------------------------------------------------------------------------------------- slurm executor


class FakeSlurm:
    """Stands in for sbatch (submitit's CommandFunction) and sacct (its watcher's check_output), as submitit's own
    tests mock Slurm: job ids from 101, every job in ``state``."""

    def __init__(self) -> None:
        self.next_id = 100
        self.submitted: list[Path] = []
        self.state = "RUNNING"

    def command_function(self, command, *args, **kwargs):
        assert command[0] == "sbatch", command
        self.submitted.append(Path(command[1]))
        self.next_id += 1
        return lambda: f"Submitted batch job {self.next_id}\n"

    def check_output(self, command, *args, **kwargs) -> bytes:
        assert command[0] == "sacct", command
        ids = range(101, self.next_id + 1)
        rows = [f"{i}_{t}|{self.state}|node" for i in ids for t in range(8)]
        return ("JobID|State|NodeList\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture()
def fake_slurm(monkeypatch) -> FakeSlurm:
    import submitit.core.core
    import submitit.core.utils
    from submitit.slurm.slurm import SlurmExecutor, SlurmJob

    slurm = FakeSlurm()
    monkeypatch.setattr(submitit.core.utils, "CommandFunction", slurm.command_function)
    monkeypatch.setattr(submitit.core.core.subprocess, "check_output", slurm.check_output)
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is here"
    SlurmJob.watcher.clear()
    yield slurm
    SlurmJob.watcher.clear()


def sbatch_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


def test_slurm_submits_one_array_per_stage_with_dependencies(fake, fake_slurm, tmp_path):
    from submitit.core.utils import DelayedSubmission

    args = base_args(tmp_path, "--executor", "slurm", "--no-wait", "--partition", "gpu", "--account", "proj",
                     "--time", "90", "--gpus-per-job", "2", "--slurm-setup", "source .venv/bin/activate",
                     "--slurm-opt", "mail-type=END")
    assert sweep.main(args) == 0
    folder = tmp_path / "out/sweep/slurm"
    train_file, test_file = (folder / "101_submission.sh"), (folder / "102_submission.sh")
    assert fake_slurm.submitted and len(fake_slurm.submitted) == 2
    train, test = sbatch_lines(train_file), sbatch_lines(test_file)
    for lines in (train, test):
        assert "#SBATCH --array=0-3%4" in lines  # 2 datasets x 2 seeds per stage
        assert {"#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=90",
                "#SBATCH --gpus-per-node=2", "#SBATCH --mail-type=END"} <= set(lines)
        assert f"cd {ROOT}" in lines and "source .venv/bin/activate" in lines
        assert any(line.endswith(f"-u -m submitit.core._submit {folder}") for line in lines)
    assert "#SBATCH --job-name=sweep-base2new-train" in train and not any("dependency" in x for x in train)
    assert "#SBATCH --job-name=sweep-base2new-test" in test and "#SBATCH --dependency=afterok:101" in test
    # each array task runs one pickled protocol-script job
    with open(folder / "test.jobs.tsv", newline="") as f:
        index = list(csv.DictReader(f, delimiter="\t"))
    assert [r["slurm_id"] for r in index] == [f"102_{i}" for i in range(4)]
    assert index[0]["call"] == "bash scripts/kdpl/base2new_test.sh eurosat 1"
    delayed = DelayedSubmission.load(folder / "101_3_submitted.pkl")
    job = delayed.args[0]
    assert delayed.function.__name__ == "run_job" and isinstance(job, Job)
    assert (job.name, job.script, job.args) == ("train:KDPL_CoOp:dtd:seed2", "kdpl/base2new_train.sh", ["dtd", "2"])
    assert json.loads((folder / "submitted.json").read_text())["test:KDPL_CoOp:eurosat:seed1"] == "102_0"

    # resubmitting while the jobs are queued submits nothing twice
    assert sweep.main(args) == 0
    assert len(fake_slurm.submitted) == 2

    # what a task does on its node: the listing at run time, then the commands
    result = delayed.result()
    assert result == {"name": "train:KDPL_CoOp:dtd:seed2", "ran": 1, "skipped": 0}
    assert [phase_of(c["out"]) for c in read_calls(fake)] == [("train_base", "dtd", "seed2")]


def test_slurm_wait_reports_failures_and_cancels_what_can_never_start(fake, fake_slurm, tmp_path, monkeypatch,
                                                                     capsys):
    """One training task fails: the test array waits on it afterok and can never start, so the sweep cancels it
    instead of waiting forever, and says so."""
    cancelled: list[str] = []
    monkeypatch.setattr(sweep_exec.time, "sleep", lambda s: None)
    monkeypatch.setattr("submitit.core.core.subprocess.call", lambda cmd, **kw: cancelled.append(cmd[1]) or 0)
    states = {"101_0": "FAILED"}
    fake_slurm.check_output = lambda command, *a, **kw: (  # type: ignore[method-assign]
        "JobID|State|NodeList\n" + "\n".join(
            f"{i}_{t}|{states.get(f'{i}_{t}', 'COMPLETED' if i == 101 else 'PENDING')}|n"
            for i in (101, 102) for t in range(4)) + "\n").encode()
    monkeypatch.setattr("submitit.core.core.subprocess.check_output", fake_slurm.check_output)
    assert sweep.main(base_args(tmp_path, "--executor", "slurm", "--poll-seconds", "0")) == 1
    err = capsys.readouterr().err
    assert "failed: train:KDPL_CoOp:eurosat:seed1" in err and "Slurm state FAILED" in err
    assert sorted(cancelled) == [f"102_{t}" for t in range(4)] and err.count("blocked: test:") == 4


def test_slurm_without_sbatch_fails_clearly(fake, tmp_path, monkeypatch, capsys):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: -1))  # no srun on this machine
    assert sweep.main(base_args(tmp_path, "--executor", "slurm", "--no-wait")) == 2
    assert "--executor slurm" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- a real tiny sweep


TINY = ("MODEL.BACKBONE.NAME tiny-vit INPUT.SIZE (32,32) OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 "
        "DATALOADER.TRAIN_X.BATCH_SIZE 4 DATALOADER.TEST.BATCH_SIZE 32 TRAINER.KDPL.TEACHER tiny-vit-wide "
        "TRAINER.KDPL.TEACHER_BACKEND tiny")


def test_tiny_sweep_end_to_end_interrupted_and_resumed(tmp_path, monkeypatch, capsys):
    """2 datasets x 2 seeds of KDPL_CoOp base2new for real, then one (dataset, seed) interrupted during training
    (no results.json, no tests yet) and the same command again: it resumes that run from its checkpoint, runs the
    two missing tests, and prints the table with both seeds, the paper comparison and the figures."""
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (see README): the real sweep is skipped")
    from datasets.synthetic import make_synthetic_dataset

    for var in ("PYTHON", "TRAINER", "CFG", "CA", "SHOTS", "EXTRA_OPTS", "TEACHER_CACHE_ROOT", "DRY_RUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("eurosat", "dtd"):
        make_synthetic_dataset(str(tmp_path / "data"), key, num_classes=4, per_class=4, size=32, seed=3)
    args = base_args(tmp_path, "--shots", "2", "--extra-opts", TINY)
    assert sweep.main(args) == 0
    first = capsys.readouterr()
    assert "12 command(s) to run" in first.err
    tail = "dtd/shots_2/KDPL_CoOp/vit_b32_ctxv1/seed2"
    train_dir = tmp_path / "out/base2new/train_base" / tail
    assert json.loads((train_dir / "results.json").read_text())["num_classes"] == 2

    (train_dir / "results.json").unlink()  # killed after its last checkpoint, before the final test
    for phase in ("test_base", "test_new"):
        shutil.rmtree(tmp_path / "out/base2new" / phase / tail)
    assert sweep.main([*args, "--paper", "kdpl", "--plot"]) == 0
    second = capsys.readouterr()
    assert "3 command(s) to run (1 resuming), 9 run(s) already finished" in second.err
    log = sorted(train_dir.glob("log.txt*"))[-1].read_text()
    assert "Found checkpoint" in log  # Dassl resumed the run instead of training again
    assert json.loads((tmp_path / "out/base2new/test_new" / tail / "results.json").read_text())["num_classes"] == 2
    rows = json.loads((tmp_path / "out/base2new/results_base2new.json").read_text())["rows"]
    assert {(r["dataset"], r["n"]) for r in rows if r["dataset"] != "Average"} == {("eurosat", 2), ("dtd", 2)}
    assert "### Timings" in second.out and "| KDPL_CoOp | DescribableTextures | 2 | 1 |" in second.out
    # --paper and --plot went through to the results table
    assert "paper: KDPL" in second.out
    bars = tmp_path / "out/base2new/plots/base2new_KDPL_CoOp_vit_b32_ctxv1_2shots.csv"
    with open(bars, newline="") as f:
        plotted = list(csv.DictReader(f))
    assert {(r["dataset"], r["metric"]) for r in plotted} >= {("dtd", "base"), ("eurosat", "new"), ("Average", "hm")}
    curves = sorted((tmp_path / "out/base2new/plots/curves").rglob("*.csv"))
    assert len(curves) == 4  # one per training run
    assert all(p.with_suffix(".png").is_file() for p in [bars, *curves])
