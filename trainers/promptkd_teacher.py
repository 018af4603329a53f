"""PromptKD stage 1 (Li et al., CVPR 2024): ``PromptKD_Teacher``, PromptSRC with its cross-entropy on a large CLIP
(ViT-L/14).

Besides its GPA checkpoint it writes ``class_vectors.pt``: the prompted, L2-normalised text features of ALL N classes
of the dataset in label order (also after training on base classes), with class names, template, backbone and the
checkpoint's sha256. Stage 2 (``trainers.promptkd``) reads the checkpoint, or that file.
"""
from __future__ import annotations

import math
import os.path as osp
from functools import cached_property
from typing import Any, Dict, Tuple

import torch
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY

from .base import PromptDistillTrainer, TrainBatch, load_student_clip, text_path_options
from .config import cfg_value, config_keys
from .core.class_dictionary import sha256_of
from .core.prompt_learners import PromptedCLIP
from .core.prompted_teacher import CLASS_VECTORS_FILE, encode_class_set, save_class_vectors
from .promptkd_parts import all_class_dataset
from .promptsrc import (GaussianPromptAggregation, SelfConsistency, add_promptsrc_config,
                        build_ivlp_learner)

config_keys(add_promptsrc_config)  # the teacher is configured by TRAINER.PROMPTSRC (declared in trainers.promptsrc)


@TRAINER_REGISTRY.register()
class PromptKD_Teacher(PromptDistillTrainer):
    """PromptSRC with labels on a large CLIP (its self-regulating terms: ``self.scl``; GPA: an epoch part); writes
    the class vectors of all classes for stage 2."""

    model_name = "VLPromptLearner"
    precision_node = "PROMPTSRC"

    def build_student(self) -> PromptedCLIP:
        loaded = load_student_clip(self.cfg)
        if self.cfg.INPUT.SIZE[0] != loaded.preprocess.size:
            raise ValueError(f"INPUT.SIZE {self.cfg.INPUT.SIZE[0]} does not match {self.cfg.MODEL.BACKBONE.NAME}'s "
                             f"input resolution {loaded.preprocess.size}.")
        model = PromptedCLIP(loaded, build_ivlp_learner(self.cfg, loaded.model, loaded.tokenize),
                             **text_path_options(self.cfg))
        model.register_class_set("eval", self.dm.dataset.classnames)
        return model

    def build_epoch_parts(self):
        return {"gpa_sum": GaussianPromptAggregation(self.cfg)}

    @cached_property
    def scl(self) -> SelfConsistency:
        return SelfConsistency(self.cfg, self.model)

    def reads_labels(self) -> bool:
        """The teacher is trained WITH labels (cross-entropy)."""
        return True

    def compute_loss(self, batch: TrainBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        logits, scl, terms = self.scl(batch.images, "eval", list(self.dm.dataset.classnames))
        ce = F.cross_entropy(logits, batch.labels)
        loss = ce + scl
        acc = (logits.argmax(-1) == batch.labels).float().mean() * 100
        return loss, {"loss": loss, "loss CE": ce, **terms, "acc": acc}

    def information_regime(self) -> Dict[str, str]:
        shots = int(self.cfg.DATASET.NUM_SHOTS)
        sub = cfg_value(self.cfg, "DATASET.SUBSAMPLE_CLASSES")
        what = f"{shots}-shot" if shots > 0 else "all"
        return {"labels": f"{what} labels of the {sub} classes", "images": f"{what} training images ({sub} classes)",
                "class_names": "dataset", "teacher": "none (PromptKD stage 1)",
                "student": self.cfg.MODEL.BACKBONE.NAME}

    def checkpoint_meta(self) -> Dict[str, Any]:
        learner = self.model.prompt_learner
        meta = super().checkpoint_meta()
        meta.update({"dataset": self.cfg.DATASET.NAME, "num_classes": len(self.dm.dataset.classnames),
                     "classnames": list(self.dm.dataset.classnames),
                     "subsample_classes": cfg_value(self.cfg, "DATASET.SUBSAMPLE_CLASSES"),
                     "n_ctx_text": int(learner.n_ctx), "n_ctx_vision": int(learner.vision_ctx.shape[0]),
                     "depth_text": len(learner.text_deep) + 1, "depth_vision": len(learner.vision_deep) + 1,
                     "ctx_init": cfg_value(self.cfg, "TRAINER.PROMPTSRC.CTX_INIT")})
        return meta

    def after_train(self) -> None:
        super().after_train()
        self.write_class_vectors()

    def deployed_checkpoint(self) -> str:
        name = "model-best.pth.tar" if self.cfg.TEST.FINAL_MODEL == "best_val" else f"model.pth.tar-{self.max_epoch}"
        return osp.join(self.output_dir, self.model_name, name)

    @torch.no_grad()
    def write_class_vectors(self) -> str:
        """W for ALL classes of the dataset in label order (stage 2 may read it with TRAINER.PROMPTKD.CLASS_VECTORS)."""
        names = list(all_class_dataset(self.cfg, self.dm.dataset, keep_shots=False).classnames)
        self.set_model_mode("eval")
        self.model.register_class_set("all", names)
        vectors = encode_class_set(self.model, "all")
        ckpt = self.deployed_checkpoint()
        path = save_class_vectors(
            osp.join(self.output_dir, CLASS_VECTORS_FILE), vectors, names,
            template=f"{self.model.prompt_learner.prompt_prefix} {{}}.", backbone=self.cfg.MODEL.BACKBONE.NAME,
            checkpoint=ckpt, checkpoint_sha256=sha256_of(ckpt) if osp.isfile(ckpt) else "",
            dataset=self.cfg.DATASET.NAME, num_base=math.ceil(len(names) / 2),
            trained_classes=len(self.dm.dataset.classnames))
        print(f"Wrote the class vectors of all {len(names)} classes ({tuple(vectors.shape)}) to {path}")
        return path
