"""A paper table in one command: every run of a protocol over datasets x seeds x trainers, locally or on Slurm.

    python -m tools.sweep --protocol base2new --trainer KDPL_CoOp --datasets all --seeds 1 2 3
    python -m tools.sweep --protocol base2new --trainer kdpl --datasets all --seeds 1 2 3 --gpus 0,1,2,3
    python -m tools.sweep --protocol xd --trainer PromptKD --datasets all --seeds 1 2 3 \\
        --executor slurm --partition gpu --time 720 --account myproj

Jobs are protocol-script calls (``scripts/<method>/*.sh``), grouped in stages that run in order: the PromptKD teacher
(or the DFKD synthetic sets), the offline teacher cache (``--teacher-cache DIR``), training, then testing. The
scripts print their ``train.py`` commands under ``DRY_RUN=1`` (``tools/sweep_worker.py``): the sweep never builds a
path itself, so it skips finished runs and resumes unfinished ones exactly as the scripts do. Rerun the same command
after an interruption: only what is missing runs.

``--executor local`` runs the jobs on this machine, one at a time, or one per GPU in parallel with ``--gpus 0,1,..``
(each job sees its GPU as ``CUDA_VISIBLE_DEVICES``), with a progress bar over the sweep's runs; each job's output is
in ``FOLDER/logs/``. ``--executor slurm`` submits one job array per stage with submitit (``afterok`` dependencies
between stages; jobs still queued from an earlier submission are not submitted twice), then waits with the same
progress bar (``--no-wait`` returns after submitting). Both end with the results table (``tools.results``;
``--paper`` and ``--plot`` are passed on) and the per-epoch timings of the sweep's training runs.

Here: planning, reporting and the command line; the executors are in ``tools/sweep_exec.py``, what runs a job (also on
a Slurm node) in ``tools/sweep_worker.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from tools.datasets_table import BASE2NEW_DATASETS, DG_TARGETS, DOMAIN_DATASETS, XD_SOURCE, XD_TARGETS
from tools.sweep_exec import (
    progress_bar,
    run_local,
    sigterm_as_interrupt,
    slurm_parameters,
    submit_slurm,
    wait_slurm,
)
from tools.sweep_worker import ROOT, STAGES, Job, SweepError, list_commands, output_dir, script_env

PROTOCOLS = ("base2new", "xd", "dg", "fewshot", "dfkd")
KDPL_TRAINERS = ("KDPL_CoOp", "KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe", "KDPL_PromptSRC")
DFKD_TRAINERS = ("DFKD_Handcrafted", "DFKD_Mix", "DFKD_Random", "DFKD_Contrastive")
TRAINER_GROUPS = {"kdpl": KDPL_TRAINERS, "dfkd": DFKD_TRAINERS}
FEWSHOT_SHOTS = ("1", "2", "4", "8", "16")
# the results table's root below OUTPUT, per protocol
RESULTS_ROOT = {"base2new": "base2new", "xd": "", "dg": "", "fewshot": "", "dfkd": "dfkd"}


def method_of(trainer: str) -> str:
    """The scripts/ folder a trainer's protocol scripts live in."""
    if trainer.startswith("KDPL_"):
        return "kdpl"
    if trainer.startswith("DFKD_"):
        return "dfkd"
    if trainer == "PromptKD":
        return "promptkd"
    if trainer.startswith("ZeroshotCLIP"):
        return "zeroshot"
    raise SweepError(f"--trainer {trainer}: no protocol scripts for it; the sweep knows KDPL_* "
                     f"({', '.join(KDPL_TRAINERS)}), PromptKD (its teacher is stage 1), DFKD_* "
                     f"({', '.join(DFKD_TRAINERS)}) and ZeroshotCLIP_KD, or the groups 'kdpl' and 'dfkd'")


SUPPORTED = {"kdpl": ("base2new", "xd", "dg", "fewshot"), "promptkd": ("base2new", "xd", "dg"),
             "zeroshot": ("base2new", "xd", "dg"), "dfkd": ("dfkd",)}


def all_datasets(protocol: str, method: str) -> tuple[str, ...]:
    """``--datasets all``: the protocol's datasets for this method's scripts."""
    if protocol in ("base2new", "fewshot"):
        return BASE2NEW_DATASETS
    if protocol == "xd":
        return (XD_SOURCE, *XD_TARGETS) if method == "zeroshot" else XD_TARGETS
    if protocol == "dg":  # KDPL and zero-shot test the source too (dg.sh); PromptKD distils one student per target
        return DG_TARGETS if method == "promptkd" else (XD_SOURCE, *DG_TARGETS)
    return tuple(DOMAIN_DATASETS)


# ----------------------------------------------------------------------------------------------------- planning


class Planner:
    """Builds the sweep's jobs (stages, dependencies) and lists each one's commands through its script."""

    def __init__(self, protocol: str, datasets: Sequence[str], seeds: Sequence[str], env: Dict[str, str],
                 shots: Sequence[str] = ()) -> None:
        self.protocol, self.datasets, self.seeds = protocol, list(datasets), list(seeds)
        self.env, self.shots = env, shots
        self.jobs: Dict[str, Job] = {}
        self._kdpl_caches: Dict[str, Job] = {}  # the last KDPL cache job per shared cache folder

    def add(self, stage: str, tag: str, key: str, script: str, args: Sequence[str], env: Dict[str, str],
            select: str = "all", after: Sequence[Optional[Job]] = ()) -> Job:
        name = f"{stage}:{tag}:{key}"
        if name not in self.jobs:  # e.g. one PromptKD teacher or one CLIP reference row for several students
            self.jobs[name] = Job(stage=stage, name=name, script=script, args=[str(a) for a in args],
                                  env={**self.env, **env}, select=select,
                                  after=[j.name for j in after if j is not None])
        return self.jobs[name]

    def trained(self, tag: str, key: str, script: str, args: Sequence[str], env: Dict[str, str],
                after: Sequence[Optional[Job]] = ()) -> Job:
        """A training job, preceded by its teacher-cache job when TEACHER_CACHE_ROOT is set. Every KDPL trainer of a
        (dataset, shots, seed, class set) shares one cache folder: their cache jobs run one after another, so the
        teacher part is built once and each later job only adds its student's part."""
        if not script_env({**self.env, **env}).get("TEACHER_CACHE_ROOT"):
            return self.add("train", tag, key, script, args, env, after=after)
        shared = f"{key}:{'ca' if tag.endswith('-CA') else 'classes'}" if tag.startswith("KDPL_") else ""
        previous = self._kdpl_caches.get(shared) if shared else None
        cache = self.add("cache", tag, key, script, args, env, select="cache", after=[previous, *after])
        if shared:
            self._kdpl_caches[shared] = cache
        return self.add("train", tag, key, script, args, env, select="run", after=[cache, *after])

    def plan_trainer(self, trainer: str, ca: bool) -> None:
        method = method_of(trainer)
        if self.protocol not in SUPPORTED[method]:
            raise SweepError(f"--protocol {self.protocol} does not apply to {trainer} ({method} scripts support: "
                             f"{', '.join(SUPPORTED[method])})")
        env = {"TRAINER": trainer}
        if ca:
            if method != "kdpl":
                raise SweepError(f"--ca applies to KDPL trainers only, not {trainer}")
            env["CA"] = "1"
        tag = trainer + ("-CA" if ca else "")
        getattr(self, f"_plan_{method}")(trainer, tag, env)

    def _plan_kdpl(self, trainer: str, tag: str, env: Dict[str, str]) -> None:
        for seed in self.seeds:
            if self.protocol in ("xd", "dg"):
                train = self.trained(tag, f"{XD_SOURCE}:seed{seed}", "kdpl/xd_train.sh", [seed], env)
                for dataset in self.datasets:
                    self.add("test", tag, f"{dataset}:seed{seed}", "kdpl/xd_test.sh", [dataset, seed], env,
                             after=[train])
                continue
            for dataset in self.datasets:
                if self.protocol == "fewshot":
                    for k in self.shots or FEWSHOT_SHOTS:
                        self.trained(tag, f"{dataset}:{k}shots:seed{seed}", "kdpl/few_shot.sh", [dataset, k, seed],
                                     env)
                    continue
                train = self.trained(tag, f"{dataset}:seed{seed}", "kdpl/base2new_train.sh", [dataset, seed], env)
                self.add("test", tag, f"{dataset}:seed{seed}", "kdpl/base2new_test.sh", [dataset, seed], env,
                         after=[train])

    def _plan_promptkd(self, trainer: str, tag: str, env: Dict[str, str]) -> None:
        merged = script_env({**self.env, **env})
        released = bool(merged.get("TEACHER_CKPT") or merged.get("TEACHER_ROOT"))  # no stage 1 to run
        teacher_seed = merged.get("TEACHER_SEED", "1")
        teacher = None
        if self.protocol in ("xd", "dg") and not released:
            teacher = self.add("teacher", "PromptKD_Teacher", f"{XD_SOURCE}:seed{teacher_seed}",
                               "promptkd/teacher_train.sh", [XD_SOURCE, teacher_seed], {"PROTOCOL": "xd"})
        for dataset in self.datasets:
            if self.protocol == "base2new" and not released:
                teacher = self.add("teacher", "PromptKD_Teacher", f"{dataset}:seed{teacher_seed}",
                                   "promptkd/teacher_train.sh", [dataset, teacher_seed], {"PROTOCOL": "base2new"})
            kind = "base2new" if self.protocol == "base2new" else "xd"
            for seed in self.seeds:
                train = self.trained(tag, f"{dataset}:seed{seed}", f"promptkd/{kind}_train.sh", [dataset, seed], env,
                                     after=[teacher])
                self.add("test", tag, f"{dataset}:seed{seed}", f"promptkd/{kind}_test.sh", [dataset, seed], env,
                         after=[train])

    def _plan_zeroshot(self, trainer: str, tag: str, env: Dict[str, str]) -> None:
        script = "zeroshot/base2new.sh" if self.protocol == "base2new" else "zeroshot/xd_test.sh"
        for dataset in self.datasets:
            for seed in self.seeds:
                self.add("test", tag, f"{dataset}:seed{seed}", script, [dataset, seed], env)

    def _plan_dfkd(self, trainer: str, tag: str, env: Dict[str, str]) -> None:
        for dataset in self.datasets:
            # the CLIP teacher's zero-shot reference row (compare_modes.sh), once per dataset
            self.add("test", "CLIP_teacher", f"{dataset}:seed{self.seeds[0]}", "dfkd/eval.sh",
                     [dataset, self.seeds[0]], {**env, "WHO": "teacher"})
            for seed in self.seeds:
                synth = self.add("synthesize", tag, f"{dataset}:seed{seed}", "dfkd/synthesize.sh", [dataset, seed],
                                 env)
                self.add("train", tag, f"{dataset}:seed{seed}", "dfkd/distill.sh", [dataset, seed], env,
                         after=[synth])

    def listed(self) -> List[Job]:
        """Every job with its current listing; jobs with nothing left to run are dropped (their runs are counted
        as finished), and so are preparation jobs (synthesis) whose dependents are all finished."""
        from concurrent.futures import ThreadPoolExecutor

        def fill(job: Job) -> None:
            listing = list_commands(job.script, job.args, job.env, job.select)
            job.commands, job.skipped, job.resumed = listing.commands, listing.skipped, listing.resumed

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(fill, self.jobs.values()))  # bash calls: threads are enough
        needed = {d for job in self.jobs.values() if job.commands for d in job.after}
        for job in self.jobs.values():
            if job.stage == "synthesize" and job.name not in needed:
                job.commands = []
        kept = {j.name for j in self.jobs.values() if j.commands}
        jobs = [j for j in self.jobs.values() if j.name in kept]
        for job in jobs:
            job.after = [d for d in job.after if d in kept]
        return sorted(jobs, key=lambda j: STAGES.index(j.stage))


def check_datasets(datasets: Iterable[str]) -> None:
    missing = [d for d in datasets if not (ROOT / "configs" / "datasets" / f"{d}.yaml").is_file()]
    if missing:
        known = sorted(p.stem for p in (ROOT / "configs" / "datasets").glob("*.yaml"))
        raise SweepError(f"--datasets: no configs/datasets/<key>.yaml for {', '.join(missing)}; known keys: "
                         f"{', '.join(known)}")


def expand_trainers(names: Sequence[str]) -> List[str]:
    out: List[str] = []
    for name in names:
        for trainer in TRAINER_GROUPS.get(name.lower(), (name,)):
            if trainer not in out:
                out.append(trainer)
    return out


def count_runs(jobs: Sequence[Job], finished: Sequence[Job]) -> tuple[int, int]:
    """(commands to run, runs already finished) over the sweep (the progress bar's total and starting point)."""
    return sum(len(j.commands) for j in jobs), sum(len(j.skipped) for j in finished)


# ----------------------------------------------------------------------------------------------- reporting


def run_dirs(jobs: Iterable[Job]) -> List[Path]:
    """Run directories of the sweep's jobs: the train.py outputs it lists, and the finished runs it skipped."""
    dirs = [Path(d) for j in jobs for c in j.commands if (d := output_dir(c))]
    dirs += [Path(p).parent for j in jobs for p in j.skipped]
    return list(dict.fromkeys(dirs))


def timings_table(dirs: Iterable[Path]) -> str:
    """Per trainer and dataset: the recorded seconds per epoch of the training runs and their train time (the
    README's expected wall time comes from this table)."""
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for d in dirs:
        path = Path(d) / "results.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        timings = info.get("timings") or {}
        epochs = [float(v) for k, v in timings.items() if re.fullmatch(r"epoch\d+_s", k)]
        if info.get("eval_only") or not epochs:
            continue
        groups[(info.get("trainer", "?"), info.get("dataset", "?"))].append(
            {"epochs": len(epochs), "per_epoch": statistics.fmean(epochs),
             "train_s": float(timings.get("train_s", sum(epochs))), "peak": info.get("peak_memory_mb")})
    if not groups:
        return ""
    lines = ["| Trainer | Dataset | runs | epochs | s / epoch | train s / run | peak MB |",
             "|---|---|---|---|---|---|---|"]
    for (trainer, dataset), runs in sorted(groups.items()):
        peaks = [r["peak"] for r in runs if isinstance(r["peak"], (int, float))]
        cells = [trainer, dataset, len(runs), max(r["epochs"] for r in runs),
                 f"{statistics.fmean(r['per_epoch'] for r in runs):.1f}",
                 f"{statistics.fmean(r['train_s'] for r in runs):.1f}", f"{max(peaks):.0f}" if peaks else "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "### Timings (training runs of this sweep)\n\n" + "\n".join(lines)


def print_plan(jobs: Sequence[Job], finished: int) -> None:
    for stage in STAGES:
        stage_jobs = [j for j in jobs if j.stage == stage]
        if not stage_jobs:
            continue
        print(f"## {stage}: {len(stage_jobs)} job(s)")
        for job in stage_jobs:
            after = f"  (after {', '.join(job.after)})" if job.after else ""
            print(f"{job.name}: {job.call}{after}")
            for path in job.resumed:
                print(f"    resume: {path}")
            for argv in job.commands:
                print(f"    {shlex.join(argv)}")
    print(f"{sum(len(j.commands) for j in jobs)} command(s) to run; {finished} run(s) already finished")


def results_table(output: Path, protocol: str, extra: Sequence[str]) -> int:
    from tools import results

    root = output / RESULTS_ROOT[protocol] if RESULTS_ROOT[protocol] else output
    return results.main([str(root), "--protocol", protocol, *extra])


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--trainer", nargs="+", required=True,
                   help="trainer(s), or the groups kdpl (the five KDPL_*) and dfkd (the four DFKD modes)")
    p.add_argument("--datasets", nargs="+", default=["all"], help="dataset keys, or all (the protocol's list)")
    p.add_argument("--seeds", nargs="+", default=["1", "2", "3"])
    p.add_argument("--shots", nargs="+", default=[], help="fewshot: the K values (default 1 2 4 8 16); other "
                                                          "protocols: one value, the SHOTS of the scripts")
    p.add_argument("--ca", action="store_true", help="class-agnostic KDPL (CA=1, tag TRAINER-CA)")
    p.add_argument("--cfg", default=None, help="CFG: yaml name under configs/trainers/TRAINER/ (default per script)")
    p.add_argument("--extra-opts", default=None, help="EXTRA_OPTS: yacs options appended to every train.py call")
    p.add_argument("--data", default=os.environ.get("DATA"), help="dataset root (default $DATA)")
    p.add_argument("--output", default=os.environ.get("OUTPUT", "output"), help="output root (default $OUTPUT or "
                                                                                "output)")
    p.add_argument("--teacher-cache", default=os.environ.get("TEACHER_CACHE_ROOT"),
                   help="TEACHER_CACHE_ROOT: build each KDPL/PromptKD training run's offline teacher cache first "
                        "(a stage of its own) and train from it")
    p.add_argument("--folder", default=None, help="sweep logs and Slurm files (default OUTPUT/sweep)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local")
    p.add_argument("--gpus", default=None, help="local: GPU ids run in parallel, one job each (e.g. 0,1,2,3)")
    p.add_argument("--dry-run", action="store_true", help="print the stages, jobs and commands; run nothing")
    p.add_argument("--timings", action="store_true", help="print the per-epoch timings of the sweep's finished "
                                                          "runs and the table; run nothing")
    p.add_argument("--paper", choices=("kdpl", "promptkd"), default=None, help="passed to tools.results")
    p.add_argument("--plot", action="store_true", help="passed to tools.results")
    slurm = p.add_argument_group("slurm (one job array per stage, through submitit)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--constraint", default=None)
    slurm.add_argument("--time", type=int, default=240, help="minutes per job (default 240)")
    slurm.add_argument("--gpus-per-job", type=int, default=1)
    slurm.add_argument("--cpus-per-task", type=int, default=8)
    slurm.add_argument("--mem-gb", type=int, default=None)
    slurm.add_argument("--array-parallelism", type=int, default=64, help="tasks of one array running at once")
    slurm.add_argument("--slurm-setup", action="append", default=[],
                       help="a shell line run before each job (e.g. 'source .venv/bin/activate'); repeatable")
    slurm.add_argument("--slurm-opt", action="append", default=[], help="any sbatch option as KEY=VALUE; repeatable")
    slurm.add_argument("--no-wait", action="store_true", help="return after submitting")
    slurm.add_argument("--poll-seconds", type=float, default=60.0)
    return p


def sweep_env(args: argparse.Namespace) -> Dict[str, str]:
    """The script variables the sweep sets for every job (absolute paths: jobs may start elsewhere)."""
    if not args.data:
        raise SweepError("no dataset root: pass --data DIR or set DATA")
    env = {"DATA": os.path.abspath(args.data), "OUTPUT": os.path.abspath(args.output),
           "PYTHON": os.environ.get("PYTHON", sys.executable)}
    if args.cfg:
        env["CFG"] = args.cfg
    if args.extra_opts is not None:
        env["EXTRA_OPTS"] = args.extra_opts
    if args.teacher_cache:
        env["TEACHER_CACHE_ROOT"] = os.path.abspath(args.teacher_cache)
    if args.shots and args.protocol != "fewshot":
        if len(args.shots) != 1:
            raise SweepError(f"--shots: one value for --protocol {args.protocol} (several only for fewshot)")
        env["SHOTS"] = args.shots[0]
    return env


def plan(args: argparse.Namespace) -> tuple[List[Job], List[Job]]:
    """(jobs to run, every job considered) for the command line."""
    trainers = expand_trainers(args.trainer)
    env = sweep_env(args)
    for seed in args.seeds:
        if not re.fullmatch(r"\d+", seed):
            raise SweepError(f"--seeds: {seed!r} is not a non-negative integer")
    planner = Planner(args.protocol, [], args.seeds, env, args.shots)
    for trainer in trainers:
        method = method_of(trainer)
        datasets = list(all_datasets(args.protocol, method)) if args.datasets == ["all"] else args.datasets
        check_datasets(datasets)
        planner.datasets = datasets
        planner.plan_trainer(trainer, args.ca)
    jobs = planner.listed()
    return jobs, list(planner.jobs.values())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    folder = Path(args.folder or os.path.join(args.output, "sweep")).resolve()
    passed = [*(["--paper", args.paper] if args.paper else []), *(["--plot"] if args.plot else [])]
    try:
        jobs, considered = plan(args)
        total, finished = count_runs(jobs, considered)
        output = Path(os.path.abspath(args.output))
        if args.dry_run:
            print_plan(jobs, finished)
            return 0
        if args.timings:
            table = timings_table(run_dirs(considered))
            print((table or "no finished training run with recorded timings in this sweep yet") + "\n")
            return results_table(output, args.protocol, passed)
        resumed = sum(len(j.resumed) for j in jobs)
        print(f"sweep {args.protocol}: {len(jobs)} job(s), {total} command(s) to run ({resumed} resuming), "
              f"{finished} run(s) already finished", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plan.json").write_text(json.dumps([asdict(j) for j in jobs], indent=1) + "\n")
        bar = progress_bar(total, finished, f"{args.protocol} sweep")
        try:
            if args.executor == "local":
                slots = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else [None]
                with sigterm_as_interrupt():  # `kill` stops the runs too, as Ctrl-C does
                    status = run_local(jobs, folder, slots, bar)
            else:
                submitted, queued = submit_slurm(jobs, folder, slurm_parameters(args), args.protocol)
                if queued:
                    print(f"still queued from an earlier submission, not submitted again: {', '.join(queued)}",
                          file=sys.stderr)
                if args.no_wait:
                    bar.close()
                    print(f"submitted; Slurm files in {folder / 'slurm'}. When the jobs are done: "
                          f"python -m tools.results {output / RESULTS_ROOT[args.protocol]} --protocol {args.protocol}",
                          file=sys.stderr)
                    return 0
                status = wait_slurm(submitted, bar, args.poll_seconds)
        finally:
            bar.close()
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished runs are skipped, unfinished ones resume "
              "from their last checkpoint)", file=sys.stderr)
        return 130
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = sorted(n for n, s in status.items() if s != "done")
    timing = timings_table(run_dirs(considered))
    code = results_table(output, args.protocol, passed)
    if timing:
        print("\n" + timing)
    if failed:
        print(f"{len(failed)} job(s) did not finish: {', '.join(failed)} (logs in {folder}); rerun the same command "
              "to resume", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
