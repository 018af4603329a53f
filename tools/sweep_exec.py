"""The executors of ``python -m tools.sweep``: this machine (one job per slot / GPU) and Slurm (submitit job arrays).

Both run the same :class:`~tools.sweep_worker.Job` objects; planning and the command line are in ``tools/sweep.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tools.sweep_worker import ROOT, STAGES, Job, Running, SweepError, context_for, list_commands, run_job, script_env

# Slurm states of a job that is still going to run (sacct); such a job is not submitted again
QUEUED_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


# ----------------------------------------------------------------------------------------------- local executor


def _job_log(folder: Path, job: Job) -> Path:
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / (re.sub(r"[^A-Za-z0-9_.+-]+", "_", job.name) + ".log")


def progress_bar(total: int, initial: int, desc: str):
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread
    return tqdm(total=total + initial, initial=initial, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True)


def run_local(jobs: Sequence[Job], folder: Path, slots: Sequence[Optional[str]], bar) -> Dict[str, str]:
    """Run the jobs on this machine, one per slot (a GPU id, or None = as the environment says), dependencies first.

    Returns job name -> "done" | "failed" | "blocked" (a job it needs failed). Ctrl-C stops the running commands;
    rerunning the sweep resumes them."""
    status: Dict[str, str] = {}
    pending = list(jobs)
    ctx = context_for([c for j in jobs for c in j.commands])
    running: Dict[int, Dict[str, Any]] = {}

    def finish(slot: int, result: str) -> None:
        state = running.pop(slot)
        job = state["job"]
        status[job.name] = result
        bar.update(max(0, len(job.commands) - state["done"]))  # planned runs the job no longer needed
        if result == "failed":
            bar.write(f"failed: {job.name} ({job.call}): {state['why']}; log: {state['log']}", file=sys.stderr)

    def fail(slot: int, err: Exception) -> None:
        with open(running[slot]["log"], "a", encoding="utf-8") as f:
            f.write(f"[sweep] {err}\n")
        running[slot]["why"] = str(err)
        finish(slot, "failed")

    def advance(slot: int) -> None:
        """Start the slot's next command, or finish its job when none is left."""
        state = running[slot]
        if not state["commands"]:
            finish(slot, "done")
            return
        try:
            state["proc"] = Running(state["commands"].pop(0), script_env(state["job"].env), str(state["log"]),
                                    slots[slot], ctx)
        except SweepError as err:
            fail(slot, err)

    def ready(job: Job) -> bool:
        return all(status.get(d) == "done" for d in job.after)

    try:
        while pending or running:
            for blocked in [j for j in pending if any(status.get(d) in ("failed", "blocked") for d in j.after)]:
                pending.remove(blocked)
                status[blocked.name] = "blocked"
                bar.update(len(blocked.commands))
                bar.write(f"blocked: {blocked.name} (a job it needs failed)", file=sys.stderr)
            for slot in range(len(slots)):
                candidates = [] if slot in running else [j for j in pending if ready(j)]
                if not candidates:
                    continue
                # depth first: a ready test before more training, so finished rows (and a resumable state) come early
                job = max(candidates, key=lambda j: STAGES.index(j.stage))
                pending.remove(job)
                running[slot] = {"job": job, "commands": [], "log": _job_log(folder, job), "done": 0, "why": ""}
                bar.set_postfix_str(job.name)
                try:  # what is still missing now
                    running[slot]["commands"] = list_commands(job.script, job.args, job.env, job.select).commands
                except SweepError as err:
                    fail(slot, err)
                    continue
                advance(slot)
            if pending and not running and not any(ready(j) for j in pending):
                raise SweepError("jobs wait for jobs that are not in the sweep: "
                                 + ", ".join(f"{j.name} after {j.after}" for j in pending))
            for slot in list(running):
                state = running[slot]
                code = state["proc"].poll()
                if code is None:
                    continue
                if code != 0:
                    state["why"] = f"exit code {code}"
                    finish(slot, "failed")
                    continue
                state["done"] += 1
                bar.update(1)
                advance(slot)
            if running:
                time.sleep(0.2)
    except BaseException:  # Ctrl-C (or a bug): stop what runs; the same command resumes it
        procs = [state["proc"] for state in running.values() if "proc" in state]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        raise
    return status


# ----------------------------------------------------------------------------------------------- slurm executor


def slurm_parameters(args: argparse.Namespace) -> Dict[str, Any]:
    """submitit's SlurmExecutor parameters from the command line (sbatch's own names)."""
    params: Dict[str, Any] = {"time": args.time, "gpus_per_node": args.gpus_per_job,
                              "cpus_per_task": args.cpus_per_task, "array_parallelism": args.array_parallelism,
                              "setup": [f"cd {shlex.quote(str(ROOT))}", *args.slurm_setup]}
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    if args.mem_gb:
        params["mem"] = f"{args.mem_gb}GB"
    extra = {}
    for item in args.slurm_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SweepError(f"--slurm-opt {item!r}: expected KEY=VALUE (an sbatch option, e.g. mail-type=END)")
        extra[key] = value
    if extra:
        params["additional_parameters"] = extra
    return params


def _state_file(folder: Path) -> Path:
    return folder / "slurm" / "submitted.json"


def still_queued(folder: Path) -> Dict[str, str]:
    """Jobs submitted by an earlier run of the sweep that Slurm has not finished: job name -> job id."""
    path = _state_file(folder)
    if not path.is_file():
        return {}
    from submitit.slurm.slurm import SlurmJob

    recorded = json.loads(path.read_text())
    queued = {}
    for name, job_id in recorded.items():
        state = SlurmJob.watcher.get_state(job_id, mode="force").split(" ")[0].upper()
        if state in QUEUED_STATES:
            queued[name] = job_id
    return queued


def submit_slurm(jobs: Sequence[Job], folder: Path, params: Dict[str, Any], protocol: str):
    """One submitit job array per stage, each ``afterok`` the arrays (or still-queued jobs) it needs.

    Returns ((job, submitit job, ids of the arrays it waits on) per submitted job, names of the jobs left alone
    because they are still queued). Writes
    ``FOLDER/slurm/<stage>.jobs.tsv`` (array index, job, script call) beside submitit's files."""
    import submitit

    slurm_dir = folder / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    try:
        executor = submitit.SlurmExecutor(folder=slurm_dir)
    except RuntimeError as err:
        raise SweepError(f"--executor slurm: {err} (run the sweep where sbatch/srun work, e.g. a login node)") from err
    executor.update_parameters(**params)
    queued = still_queued(folder)
    ids: Dict[str, str] = dict(queued)  # job name -> the Slurm id a dependent waits for
    recorded = json.loads(_state_file(folder).read_text()) if _state_file(folder).is_file() else {}
    submitted: List[Any] = []
    for stage in STAGES:
        stage_jobs = [j for j in jobs if j.stage == stage and j.name not in queued]
        if not stage_jobs:
            continue
        needs = sorted({ids[d].split("_")[0] for j in stage_jobs for d in j.after if d in ids})
        executor.update_parameters(job_name=f"sweep-{protocol}-{stage}",
                                   dependency=("afterok:" + ":".join(needs)) if needs else None)
        with executor.batch():
            handles = [executor.submit(run_job, job) for job in stage_jobs]
        lines = ["index\tjob\tcall\tslurm_id"]
        for index, (job, handle) in enumerate(zip(stage_jobs, handles)):
            submitted.append((job, handle, needs))
            ids[job.name] = recorded[job.name] = handle.job_id
            lines.append(f"{index}\t{job.name}\t{job.call}\t{handle.job_id}")
        (slurm_dir / f"{stage}.jobs.tsv").write_text("\n".join(lines) + "\n")
        print(f"submitted {stage}: {len(stage_jobs)} job(s) as {handles[0].job_id.split('_')[0]}"
              + (f" (afterok {', '.join(needs)})" if needs else ""), file=sys.stderr)
    _state_file(folder).write_text(json.dumps(recorded, indent=1) + "\n")
    return submitted, sorted(queued)


def wait_slurm(submitted: Sequence[tuple], bar, poll_s: float) -> Dict[str, str]:
    """Poll the submitted jobs until each has finished; job name -> "done" | "failed" | "blocked".

    A failed task makes every array that waits on its array ``afterok`` unsatisfiable (Slurm would keep those
    pending forever): their jobs are cancelled and reported as blocked."""
    status: Dict[str, str] = {}
    failed_arrays: set = set()
    while len(status) < len(submitted):
        for job, handle, needs in submitted:
            if job.name in status:
                continue
            if failed_arrays.intersection(needs):
                handle.cancel(check=False)
                status[job.name] = "blocked"
                failed_arrays.add(handle.job_id.split("_")[0])
                bar.update(len(job.commands))
                bar.write(f"blocked: {job.name} (its stage waits on an array with a failed job; cancelled)",
                          file=sys.stderr)
                continue
            if not handle.done():
                continue
            state = handle.state.split(" ")[0].upper()
            status[job.name] = "done" if state == "COMPLETED" else "failed"
            bar.update(len(job.commands))
            if status[job.name] == "failed":
                failed_arrays.add(handle.job_id.split("_")[0])
                bar.write(f"failed: {job.name} ({job.call}): Slurm state {state}; log: {handle.paths.stderr}",
                          file=sys.stderr)
        if len(status) < len(submitted):
            time.sleep(poll_s)
    return status


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt while the local executor runs (main thread only), so that the runs it started
    are stopped with it instead of being left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
