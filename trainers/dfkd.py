"""Data-free distillation of CLIP with prompt diversification (Xuan et al., ACM MM 2023) as Dassl trainers.

``DFKD_Contrastive``, ``DFKD_Mix``, ``DFKD_Random`` and the baseline ``DFKD_Handcrafted`` share one pipeline and
differ only in the prompt mode (``trainers/core/diversify.py``):

1. before training, the synthetic set is read from its cache or synthesised (``trainers/core/synthesis.py``):
   diversified prompts -> one text target per image -> images optimised against the frozen CLIP teacher;
2. a torchvision student (ResNet-18 by default) learns from the frozen CLIP's zero-shot logits (100 x cosine over
   the class names, hand-crafted template) on the same augmented view, loss T^2 KL (T = 4) [+ CE on the prompt
   label, weight 0 by default];
3. the test set is the real benchmark (DATASET.NAME, TARGET_DOMAINS); ``results.json`` holds per-domain accuracy
   in ``domains``. Optional few-shot fine-tuning on k real labelled images per source-domain class.

Only the method's existence, the three prompt-mode names and "Contrastive best" are known from the paper; every
other choice is our reconstruction, a TRAINER.DFKD.* key below, listed in docs/dfkd.md.

This module holds the config keys and the trainers; the synthetic-set orchestration is trainers/dfkd_synthesis.py,
the student and its loss trainers/core/students.py, the per-domain evaluator trainers/core/domain_eval.py.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from dassl.data.data_manager import DataManager, build_data_loader
from dassl.data.datasets import Datum
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY

from .base import PromptDistillTrainer, TrainBatch
from .config import add_keys, cfg_node, cfg_value, config_keys
from .core.clip_models import LoadedClip
from .core.diversify import PromptEncoder
from .core.domain_eval import DomainAccuracy, benchmark_domains
from .core.precision import autocast, resolve_precision
from .core.students import StudentNet, build_student_net, distillation_loss
from .core.synthesis import SyntheticSetError, read_synthetic_set
from .core.teacher import FrozenTeacher
from .dfkd_synthesis import (diversify_config, ensure_synthetic_set, load_teacher_clip, prompt_classnames,
                             synthesis_config)

#: TRAINER.DFKD defaults. Every value is a reconstruction (docs/dfkd.md), not a setting read from the paper.
DFKD_DEFAULTS: Dict[str, Any] = {
    # prompts (§3)
    "PROMPT_MODE": "",  # "" = the trainer's own mode; any other value must equal it
    "TEMPLATE": "a photo of a {}.",
    "TEMPLATE_ENSEMBLE": [],
    "STYLE_DICT": [],  # [] = the 20 generic words of trainers/core/diversify.py
    "STYLE_EXCLUDE": "domains",  # domains | none: drop styles sharing a word with a domain name
    "MIX_K": 2,
    "MIX_ALPHA": 1.0,
    "MIX_SPACE": "feature",  # feature | token
    "MIX_TEMPLATE": "a {style} of a {}.",
    "STYLE_TEMPLATE": "a [S*] style of a {}.",
    "RAND_STATS": "table",  # table | isotropic
    "RAND_ISO_STD": 0.02,
    "RAND_N_TOKENS": 1,
    "RAND_GUARD": True,
    "RAND_MAX_TRIES": 20,
    "N_PROMPTS": 16,
    "N_PSEUDO_TOKENS": 1,
    "CON_TAU": 0.1,
    "CON_LAMBDA_CLS": 1.0,
    "CON_CLS_SCALE": 100.0,
    "CON_STEPS": 200,
    "CON_LR": 2e-3,
    "CON_INIT_STD": 0.02,
    "CON_POSITIVES": "none",  # none | cross_class
    "CON_ROUNDS": 1,
    "CON_JOINT": False,  # alternate prompt steps with latent steps on probe images (reconstruction)
    "CON_JOINT_ROUNDS": 4,
    "CON_JOINT_ITERS": 25,  # latent steps of the probe images per round
    "CON_JOINT_STEPS": 50,  # prompt steps per round
    "CON_JOINT_LAMBDA": 1.0,  # weight of the image-space term
    # synthesis (§2)
    "SYN_GENERATOR": "",  # "" = vqgan when VQGAN_CKPT is set, else fourier | pixel | fourier | vqgan
    "SYN_ITERS": 400,
    "SYN_LR": 0.1,
    "SYN_CUTOUTS": 8,
    "SYN_AUGMENT": True,
    "SYN_AUG_P": 0.7,
    "SYN_NOISE": 0.1,
    "SYN_SIZE": 224,
    "SYN_PER_CLASS": 64,
    "SYN_BATCH": 16,
    "SYN_PRECISION": "fp32",  # fp32 | bf16 | fp16 (fp16 on GPU only; CPU runs it in fp32)
    "SYN_KEEP": "final",  # final | best
    "SYN_INIT_WEIGHT": 0.0,
    "SYN_FOURIER_DECAY": 1.0,
    "SYN_VQGAN_INIT": "uniform",  # uniform | codebook
    "SYN_SEED": 1,  # -1 = SEED
    "SYN_CACHE_DIR": "",  # "" = $DFKD_SYN_CACHE, else output/dfkd_synthetic
    "SYN_DIR": "",  # use this existing synthetic folder instead of the cache
    "SYN_PROGRESS": True,
    "VQGAN_CKPT": "",
    "VQGAN_CONFIG": "",  # taming yaml; "" = vqgan_imagenet_f16_16384's decoder settings
    "VQGAN_TRUSTED": False,  # allow unpickling a Lightning checkpoint (runs code from the file)
    # teacher and student (§4)
    "TEACHER": "ViT-B/32",
    "TEACHER_BACKEND": "auto",
    "TEACHER_PRETRAINED": "",
    "TEACHER_PREC": "fp32",
    "TEACHER_SCALE": 100.0,
    "TEACHER_CACHE": "online",  # online | cached (one pass over un-augmented images; approximate)
    "STUDENT": "resnet18",
    "STUDENT_PRETRAINED": "",  # local ImageNet weights file; "" = random init (never downloaded)
    "HEAD_LR_MULT": 10.0,  # new head's LR multiplier when STUDENT_PRETRAINED is set
    "PREC": "fp32",  # student: fp32 | amp | bf16 | fp16 (fp16 on GPU; trainers/core/precision.py)
    "KD_T": 4.0,
    "KD_CE_WEIGHT": 0.0,
    # few-shot (§5)
    "FEWSHOT_K": 0,  # 0 = zero-shot setting
    "FEWSHOT_MODE": "finetune",  # finetune (real k-shot only, from MODEL.INIT_WEIGHTS) | union (synthetic + real)
    "FEWSHOT_CE_WEIGHT": 1.0,
    "FEWSHOT_KD_WEIGHT": 1.0,
    # evaluation and class names
    "CLASSNAMES_FILE": "",  # lines "<dataset name> <prompt name>", e.g. "monitor computer monitor"
    "EVAL_WHO": "student",  # student | teacher (the CLIP reference row)
}


@config_keys
def add_dfkd_config(cfg) -> None:
    add_keys(cfg, "TRAINER.DFKD", DFKD_DEFAULTS)


# ---------------------------------------------------------------------------------------------------- trainer
class DFKDTrainer(PromptDistillTrainer):
    """Synthetic images -> torchvision student distilled from frozen CLIP zero-shot logits -> real-domain test."""

    prompt_mode = ""
    model_name = "student"
    precision_node = "DFKD"

    @property
    def dfkd(self):
        return cfg_node(self.cfg, "TRAINER.DFKD")

    def check_cfg(self, cfg) -> None:
        node = cfg_node(cfg, "TRAINER.DFKD")
        if node.PROMPT_MODE and node.PROMPT_MODE != self.prompt_mode:
            raise ValueError(f"{type(self).__name__} uses prompt mode {self.prompt_mode!r}; TRAINER.DFKD.PROMPT_MODE "
                             f"is {node.PROMPT_MODE!r}. Pick the trainer of that mode instead.")
        if cfg.TEST.FINAL_MODEL == "best_val":
            raise ValueError("DFKD has no real validation data: TEST.FINAL_MODEL best_val would select on the test "
                             "domains. Use last_step.")
        for key, allowed in (("FEWSHOT_MODE", ("finetune", "union")), ("TEACHER_CACHE", ("online", "cached")),
                             ("EVAL_WHO", ("student", "teacher"))):
            if node[key] not in allowed:
                raise ValueError(f"TRAINER.DFKD.{key} must be one of {allowed}, got {node[key]!r}.")

    # ---------------------------------------------------------------------------------------------- data
    def build_data_loader(self) -> None:
        """The real benchmark gives the test set (and few-shot images); the training loader is built in
        :meth:`before_train`, so ``--eval-only`` never synthesises."""
        dm = DataManager(self.cfg)
        self.dm = dm
        self.test_loader = dm.test_loader
        self.val_loader = None  # data-free: no real validation data, never select on the target domains
        self.train_loader_u = None
        self.train_loader_x = None
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.classnames = prompt_classnames([dm.lab2cname[i] for i in range(dm.num_classes)],
                                            self.dfkd.CLASSNAMES_FILE)
        self.synthetic_dir = ""
        self.n_synthetic = 0

    def domain_names(self) -> List[str]:
        return benchmark_domains(self.cfg, self.dm.dataset)

    def teacher_clip(self) -> LoadedClip:
        if getattr(self, "_teacher_clip", None) is None:
            self._teacher_clip = load_teacher_clip(self.cfg)
        return self._teacher_clip

    def training_items(self) -> List[Datum]:
        """Synthetic images (labelled by the class whose prompt drove them) and/or k real images per class."""
        node = self.dfkd
        k = int(node.FEWSHOT_K)
        items: List[Datum] = []
        if not (k > 0 and node.FEWSHOT_MODE == "finetune"):
            self.synthetic_dir = ensure_synthetic_set(self.cfg, self.prompt_mode, self.classnames,
                                                      self.domain_names(), self.device, self.teacher_clip())
            items = [Datum(impath=p, label=y, domain=0, classname=c)
                     for p, y, c in read_synthetic_set(self.synthetic_dir, self.classnames)]
            print(f"Training on {len(items)} synthetic images from {self.synthetic_dir}")
        self.n_synthetic = len(items)
        if k > 0:
            if node.FEWSHOT_MODE == "finetune" and not self.cfg.MODEL.INIT_WEIGHTS:
                print("Warning: few-shot fine-tuning without MODEL.INIT_WEIGHTS starts from an undistilled student")
            real = self.dm.dataset.generate_fewshot_dataset(self.dm.dataset.train_x, num_shots=k)
            print(f"Adding {len(real)} real images ({k} per class, source domains "
                  f"{list(self.cfg.DATASET.SOURCE_DOMAINS)})")
            items += real
        return items

    def before_train(self) -> None:
        cfg = self.cfg
        if self.dfkd.EVAL_WHO == "teacher":
            raise RuntimeError("TRAINER.DFKD.EVAL_WHO teacher evaluates the CLIP teacher: run it with --eval-only.")
        self._train_items = self.training_items()
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER, data_source=self._train_items,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=build_transform(cfg, is_train=True), is_train=True)
        super().before_train()
        self._cached_logits = self.cache_teacher_logits() if self.dfkd.TEACHER_CACHE == "cached" else None

    @torch.no_grad()
    def cache_teacher_logits(self) -> torch.Tensor:
        """Teacher logits of every training image once, on its un-augmented (test-transform) view."""
        cfg = self.cfg
        loader = build_data_loader(cfg, data_source=self._train_items, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=build_transform(cfg, is_train=False), is_train=False)
        out = torch.empty(len(self._train_items), self.num_classes)
        for batch in loader:
            out[batch["index"]] = self.teacher.logits(batch["img"].to(self.device), self.dfkd.TEACHER_SCALE).cpu()
        print(f"Cached teacher logits of {len(out)} images (approximate: un-augmented views)")
        return out.to(self.device)

    # -------------------------------------------------------------------------------------------- models
    def build_student(self) -> StudentNet:
        node = self.dfkd
        init = f"weights {node.STUDENT_PRETRAINED}" if node.STUDENT_PRETRAINED else "random init"
        print(f"Student {node.STUDENT} ({init}), {self.num_classes} classes")
        return build_student_net(node.STUDENT, self.num_classes, node.STUDENT_PRETRAINED)

    def learnable(self) -> nn.Module:
        return self.model

    def param_groups(self) -> Optional[list]:
        """A pretrained body keeps OPTIM.LR; the new head learns HEAD_LR_MULT times faster."""
        node = self.dfkd
        if not node.STUDENT_PRETRAINED or float(node.HEAD_LR_MULT) == 1.0:
            return None
        return [{"params": list(self.model.body.parameters())},
                {"params": list(self.model.head.parameters()), "lr": self.cfg.OPTIM.LR * float(node.HEAD_LR_MULT)}]

    def build_teacher(self) -> FrozenTeacher:
        node = self.dfkd
        loaded = self.teacher_clip()
        prec = resolve_precision(node.TEACHER_PREC, self.device, "teacher")
        normalised = "normalize" in self.cfg.INPUT.TRANSFORMS
        mean = self.cfg.INPUT.PIXEL_MEAN if normalised else (0.0, 0.0, 0.0)
        std = self.cfg.INPUT.PIXEL_STD if normalised else (1.0, 1.0, 1.0)
        loaded.model.to(self.device).float()
        truncate = cfg_value(self.cfg, "MODEL.CLIP.TRUNCATE_TEXT")
        heads = PromptEncoder(loaded.model, loaded.tokenize, truncate=truncate).class_features(
            self.classnames, node.TEMPLATE, list(node.TEMPLATE_ENSEMBLE))
        teacher = FrozenTeacher(loaded, self.cfg.INPUT.SIZE[0], mean, std, precision=prec).to(self.device)
        teacher.class_features = heads.to(self.device)
        print(f"Teacher {node.TEACHER} ({loaded.backend}, {loaded.source}), precision {prec}, zero-shot head "
              f"{node.TEMPLATE!r}{' + ensemble' if node.TEMPLATE_ENSEMBLE else ''} x {len(self.classnames)} classes")
        return teacher

    # ---------------------------------------------------------------------------------------------- loss
    def reads_labels(self) -> bool:
        """The synthetic images' labels are the classes whose prompts drove them (CE term; few-shot real labels)."""
        return True

    def teacher_logits(self, batch: TrainBatch) -> torch.Tensor:
        with self.teacher_timer:
            if self._cached_logits is not None:
                return self._cached_logits[batch.index]
            return self.teacher.logits(batch.images, self.dfkd.TEACHER_SCALE)

    def loss_weights(self, index: torch.Tensor) -> Tuple[float, Optional[torch.Tensor]]:
        """(KD weight, per-sample CE weights or None): synthetic images use KD_CE_WEIGHT, real few-shot ones
        FEWSHOT_CE_WEIGHT; a fine-tuning run (no synthetic images) weights KD by FEWSHOT_KD_WEIGHT."""
        node = self.dfkd
        k = int(node.FEWSHOT_K)
        syn_ce, real_ce = float(node.KD_CE_WEIGHT), float(node.FEWSHOT_CE_WEIGHT) if k > 0 else 0.0
        kd = float(node.FEWSHOT_KD_WEIGHT) if self.n_synthetic == 0 else 1.0
        if syn_ce == 0.0 and real_ce == 0.0:
            return kd, None
        real = index >= self.n_synthetic
        return kd, torch.where(real, real_ce, syn_ce)

    def compute_loss(self, batch: TrainBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        teacher = self.teacher_logits(batch)
        student = self.model(batch.images)
        kd_weight, ce_weights = self.loss_weights(batch.index)
        return distillation_loss(teacher, student, batch.labels, float(self.dfkd.KD_T), kd_weight, ce_weights)

    # ------------------------------------------------------------------------------------------- testing
    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        if self.dfkd.EVAL_WHO == "teacher" and self.teacher is None:
            self.teacher = self.build_teacher()
        self.domain_meter = DomainAccuracy(list(self.cfg.DATASET.TARGET_DOMAINS))
        return super().test(split)

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        if self.dfkd.EVAL_WHO == "teacher":
            return self.teacher.logits(images, self.dfkd.TEACHER_SCALE)
        with autocast(self.device, self.precision):
            return self.model(images).float()

    def after_test_batch(self, batch: Dict[str, Any], logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.domain_meter.update(logits, labels, batch["domain"])

    def extra_results(self) -> Dict[str, Any]:
        meter = getattr(self, "domain_meter", None)
        node = self.dfkd
        return {"domains": meter.top1() if meter else {},
                "domains_mean_per_class": meter.mean_per_class() if meter else {},
                "prompt_mode": self.prompt_mode, "evaluated": node.EVAL_WHO,
                "synthetic_set": self.synthetic_dir, "n_synthetic": self.n_synthetic,
                "fewshot_k": int(node.FEWSHOT_K), "classnames": self.classnames}

    def information_regime(self) -> Dict[str, str]:
        node = self.dfkd
        k = int(node.FEWSHOT_K)
        if node.EVAL_WHO == "teacher":
            images = "none (zero-shot CLIP teacher)"
        elif k > 0:
            images = (f"{k}-shot real ({'+'.join(self.cfg.DATASET.SOURCE_DOMAINS)})"
                      + (" + synthetic" if node.FEWSHOT_MODE == "union" else " after data-free distillation"))
        else:
            images = f"synthetic only ({self.prompt_mode} prompts)"
        labels = "none" if node.EVAL_WHO == "teacher" else \
            "prompt classes" + (f" + {k}-shot real labels" if k > 0 else "")
        return {"labels": labels, "images": images,
                "class_names": "dataset", "teacher": f"{node.TEACHER}",
                "student": node.STUDENT if node.EVAL_WHO == "student" else "none"}

    def checkpoint_meta(self) -> Dict[str, Any]:
        node = self.dfkd
        return {"trainer": self.cfg.TRAINER.NAME, "student": node.STUDENT, "teacher": node.TEACHER,
                "prompt_mode": self.prompt_mode, "synthetic_set": self.synthetic_dir,
                "fewshot_k": int(node.FEWSHOT_K)}

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        if self.dfkd.EVAL_WHO == "teacher":
            if directory:
                print(f"EVAL_WHO teacher: ignoring --model-dir {directory}")
            return
        super().load_model(directory, epoch)


@TRAINER_REGISTRY.register()
class DFKD_Contrastive(DFKDTrainer):
    """DFKD with learned, contrastively diversified style pseudo-words (the paper's best mode)."""

    prompt_mode = "contrastive"


@TRAINER_REGISTRY.register()
class DFKD_Mix(DFKDTrainer):
    """DFKD with convex mixtures of dictionary styles."""

    prompt_mode = "mix"


@TRAINER_REGISTRY.register()
class DFKD_Random(DFKDTrainer):
    """DFKD with random pseudo-words from the token-embedding statistics."""

    prompt_mode = "random"


@TRAINER_REGISTRY.register()
class DFKD_Handcrafted(DFKDTrainer):
    """DFKD baseline: one hand-crafted prompt per class."""

    prompt_mode = "handcrafted"


#: trainer name -> prompt mode (tools/synthesize.py reads it)
MODES_BY_TRAINER = {c.__name__: c.prompt_mode for c in (DFKD_Contrastive, DFKD_Mix, DFKD_Random, DFKD_Handcrafted)}

__all__ = ["DFKD_DEFAULTS", "MODES_BY_TRAINER", "DFKDTrainer", "DFKD_Contrastive", "DFKD_Mix", "DFKD_Random",
           "DFKD_Handcrafted", "StudentNet", "build_student_net", "distillation_loss", "ensure_synthetic_set",
           "diversify_config", "synthesis_config", "prompt_classnames", "benchmark_domains", "DomainAccuracy",
           "SyntheticSetError"]
