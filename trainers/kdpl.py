"""KDPL (Mistretta et al., ECCV 2024): a frozen large CLIP teacher supervises a student's prompts, without labels.

Loss = 0.5 * KL(p_T || p_S) + 0.5 * KL(p_S || p_T) over the same classes, both logits scaled by the *student's*
CLIP logit scale. ``TRAINER.KDPL.CLASS_AGNOSTIC`` replaces the dataset's class names by the authors' 20,930-name
dictionary and keeps, per batch, the K_MAX names the teacher finds most probable (KDPL-CA).
"""
from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Dict, List, Optional, Tuple

import torch

from dassl.data import DataManager
from dassl.engine import TRAINER_REGISTRY

from .base import PromptDistillTrainer, TrainBatch, load_student_clip, text_path_options
from .config import add_keys, cfg_node, cfg_value, config_keys
from .core.class_dictionary import load_class_dictionary
from .core.clip_models import load_clip
from .core.losses import symmetric_kl
from .core.precision import autocast, compute_dtype, resolve_precision
from .core.prompt_learners import (CoCoOpPromptLearner, CoOpPromptLearner, MaPLePromptLearner, PromptedCLIP,
                                   PromptLearner, VPTPromptLearner)
from .core.selection import select_top_classes
from .core.teacher import FrozenTeacher
from .core.templates import DEFAULT_TEMPLATE, template_for
from .offline_cache import OfflineTeacherCache
from .promptsrc import GaussianPromptAggregation, SelfConsistency, add_promptsrc_config, build_ivlp_learner


@config_keys
def add_kdpl_config(cfg) -> None:
    add_keys(cfg, "TRAINER.KDPL", {
        "TEACHER": "ViT-H-14-quickgelu",
        "TEACHER_PRETRAINED": "dfn5b",
        "TEACHER_BACKEND": "open_clip",
        "TEACHER_PREC": "fp32",
        "TEACHER_TEMPLATE": "",
        "CLASS_AGNOSTIC": False,
        "K_MAX": 1000,
        "CA_DICTIONARY": "",
        "TEACHER_CACHE": "",  # folder of cached teacher logits (tools/build_teacher_cache.py); "" = online
        "VIEW_KEYED_AUG": False,  # training views keyed by (seed, epoch, index); implied by TEACHER_CACHE
        "CACHE_TOPK": 0,  # logits kept per view when building a cache; 0 = all classes (exact up to fp16)
        "KL_FORWARD_WEIGHT": 0.5,
        "KL_REVERSE_WEIGHT": 0.5,
    })
    add_keys(cfg, "TRAINER.COOP", {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "CLASS_TOKEN_POSITION": "end",
                                   "PREC": "fp16"})
    add_keys(cfg, "TRAINER.COCOOP", {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16"})
    add_keys(cfg, "TRAINER.VPT", {"N_CTX_VISION": 2, "PROMPT_DEPTH_VISION": 1, "CTX_INIT": "a photo of a",
                                  "PREC": "fp16"})
    add_keys(cfg, "TRAINER.MAPLE", {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9})
    add_promptsrc_config(cfg)


class KDPLTrainer(PromptDistillTrainer):
    """Which student: :meth:`build_learner`. Which teacher: a frozen CLIP by config, or its outputs from an offline
    cache (``self.cache``). Which loss: symmetric KL."""

    cache_node = "KDPL"

    @cached_property
    def cache(self) -> OfflineTeacherCache:
        return OfflineTeacherCache(self.cfg, self.cache_node, self.device)

    def build_learner(self, clip_model, tokenize) -> PromptLearner:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ classes
    @property
    def kdpl(self):
        return cfg_node(self.cfg, "TRAINER.KDPL")

    def host(self, cfg=None):
        """The student's host node (TRAINER.COOP, ...), read with declared defaults (a fork may have replaced it)."""
        return cfg_node(cfg or self.cfg, f"TRAINER.{self.precision_node}")

    def training_classnames(self) -> List[str]:
        """The candidates both models score during training: the dataset's classes, or the CA dictionary."""
        if not self.kdpl.CLASS_AGNOSTIC:
            return list(self.dm.dataset.classnames)
        if not hasattr(self, "_dictionary"):
            names, path, digest = load_class_dictionary(self.kdpl.CA_DICTIONARY)
            self._dictionary = names
            lower = {n.lower() for n in names}
            covered = sum(c.replace("_", " ").lower() in lower for c in self.dm.dataset.classnames)
            print(f"Class-agnostic dictionary: {len(names)} names from {path} (sha256 {digest}); "
                  f"{covered}/{len(self.dm.dataset.classnames)} of the dataset's class names occur in it")
            self.dictionary_sha256 = digest
        return self._dictionary

    # ------------------------------------------------------------------------------------------------ models
    def build_student(self) -> PromptedCLIP:
        loaded = load_student_clip(self.cfg)
        size = self.cfg.INPUT.SIZE[0]
        if size != loaded.preprocess.size:
            raise ValueError(f"INPUT.SIZE {size} does not match the student's input resolution "
                             f"{loaded.preprocess.size} ({self.cfg.MODEL.BACKBONE.NAME}).")
        learner = self.build_learner(loaded.model, loaded.tokenize)
        template = template_for(self.cfg.DATASET.NAME, self.kdpl.TEACHER_TEMPLATE) \
            if not self.kdpl.CLASS_AGNOSTIC else DEFAULT_TEMPLATE
        student = PromptedCLIP(loaded, learner, fixed_template=self.fixed_template(), **text_path_options(self.cfg))
        student.register_class_set("eval", self.dm.dataset.classnames)
        self.teacher_template = template
        return student

    def fixed_template(self) -> str:
        return DEFAULT_TEMPLATE

    def before_train(self) -> None:
        names = self.training_classnames()
        self.model.register_class_set("train", names)
        self.k_max = min(int(self.kdpl.K_MAX), len(names)) if self.kdpl.CLASS_AGNOSTIC else len(names)
        super().before_train()

    # ------------------------------------------------------------------------------------- teacher cache
    def build_data_loader(self) -> None:
        wrapper = self.cache.dataset_wrapper()
        if wrapper is None:
            return super().build_data_loader()
        self.adopt_data_manager(DataManager(self.cfg, dataset_wrapper=wrapper))

    def cache_meta(self) -> Dict[str, object]:
        """A row = the teacher's cosine similarities to the training classes: nothing of the student's, so every
        KDPL_<Base> trainer reads one cache (the student's logit scale is applied at read time)."""
        k = self.kdpl
        names = self.training_classnames()
        return {**self.cache.view_meta(self.train_loader_x.dataset.data_source), "kind": "logits", "width": len(names), "num_classes": len(names),
                "teacher": k.TEACHER, "teacher_pretrained": k.TEACHER_PRETRAINED, "teacher_backend": k.TEACHER_BACKEND,
                "teacher_prec": k.TEACHER_PREC, "template": self.teacher_template,
                "classes_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}

    def cache_rows(self, teacher: FrozenTeacher, images: torch.Tensor) -> torch.Tensor:
        return teacher.logits(images, 1.0)

    def cache_row_scale(self) -> float:
        return float(self.model.logit_scale)

    def student_cache_meta(self) -> Optional[Dict[str, object]]:
        """A frozen student image tower (CoOp, CoCoOp) is cached too, per backbone and precision: a cached step then
        runs no image tower."""
        if self.model.prompt_learner.has_vision_prompts:
            return None
        return {"kind": "student_features", "width": int(self.model.clip.text_projection.shape[1]),
                "student": self.cfg.MODEL.BACKBONE.NAME, "student_weights": cfg_value(self.cfg, "MODEL.CLIP.WEIGHTS"),
                "student_prec": self.precision,
                "student_compute": str(compute_dtype(self.device, self.precision)).replace("torch.", "")}

    def student_cache_rows(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.precision):  # as the training step computes them
            return self.model.encode_image(images)

    def cache_topk(self) -> int:
        k = int(self.kdpl.CACHE_TOPK)
        self.check_cache_topk(k, "TRAINER.KDPL.CACHE_TOPK")
        return k

    def check_cache_topk(self, topk: int, source: str) -> None:
        if self.kdpl.CLASS_AGNOSTIC and 0 < topk < int(self.kdpl.K_MAX):
            raise ValueError(f"{source} {topk} < K_MAX {self.kdpl.K_MAX}: class-agnostic KDPL selects the teacher's "
                             "K_MAX most probable classes per batch, a ranking a top-k cache does not keep beyond k. "
                             "Set CACHE_TOPK >= K_MAX (or 0 for whole rows).")

    def write_cache_files(self, cache_dir: str, teacher: FrozenTeacher) -> None:
        """A KDPL cache is its rows: nothing else to write."""

    def build_teacher(self) -> Optional[FrozenTeacher]:
        cache = self.cache.open(self.cache_meta(), self.max_epoch, scale=self.cache_row_scale(),
                                student_meta=self.student_cache_meta(), check_topk=self.check_cache_topk)
        return None if cache is not None else self.build_online_teacher()

    def build_online_teacher(self) -> FrozenTeacher:
        k = self.kdpl
        prec = resolve_precision(k.TEACHER_PREC, self.device, "teacher")
        loaded = load_clip(k.TEACHER, backend=k.TEACHER_BACKEND, pretrained=k.TEACHER_PRETRAINED,
                           download_root=cfg_value(self.cfg, "MODEL.CLIP.DOWNLOAD_ROOT"))
        print(f"Teacher {k.TEACHER} ({loaded.backend}, {loaded.source}), precision {prec}, input "
              f"{loaded.preprocess.size}px {loaded.preprocess.resize_mode}")
        teacher = FrozenTeacher(loaded, self.cfg.INPUT.SIZE[0], self.cfg.INPUT.PIXEL_MEAN, self.cfg.INPUT.PIXEL_STD,
                                precision=prec, truncate_text=cfg_value(self.cfg, "MODEL.CLIP.TRUNCATE_TEXT")
                                ).to(self.device)
        teacher.set_class_texts([self.teacher_template.format(c.replace("_", " "))
                                 for c in self.training_classnames()])
        return teacher

    # -------------------------------------------------------------------------------------------------- loss
    def teacher_targets(self, batch: TrainBatch) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Teacher logits (scaled by the student's logit scale) and, in CA mode, the selected class indices."""
        with self.teacher_timer:
            if self.cache.teacher is not None:
                teacher_logits = self.cache.rows(self.epoch, batch.index)
            else:
                teacher_logits = self.teacher.logits(batch.images, self.model.logit_scale)
        if not self.kdpl.CLASS_AGNOSTIC:
            return teacher_logits, None
        idx = select_top_classes(teacher_logits, self.k_max)
        return teacher_logits[:, idx], idx

    def compute_loss(self, batch: TrainBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        teacher_logits, idx = self.teacher_targets(batch)
        student_logits = self.model(batch.images, key="train", idx=idx,
                                    image_features=self.cache.student_features(self.epoch, batch.index))
        return self.kdpl_loss(teacher_logits, student_logits)

    def kdpl_loss(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor
                  ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        loss, fwd, rev = symmetric_kl(teacher_logits, student_logits, self.kdpl.KL_FORWARD_WEIGHT,
                                      self.kdpl.KL_REVERSE_WEIGHT)
        return loss, {"loss symmetric KL": loss, "loss KL forward": fwd, "loss KL reverse": rev}

    def information_regime(self) -> Dict[str, str]:
        k = self.kdpl
        teacher = f"{k.TEACHER} ({k.TEACHER_PRETRAINED})" if k.TEACHER_PRETRAINED else k.TEACHER
        return {"labels": "none (few-shot sampling and base filter only)",
                "images": f"{self.cfg.DATASET.NUM_SHOTS}-shot training images",
                "class_names": "none (class-agnostic dictionary)" if k.CLASS_AGNOSTIC else "dataset",
                "teacher": teacher, "student": self.cfg.MODEL.BACKBONE.NAME}

    def checkpoint_meta(self) -> Dict[str, object]:
        k = self.kdpl
        meta = super().checkpoint_meta()
        meta.update({"class_agnostic": bool(k.CLASS_AGNOSTIC), "k_max": int(k.K_MAX), "teacher": k.TEACHER,
                     "teacher_pretrained": k.TEACHER_PRETRAINED,
                     "dictionary_sha256": getattr(self, "dictionary_sha256", "")})
        return meta


@TRAINER_REGISTRY.register()
class KDPL_CoOp(KDPLTrainer):
    precision_node = "COOP"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        if self.host(cfg).CSC:
            raise ValueError("KDPL_CoOp does not support TRAINER.COOP.CSC True: class-specific contexts cannot "
                             "transfer to new classes.")
        if self.host(cfg).CLASS_TOKEN_POSITION != "end":
            raise ValueError("KDPL_CoOp supports only TRAINER.COOP.CLASS_TOKEN_POSITION end.")

    def build_learner(self, clip_model, tokenize):
        c = self.host()
        return CoOpPromptLearner(clip_model, tokenize, c.N_CTX, c.CTX_INIT)


@TRAINER_REGISTRY.register()
class KDPL_CoCoOp(KDPLTrainer):
    precision_node = "COCOOP"

    def build_learner(self, clip_model, tokenize):
        c = self.host()
        return CoCoOpPromptLearner(clip_model, tokenize, c.N_CTX, c.CTX_INIT)


@TRAINER_REGISTRY.register()
class KDPL_VPT(KDPLTrainer):
    precision_node = "VPT"

    def build_learner(self, clip_model, tokenize):
        c = self.host()
        return VPTPromptLearner(clip_model, c.N_CTX_VISION, c.PROMPT_DEPTH_VISION)

    def fixed_template(self) -> str:
        init = self.host().CTX_INIT
        return f"{init} {{}}." if init else DEFAULT_TEMPLATE


@TRAINER_REGISTRY.register()
class KDPL_MaPLe(KDPLTrainer):
    model_name = "MultiModalPromptLearner"
    precision_node = "MAPLE"

    def build_learner(self, clip_model, tokenize):
        c = self.host()
        return MaPLePromptLearner(clip_model, tokenize, c.N_CTX, c.CTX_INIT, c.PROMPT_DEPTH)


@TRAINER_REGISTRY.register()
class KDPL_PromptSRC(KDPLTrainer):
    """PromptSRC's self-regulating terms and Gaussian prompt aggregation are kept; only its CE is replaced."""

    model_name = "VLPromptLearner"
    precision_node = "PROMPTSRC"

    def build_learner(self, clip_model, tokenize):
        return build_ivlp_learner(self.cfg, clip_model, tokenize)

    def build_epoch_parts(self):
        return {"gpa_sum": GaussianPromptAggregation(self.cfg)}

    @cached_property
    def scl(self) -> SelfConsistency:
        return SelfConsistency(self.cfg, self.model)

    def compute_loss(self, batch: TrainBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        teacher_logits, idx = self.teacher_targets(batch)
        student_logits, scl, scl_terms = self.scl(batch.images, "train", self.training_classnames(), idx)
        loss, terms = self.kdpl_loss(teacher_logits, student_logits)
        return loss + scl, {**terms, **scl_terms}
