"""The run-time side of ``python -m tools.sweep``: a job's commands come from its protocol script, then run.

A job is one protocol-script call (``scripts/kdpl/base2new_train.sh eurosat 1``). Its commands are never built here:
the script runs with ``DRY_RUN=1`` and prints them (``scripts/common.sh``), skipping finished runs and announcing the
ones it will resume, so paths, load epochs and skip/resume rules stay in the scripts alone. The listing is taken
again when a job starts (what finished meanwhile is skipped then), and each printed command runs in order.

Why commands usually run in a forked process instead of ``python train.py``: importing torch, Dassl and the trainers
costs 5-30 s per process, more than a tiny or cached run itself. A ``forkserver`` preloads them once
(:mod:`tools.sweep_preload`, which touches no CUDA) and forks a fresh process per command: each run still gets its own
process (own stdout tee into its log.txt, own CUDA context and ``CUDA_VISIBLE_DEVICES``, memory freed at exit).
A command for another interpreter or launcher (``torchrun ...``) is started as it is.

This module imports nothing heavy: a Slurm array task unpickles :func:`run_job` from it on a compute node.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
DRY_PREFIX = "[dry-run] "
SKIP_PREFIX = "skip: results exist at "
RESUME_PREFIX = "resume: "
CACHE_MODULE = "tools.build_teacher_cache"
STAGES = ("teacher", "synthesize", "cache", "train", "test")  # a sweep runs them in this order
SELECTS = ("all", "cache", "run")  # which of a script's commands a job runs (the teacher cache is its own stage)


class SweepError(RuntimeError):
    """A sweep cannot go on (a script refused its arguments, a command failed); the message says what to fix."""


@dataclass
class Job:
    """One protocol-script call of a sweep stage, and the jobs that must finish first."""

    stage: str  # teacher | synthesize | cache | train | test
    name: str  # unique in the sweep, e.g. "train:KDPL_CoOp:eurosat:seed1"
    script: str  # below scripts/, e.g. "kdpl/base2new_train.sh"
    args: List[str]
    env: Dict[str, str]  # the sweep's script variables (TRAINER, DATA, OUTPUT, ...), on top of the environment
    select: str = "all"
    after: List[str] = field(default_factory=list)  # names of jobs of this sweep that must succeed first
    commands: List[List[str]] = field(default_factory=list)  # the plan-time listing
    skipped: List[str] = field(default_factory=list)  # results.json of runs already finished
    resumed: List[str] = field(default_factory=list)  # run directories that will resume

    @property
    def call(self) -> str:
        return shlex.join(["bash", f"scripts/{self.script}", *self.args])


@dataclass
class Listing:
    """What a protocol script would run now (its ``DRY_RUN=1`` output)."""

    commands: List[List[str]]
    skipped: List[str]
    resumed: List[str]
    notes: List[str]


def script_env(env: Dict[str, str]) -> Dict[str, str]:
    """The environment a job's script and commands see: ours, then the job's variables."""
    merged = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
    merged.update(env)
    return merged


def list_commands(script: str, args: Sequence[str], env: Dict[str, str], select: str = "all") -> Listing:
    """Run ``scripts/<script> ARGS`` with DRY_RUN=1 and parse what it prints (one command per ``[dry-run]`` line)."""
    if select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
    call = ["bash", f"scripts/{script}", *args]
    proc = subprocess.run(call, cwd=ROOT, env={**script_env(env), "DRY_RUN": "1"}, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SweepError(f"{shlex.join(call)} refused the job (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")
    commands: List[List[str]] = []
    skipped: List[str] = []
    resumed: List[str] = []
    notes: List[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith(DRY_PREFIX):
            argv = shlex.split(line[len(DRY_PREFIX):])
            is_cache = CACHE_MODULE in argv
            if select == "all" or (select == "cache") == is_cache:
                commands.append(argv)
        elif line.startswith(SKIP_PREFIX):
            skipped.append(line[len(SKIP_PREFIX):].strip())
        elif line.startswith(RESUME_PREFIX):
            resumed.append(line[len(RESUME_PREFIX):].split(" exists without", 1)[0].strip())
        elif line.strip():
            notes.append(line.strip())
    if select == "cache":  # finished and resumed runs belong to the training job's count
        skipped, resumed = [], []
    return Listing(commands, skipped, resumed, notes)


def output_dir(argv: Sequence[str]) -> Optional[str]:
    """The ``--output-dir`` of a train.py command (None for other commands)."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "--output-dir":
            return value
    return None


# ----------------------------------------------------------------------------------------------- running commands


def _same_interpreter(program: str) -> bool:
    found = shutil.which(program)
    return found is not None and os.path.abspath(found) == os.path.abspath(sys.executable)


def runs_in_process(argv: Sequence[str]) -> bool:
    """Whether a command is ``<this python> train.py ...`` or ``<this python> -m module ...`` (forked from the
    preloaded server rather than started cold)."""
    return (len(argv) >= 2 and _same_interpreter(argv[0])
            and (argv[1] == "train.py" or (argv[1] == "-m" and len(argv) >= 3)))


def _forkserver(preload: bool):
    """The forkserver context; with ``preload`` it imports torch, Dassl and the trainers once (started from the
    repository root, the directory its ``sys.path`` resolves modules from)."""
    ctx = multiprocessing.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(["tools.sweep_preload"])
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        from multiprocessing import forkserver

        forkserver.ensure_running()
    finally:
        os.chdir(here)
    return ctx


def _child(argv: List[str], env: Dict[str, str], log_path: Optional[str]) -> None:
    """Body of a forked command: the job's environment, output into the job's log, then train.py or the module."""
    os.chdir(ROOT)
    os.environ.clear()
    os.environ.update(env)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    sys.modules.setdefault("outdated", None)  # type: ignore[arg-type]  (as train.main)
    if argv[1] == "train.py":
        sys.argv = ["train.py", *argv[2:]]
        import train

        train.main(argv[2:])
    else:
        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


class Running:
    """One started command: a forked in-process run or a plain subprocess, polled the same way."""

    def __init__(self, argv: List[str], env: Dict[str, str], log_path: Optional[str] = None,
                 cuda_devices: Optional[str] = None, ctx=None) -> None:
        env = dict(env)
        if cuda_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = cuda_devices
        self.argv = argv
        self._log = None
        if log_path:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(f"\n[sweep] $ {shlex.join(argv)}\n")
        if ctx is not None and runs_in_process(argv):
            self._proc = ctx.Process(target=_child, args=(argv, env, log_path))
            self._proc.start()
            self._popen = None
        else:
            self._proc = None
            self._log = open(log_path, "a", encoding="utf-8") if log_path else None
            try:
                self._popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log,
                                               stderr=subprocess.STDOUT if self._log else None)
            except OSError as err:
                raise SweepError(f"cannot start {shlex.join(argv)}: {err}") from err

    def poll(self) -> Optional[int]:
        if self._popen is not None:
            code = self._popen.poll()
        else:
            code = None if self._proc.is_alive() else self._proc.exitcode
        if code is not None and self._log is not None:
            self._log.close()
            self._log = None
        return code

    def wait(self) -> int:
        if self._popen is not None:
            self._popen.wait()
        else:
            self._proc.join()
        code = self.poll()
        assert code is not None
        return code

    def terminate(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
        elif self._proc is not None and self._proc.is_alive():
            self._proc.terminate()


def context_for(commands: Sequence[Sequence[str]]):
    """A forkserver context when some command runs in-process (preloading the heavy imports), else None."""
    return _forkserver(preload=True) if any(runs_in_process(c) for c in commands) else None


def run_job(job: Job) -> Dict[str, object]:
    """Run one job to the end, in order (a Slurm array task; output goes to the task's log). Raises on the first
    failing command, so the task fails and the stages that depend on it do not start."""
    listing = list_commands(job.script, job.args, job.env, job.select)
    env = script_env(job.env)
    ctx = context_for(listing.commands)
    for path in listing.skipped:
        print(f"[sweep] {job.name}: skip, results exist at {path}", flush=True)
    for argv in listing.commands:
        print(f"[sweep] {job.name}: {shlex.join(argv)}", flush=True)
        code = Running(list(argv), env, ctx=ctx).wait()
        if code != 0:
            raise SweepError(f"{job.name}: exit code {code} from {shlex.join(argv)}; rerun the sweep to resume")
    return {"name": job.name, "ran": len(listing.commands), "skipped": len(listing.skipped)}
