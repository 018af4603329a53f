"""One small base trainer: a frozen teacher distils into the learnable prompts of a student, without labels.

Subclasses say *which student, which teacher, which loss* (:meth:`build_student`, :meth:`build_teacher`,
:meth:`compute_loss`); this class does the Dassl plumbing once: precision, registration of only the learnable part,
label-free batches, checkpoints with learnable tensors only (loadable with ``weights_only=True``), written atomically
every epoch and resumed exactly (random states included) after a crash, clear errors for missing checkpoints, and a
``results.json`` beside Dassl's ``log.txt``.
"""
from __future__ import annotations

import datetime
import os
import os.path as osp
import shutil
import time
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from tqdm import tqdm

from dassl.config import defaults as dassl_config_defaults
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import count_num_param

from .config import add_keys, attach_defaults, cfg_get, cfg_value, config_keys
from .core.checkpoints import (POINTER_FILE, atomic_torch_save, atomic_write, atomic_write_json, capture_rng_state,
                               checkpoint_name, load_checkpoint_file, merge_timings, newest_loadable,
                               prune_checkpoints, read_pointer, remove_stale_temp_files, restore_rng_state,
                               write_pointer)
from .core.clip_models import LoadedClip, load_student
from .core.precision import autocast, cast_to_precision, needs_grad_scaler, peak_memory_mb, resolve_precision
from .core.prompt_learners import load_learner_state
from .core.shots import shots_used_record
from .core.timing import RegionTimer
from .core.trainer_parts import EpochPart, TrainBatch
from .dassl_compat import apply_dassl_compat

# Importing any trainer module (e.g. ``import trainers.kdpl`` in a CoOp fork) fixes Dassl for current torch and
# gives Dassl's defaults every config key our trainer modules declare.
apply_dassl_compat()
attach_defaults(dassl_config_defaults._C)


@config_keys
def add_shared_config(cfg) -> None:
    """Where CLIP weights come from, and the exact text-tower shortcuts (same features; see
    trainers/core/encoders.py): prompts cut after the last EOT token (``TRUNCATE_TEXT``), and SOS + learned context
    run once for all classes (``SHARE_TEXT_PREFIX``) (shared by every trainer of this package)."""
    add_keys(cfg, "MODEL.CLIP", {"DOWNLOAD_ROOT": "", "WEIGHTS": "", "TRUNCATE_TEXT": True,
                                 "SHARE_TEXT_PREFIX": True})
    add_keys(cfg, "DATASET", {"SUBSAMPLE_CLASSES": "all"})


@config_keys
def add_checkpoint_config(cfg) -> None:
    """How many epoch checkpoints a training run keeps (see :meth:`PromptDistillTrainer.save_model`)."""
    add_keys(cfg, "TRAIN", {"KEEP_CHECKPOINTS": 2})


def load_student_clip(cfg) -> LoadedClip:
    """The student CLIP named by ``MODEL.BACKBONE.NAME`` (OpenAI structure; tiny names for tests and demos)."""
    clip_cfg = cfg.MODEL.get("CLIP", {})
    return load_student(cfg.MODEL.BACKBONE.NAME, download_root=clip_cfg.get("DOWNLOAD_ROOT", ""),
                        weights=clip_cfg.get("WEIGHTS", ""))


def text_path_options(cfg) -> Dict[str, bool]:
    """The exact text shortcuts a :class:`~trainers.core.prompt_learners.PromptedCLIP` takes (keyword arguments)."""
    return {"truncate_text": bool(cfg_value(cfg, "MODEL.CLIP.TRUNCATE_TEXT")),
            "share_text_prefix": bool(cfg_value(cfg, "MODEL.CLIP.SHARE_TEXT_PREFIX"))}


class PromptDistillTrainer(TrainerX):
    """Base class. ``self.model`` is the student; only ``self.learnable()`` is registered, optimised and saved."""

    #: Dassl's registered model name (the checkpoint sub-folder), as in the reference code bases.
    model_name = "prompt_learner"
    #: Trainer config node holding the student's PREC key (e.g. "COOP").
    precision_node = ""

    # ------------------------------------------------------------------------------------------- what subclasses say
    def build_student(self) -> nn.Module:
        raise NotImplementedError

    def build_teacher(self) -> Optional[nn.Module]:
        return None

    def compute_loss(self, batch: TrainBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        raise NotImplementedError

    def reads_labels(self) -> bool:
        """Whether :meth:`compute_loss` reads labels (distillation does not: they are then never moved or read)."""
        return False

    def learnable(self) -> nn.Module:
        """The module whose parameters train (and whose state dict is the checkpoint)."""
        return self.model.prompt_learner

    def build_epoch_parts(self) -> Dict[str, EpochPart]:
        """End-of-epoch components (name -> part; the name keys its state in checkpoints); none by default."""
        return {}

    def param_groups(self) -> Optional[list]:
        """Optimizer parameter groups (e.g. a faster new head); None = every learnable parameter at OPTIM.LR."""
        return None

    def extra_results(self) -> Dict[str, Any]:
        """Method-specific fields merged into ``results.json`` (e.g. per-domain accuracies)."""
        return {}

    def checkpoint_meta(self) -> Dict[str, Any]:
        """Metadata stored with every checkpoint (strings and numbers only)."""
        return {"trainer": self.cfg.TRAINER.NAME, "backbone": self.cfg.MODEL.BACKBONE.NAME}

    # -------------------------------------------------------------------------------------------------- building
    def student_precision(self) -> str:
        node = self.cfg.TRAINER.get(self.precision_node, {}) if self.precision_node else {}
        requested = node.get("PREC", "fp32")
        prec = resolve_precision(requested, self.device, "student")
        if prec != requested:  # the warning goes to stderr; say it where log.txt records it too
            print(f"TRAINER.{self.precision_node}.PREC {requested} is not supported on {self.device.type}; "
                  f"the student runs in {prec}")
        return prec

    def build_model(self) -> None:
        cfg = self.cfg
        self.precision = self.student_precision()
        print(f"Building student {type(self).__name__} ({cfg.MODEL.BACKBONE.NAME}, precision {self.precision})")
        self.model = self.build_student()
        cast_to_precision(self.model.to(self.device), self.precision)
        learnable = self.learnable()
        for name, p in self.model.named_parameters():
            p.requires_grad_(False)
        for p in learnable.parameters():
            p.requires_grad_(True)
        if cfg.MODEL.INIT_WEIGHTS:
            self._load_learnable(cfg.MODEL.INIT_WEIGHTS)
        print(f"# learnable params: {count_num_param(learnable):,} (of {count_num_param(self.model):,})")
        self.optim = build_optimizer(learnable, cfg.OPTIM, param_groups=self.param_groups())
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learnable, self.optim, self.sched)
        # fp16 autocast only (amp on a GPU); bf16 and amp-on-CPU (bf16 autocast) need no loss scaling
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_grad_scaler(self.device, self.precision) else None
        self.teacher = None
        self.teacher_timer = RegionTimer(self.device)
        self.timings: Dict[str, float] = {}
        self.epoch_parts = self.build_epoch_parts()

    def before_train(self) -> None:
        # The teacher exists only for training: --eval-only runs never build it.
        self._training_run = True
        start = time.time()
        self.teacher = self.build_teacher()
        if self.teacher is not None:
            self.teacher.to(self.device)
            self.timings["teacher_build_s"] = time.time() - start
        super().before_train()

    # -------------------------------------------------------------------------------------------------- training
    def parse_batch_train(self, batch: Dict[str, Any]) -> TrainBatch:
        """Images and dataset indices (they key cached teacher outputs); labels only when :meth:`reads_labels`."""
        index = batch.get("index") if hasattr(batch, "get") else None
        labels = batch["label"].to(self.device, non_blocking=True) if self.reads_labels() else None
        return TrainBatch(images=batch["img"].to(self.device, non_blocking=True),
                          index=index.to(self.device, non_blocking=True) if isinstance(index, torch.Tensor) else None,
                          labels=labels)

    def adopt_data_manager(self, dm) -> None:
        """Take the loaders of a DataManager built with a custom wrapper (Dassl's attributes, as its own method)."""
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains = dm.num_classes, dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def before_epoch(self) -> None:
        """Keyed-view datasets draw this epoch's views (no-op for Dassl's own wrapper). The first epoch after a resume
        starts from the random states saved with the checkpoint: restored here, not at load time, because in the
        uninterrupted run nothing draws random numbers between that save and this point (whereas building loaders and
        caches in ``before_train`` may), so the epoch's data order and augmentations are the same."""
        if self._pending_rng is not None:
            for problem in restore_rng_state(self._pending_rng, cuda=self.device.type == "cuda"):
                print(f"Warning: {problem}; the resumed run is not bit-identical to an uninterrupted one")
            self._pending_rng = None
        dataset = getattr(self.train_loader_x, "dataset", None)
        if hasattr(dataset, "epoch"):
            dataset.epoch = self.epoch

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        parsed = self.parse_batch_train(batch)
        with autocast(self.device, self.precision):
            loss, terms = self.compute_loss(parsed)
        if self.scaler is None:
            self.model_zero_grad()
            loss.backward()
            self.model_update()
        else:
            self.model_zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {k: v.detach() for k, v in terms.items()}

    def run_epoch(self) -> None:
        """Dassl's epoch loop without its per-step host sync: loss terms stay on the device and are summed there;
        they are read (one sync) only on the lines Dassl would print, in the same format."""
        self.set_model_mode("train")
        self.num_batches = len(self.train_loader_x)
        self.teacher_timer = RegionTimer(self.device)  # subclasses wrap their teacher forward in it
        freq = self.cfg.TRAIN.PRINT_FREQ
        sums: Dict[str, torch.Tensor] = {}
        epoch_start = end = time.time()
        data_time = 0.0
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time += time.time() - end
            terms = self.forward_backward(batch)
            for name, value in terms.items():
                sums[name] = sums[name] + value if name in sums else value.clone()
            done = self.batch_idx + 1
            last = done == self.num_batches
            if done % freq == 0 or self.num_batches < freq or last:
                # Dassl checks every step (a host sync per step); a NaN/Inf anywhere makes the sums non-finite,
                # so checking them here still stops the run before anything is saved.
                if not all(torch.isfinite(v).all() for v in sums.values()):
                    raise FloatingPointError("Loss is infinite or NaN!")
            if done % freq == 0 or self.num_batches < freq:
                elapsed = time.time() - epoch_start
                remaining = (self.num_batches - done) + (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(elapsed / done * remaining)))
                losses = " ".join(f"{k} {float(v) / done:.4f}" for k, v in sums.items())
                print(f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{done}/{self.num_batches}] "
                      f"time {elapsed / done:.3f} data {data_time / done:.3f} {losses} "
                      f"lr {self.get_current_lr():.4e} eta {eta}")
                step = self.epoch * self.num_batches + self.batch_idx
                for k, v in sums.items():
                    self.write_scalar("train/" + k, float(v) / done, step)
                self.write_scalar("train/lr", self.get_current_lr(), step)
            end = time.time()
        total, teacher = time.time() - epoch_start, self.teacher_timer.total()
        self.timings[f"epoch{self.epoch + 1}_s"] = total
        self.timings["teacher_forward_s"] = self.timings.get("teacher_forward_s", 0.0) + teacher
        print(f"Epoch {self.epoch + 1}/{self.max_epoch} took {total:.1f}s: teacher forward {teacher:.1f}s, "
              f"student + data {total - teacher:.1f}s")

    # --------------------------------------------------------------------------------------------------- testing
    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(images, key="eval").float()

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Dassl's test pipeline (same prints, evaluator lines and scalars), keeping the full-precision metrics for
        ``results.json`` when the test split is evaluated."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split, loader = "test", self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in tqdm(loader):
            images, labels = self.parse_batch_test(batch)
            logits = self.model_inference(images)
            self.evaluator.process(logits, labels)
            self.after_test_batch(batch, logits, labels)
        results = self.evaluator.evaluate()  # prints the "* accuracy: ..." lines that result parsers read
        for name, value in results.items():
            self.write_scalar(f"{split}/{name}", value, self.epoch)
        if split == "test":
            self.write_results({k: float(v) for k, v in results.items()})
        return list(results.values())[0]

    def after_test_batch(self, batch: Dict[str, Any], logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Extra per-batch metrics (e.g. per-domain accuracy) from the batch itself; nothing by default."""

    def write_results(self, metrics: Dict[str, float]) -> str:
        """Full-precision metrics and the run's facts in ``<output>/results.json`` (result parsers read it first)."""
        cfg = self.cfg
        record = {
            "trainer": cfg.TRAINER.NAME,
            "dataset": cfg.DATASET.NAME,
            "subsample_classes": cfg_get(cfg.DATASET, "SUBSAMPLE_CLASSES", "all"),
            "num_shots": int(cfg.DATASET.NUM_SHOTS),
            "shots_used": shots_used_record(getattr(self, "dm", None)),
            "seed": int(cfg.SEED),
            "config": getattr(self, "config_name", None),
            "split": "test",
            "accuracy": metrics.get("accuracy"),
            "error": metrics.get("error_rate"),
            "macro_f1": metrics.get("macro_f1"),
            "num_classes": int(self.num_classes),
            "num_samples": len(self.test_loader.dataset),
            "epoch": self.evaluated_epoch(),
            "eval_only": not self._training_run,
            "resumed": self.resumed_from is not None,
            "train_processes": self.train_processes if self._training_run else 0,
            "regime": self.information_regime(),
            "timings": self.run_timings(),
            "peak_memory_mb": peak_memory_mb(self.device),
        }
        record.update(self.extra_results())
        return atomic_write_json(osp.join(self.output_dir, "results.json"), record)

    def evaluated_epoch(self) -> Optional[int]:
        """Epochs behind the evaluated weights: the best-validation checkpoint's (``TEST.FINAL_MODEL best_val``, which
        Dassl loads after training), the last trained here, or those restored (--eval-only, a rerun of a finished
        run)."""
        if getattr(self, "_trained", False) and not self._deployed_best:
            return int(self.epoch + 1)
        return self.loaded_epoch

    def run_timings(self) -> Dict[str, float]:
        """This run's timings over every process that trained it (the processes before the checkpoint it resumed
        from, see :func:`~trainers.core.checkpoints.merge_timings`). Time a killed process spent after its last
        checkpoint is lost with it and not counted."""
        current = dict(self.timings)
        if self._training_run and "train_s" not in current and hasattr(self, "time_start"):
            current["train_s"] = time.time() - self.time_start  # a checkpoint saved before after_train
        return merge_timings(self._prior_timings or {}, current)

    def information_regime(self) -> Dict[str, str]:
        """What the run saw (every results row states it)."""
        return {"labels": "none", "images": "training split", "class_names": "dataset",
                "teacher": "", "student": self.cfg.MODEL.BACKBONE.NAME}

    def after_epoch(self) -> None:
        """The :attr:`epoch_parts` (before anything is saved), then Dassl's (best-val selection; saves at
        TRAIN.CHECKPOINT_FREQ multiples and the last epoch), plus a save every epoch when CHECKPOINT_FREQ is Dassl's 0
        (see :meth:`save_model`)."""
        self._trained = True
        for part in self.epoch_parts.values():
            part.end_epoch(self.learnable(), self.epoch, self.max_epoch)
        super().after_epoch()
        if int(self.cfg.TRAIN.CHECKPOINT_FREQ) == 0 and self.epoch + 1 < self.max_epoch:
            self.save_model(self.epoch, self.output_dir)

    def after_train(self) -> None:
        self.timings["train_s"] = time.time() - self.time_start
        super().after_train()

    # ----------------------------------------------------------------------------------------------- checkpoints
    loaded_epoch: Optional[int] = None
    #: the epoch a training run resumed from (None: it started from scratch, or this is an --eval-only run)
    resumed_from: Optional[int] = None
    _training_run = False
    _deployed_best = False  # the weights are model-best's (loaded by load_model without an epoch)
    _pending_rng: Optional[Dict[str, Any]] = None
    _prior_timings: Optional[Dict[str, float]] = None
    _prior_processes = 0

    @property
    def train_processes(self) -> int:
        """Processes that have worked on this training run so far, this one included."""
        return self._prior_processes + 1

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        """One checkpoint per registered model, crash-safe: learnable tensors, optimizer, scheduler, metadata and
        :meth:`resume_state`, written atomically (temporary file, fsync, rename), then Dassl's ``checkpoint`` pointer.

        When (our trainers): ``TRAIN.CHECKPOINT_FREQ`` 0, Dassl's default, saves every epoch (learnable tensors only,
        so it is cheap); N > 0 every N epochs; a negative value only the last epoch (what Dassl's 0 does). What is
        kept: the newest ``TRAIN.KEEP_CHECKPOINTS`` (default 2; 0 = all) ``model.pth.tar-N`` per model, so the last
        epoch's, which ``--load-epoch MAX_EPOCH`` reads, always stays; ``model-best.pth.tar`` is never deleted.
        """
        resume = self.resume_state()
        keep = int(cfg_get(self.cfg.TRAIN, "KEEP_CHECKPOINTS", 2))
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            folder = osp.join(directory, name)
            file = model_name or checkpoint_name(epoch + 1)
            state = {
                "state_dict": self._models[name].state_dict(),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": None if val_result is None else float(val_result),
                "meta": self.checkpoint_meta(),
                "resume": resume,
            }
            path = atomic_torch_save(state, osp.join(folder, file))
            print(f"Checkpoint saved to {path}")
            if not model_name:  # the pointer names the newest epoch checkpoint (Dassl's also named model-best)
                write_pointer(folder, file)
                prune_checkpoints(folder, epoch + 1, keep)
            if is_best:
                best = osp.join(folder, "model-best.pth.tar")
                with open(path, "rb") as src:
                    atomic_write(best, lambda f: shutil.copyfileobj(src, f))
                print(f'Best checkpoint saved to "{best}"')

    def resume_state(self) -> Dict[str, Any]:
        """What an exact resume needs besides tensors, optimizer and scheduler: random states, the timings so far,
        the GradScaler, the best validation result and the state of each of :attr:`epoch_parts` (under its name)."""
        scaler = getattr(self, "scaler", None)
        state = {"rng": capture_rng_state(cuda=self.device.type == "cuda"), "timings": self.run_timings(),
                 "train_processes": self.train_processes,
                 "scaler": scaler.state_dict() if scaler is not None else None,
                 "best_result": float(self.best_result)}
        state.update({name: part.state_dict() for name, part in self.epoch_parts.items()})
        return state

    def restore_resume_state(self, state: Dict[str, Any]) -> None:
        """Take back :meth:`resume_state` (random states are set when the next epoch starts: :meth:`before_epoch`)."""
        self._pending_rng = state.get("rng")
        self._prior_timings = dict(state.get("timings") or {})
        self._prior_processes = int(state.get("train_processes", 1))
        scaler = getattr(self, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("best_result") is not None:
            self.best_result = float(state["best_result"])
        for name, part in self.epoch_parts.items():
            part.load_state_dict(state.get(name), self.device)

    def resume_model_if_exist(self, directory: str) -> int:
        """Dassl's resume, crash-safe and exact: the newest ``model.pth.tar-N`` that loads for every model (a truncated
        or foreign newest file is passed over with a warning naming it), a stale ``checkpoint`` pointer repaired, and
        the optimizer, scheduler and :meth:`resume_state` restored. No model folder = train from scratch, as Dassl;
        folders without a loadable checkpoint (a kill during the first save) = from scratch, with a warning."""
        folders = {name: osp.join(directory, name) for name in self.get_model_names()}
        if not all(osp.isdir(folder) for folder in folders.values()):
            print("No checkpoint found, train from scratch")
            return 0
        for folder in folders.values():
            for path in remove_stale_temp_files(folder):
                print(f"Removed {path}, left by an interrupted save")
        epoch, ckpts, damaged = newest_loadable(folders, lambda path: load_checkpoint_file(path, self.device))
        for problem in damaged:
            print(f"Warning: {problem}; falling back to an older checkpoint")
        if epoch is None:
            print(f"Warning: no loadable checkpoint in {', '.join(folders.values())}; training from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        for name, folder in folders.items():
            file, ckpt = checkpoint_name(epoch), ckpts[name]
            pointer = read_pointer(folder)
            if pointer != file:
                print(f"Warning: {osp.join(folder, POINTER_FILE)} named {pointer or 'nothing'}; it now names {file}")
                write_pointer(folder, file)
            path = osp.join(folder, file)
            print(f'Loading checkpoint from "{path}"')
            try:
                self._models[name].load_state_dict(ckpt["state_dict"])
            except RuntimeError as exc:
                raise RuntimeError(f"{path} does not fit this run's {name}: it was saved by a run with other "
                                   f"settings. Use another --output-dir, or delete {folder} to train from scratch."
                                   f"\n{exc}") from exc
            for part, target in (("optimizer", self._optims[name]), ("scheduler", self._scheds[name])):
                if target is not None and ckpt.get(part) is not None:
                    target.load_state_dict(ckpt[part])
        state = next(iter(ckpts.values())).get("resume")
        if state is None:
            print("Warning: the checkpoint holds no random states (saved by an older version): training resumes, but "
                  "not bit-identically to an uninterrupted run")
        self.restore_resume_state(state or {})
        self.resumed_from = self.loaded_epoch = epoch
        print(f"Previous epoch: {epoch}")
        return epoch

    def _load_learnable(self, path: str) -> Dict[str, Any]:
        if not osp.isfile(path):
            raise FileNotFoundError(f"No checkpoint at {path} (MODEL.INIT_WEIGHTS or --model-dir/--load-epoch).")
        ckpt = load_checkpoint_file(path, self.device)
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        ignored = load_learner_state(self.learnable(), state, source=path)
        if ignored:
            print(f"Ignored {len(ignored)} non-learnable entries of {path} (frozen weights / class buffers)")
        return ckpt

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load the learnable tensors of a trained run; a missing checkpoint is an error, never a silent re-train."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given (ignore this if it's done on "
                  "purpose)")
            return
        file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            folder = osp.join(directory, name)
            path = osp.join(folder, file)
            if not osp.isfile(path):
                found = sorted(os.listdir(folder)) if osp.isdir(folder) else []
                raise FileNotFoundError(
                    f"No checkpoint {file} in {folder} (found: {found or 'nothing'}). --model-dir must be the training "
                    f"output dir and --load-epoch the epoch it saved (its MAX_EPOCH)."
                )
            ckpt = self._load_learnable(path)
            self.loaded_epoch = int(ckpt.get("epoch", -1)) if isinstance(ckpt, dict) else None
            self._deployed_best = epoch is None
            print(f"Load {path} to {name} (epoch={self.loaded_epoch})")
