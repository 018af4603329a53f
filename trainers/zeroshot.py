"""Zero-shot CLIP with the dataset's hand-crafted template: the reference row of every KDPL table.

Registered as ``ZeroshotCLIP_KD`` so it never collides with a CoOp fork's ``ZeroshotCLIP``. Run it with
``--eval-only``; there is nothing to train.
"""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY

from .base import PromptDistillTrainer, load_student_clip
from .config import add_keys, cfg_value, config_keys
from .core.precision import cast_to_precision
from .core.prompt_learners import PromptedCLIP, ZeroShotLearner
from .core.templates import template_for


@config_keys
def add_zeroshot_config(cfg) -> None:
    add_keys(cfg, "TRAINER.ZEROSHOT", {"TEMPLATE": "", "PREC": "fp16"})


@TRAINER_REGISTRY.register()
class ZeroshotCLIP_KD(PromptDistillTrainer):
    precision_node = "ZEROSHOT"

    def build_student(self) -> PromptedCLIP:
        loaded = load_student_clip(self.cfg)
        template = template_for(self.cfg.DATASET.NAME, cfg_value(self.cfg, "TRAINER.ZEROSHOT.TEMPLATE"))
        print(f"Zero-shot template: {template!r}")
        student = PromptedCLIP(loaded, ZeroShotLearner(), fixed_template=template,
                               truncate_text=cfg_value(self.cfg, "MODEL.CLIP.TRUNCATE_TEXT"))
        student.register_class_set("eval", self.dm.dataset.classnames)
        return student

    def build_model(self) -> None:
        self.precision = self.student_precision()
        self.model = cast_to_precision(self.build_student().to(self.device), self.precision)
        self.register_model(self.model_name, self.model.prompt_learner, None, None)
        self.scaler = None
        self.teacher = None
        self.timings = {}

    def information_regime(self):
        return {"labels": "none", "images": "none", "class_names": "dataset", "teacher": "none",
                "student": self.cfg.MODEL.BACKBONE.NAME}

    def load_model(self, directory, epoch=None) -> None:
        if directory:
            print(f"Zero-shot CLIP has no checkpoint; ignoring --model-dir {directory}")

    def train(self) -> None:
        raise RuntimeError("ZeroshotCLIP_KD has nothing to train; run it with --eval-only.")
