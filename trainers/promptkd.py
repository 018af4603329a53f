"""PromptKD stage 2 (Li et al., CVPR 2024): unsupervised prompt distillation from a prompted ViT-L/14 into a ViT-B/16.

``PromptKD``: the student = ViT-B/16 image tower with deep visual prompts + projector, scored against the teacher's
class vectors W; loss = KD_WEIGHT * T^2 * KL(p_T || p_S) / (B*N); labels are never read. The teacher is trained by
stage 1, ``PromptKD_Teacher`` (``trainers.promptkd_teacher``); the parts both stages share are in
``trainers.promptkd_parts``.

Data regime (spec §6-7; our design, no dataset patching): ``DATASET.SUBSAMPLE_CLASSES`` chooses the *evaluated*
classes (base -> rows W[:m], new -> W[m:], all -> W, m = ceil(N/2)), while the distillation set is always the
unlabeled training split of ALL N classes (rebuilt from the stock dataset), i.e. transductive. So the standard
invocation works unchanged: train_base (SUBSAMPLE base) distils on everything and tests on base; the eval-only
test_new run (SUBSAMPLE new) tests on new. W is computed once from the teacher (its text encoder runs once per
run), kept as a non-persistent fp32 buffer and saved beside the checkpoints as ``class_vectors.pt``, which
``--eval-only`` reads: the teacher never runs at test time. With ``TRAINER.PROMPTKD.TEACHER_CACHE`` (built by
``tools/build_teacher_cache.py``) the teacher is not built at all: its image feature of each keyed view, W and its
logit scale come from the cache.
"""
from __future__ import annotations

import math
import os.path as osp
import random
import time
from functools import cached_property
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

from dassl.data.data_manager import build_data_loader
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY

from .base import PromptDistillTrainer, TrainBatch, load_student_clip
from .config import add_keys, cfg_node, cfg_value, config_keys
from .core.checkpoints import load_checkpoint_file
from .core.class_dictionary import sha256_of
from .core.clip_models import load_clip
from .core.losses import promptkd_loss
from .core.precision import full_precision, resolve_precision
from .core.projector import PromptKDStudent, StudentLearner, known_embed_dim
from .core.prompted_teacher import (CLASS_VECTORS_FILE, PromptedTeacher, build_prompted_teacher, check_classnames,
                                    load_class_vectors, resolve_teacher_checkpoint, save_class_vectors)
from .offline_cache import OfflineTeacherCache
from .promptkd_parts import DEFAULT_TEACHER, all_class_dataset, eval_rows, kd_weight_for, teacher_backbone

MODALS = ("base2novel", "cross", "dg")
VAL_MODES = ("none", "kd", "base_fewshot")
DG_SPLITS = ("transductive", "halves")


@config_keys
def add_promptkd_config(cfg) -> None:
    """Reference names (TRAINER.MODAL, TRAINER.PROMPTKD.*) plus ours (teacher checkpoint, class vectors, ...)."""
    add_keys(cfg, "TRAINER", {"MODAL": "base2novel"})  # base2novel | cross | dg
    add_keys(cfg, "TRAINER.PROMPTKD", {
        "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
        "PROMPT_DEPTH_VISION": 9,  # student depth
        "PROJECT_LAYER": 2, "CE_WEIGHT": 0.0,
        "KD_WEIGHT": -1.0,  # < 0: the per-dataset table (KD_WEIGHTS)
        "TEMPERATURE": 1.0,
        "TEACHER_NAME": DEFAULT_TEACHER,  # reference name of the teacher backbone key
        "TEACHER_BACKBONE": DEFAULT_TEACHER,
        "TEACHER_WEIGHTS": "",  # local file of the teacher CLIP weights (else MODEL.CLIP.DOWNLOAD_ROOT / download)
        "TEACHER_CKPT": "",  # stage-1 output folder or a checkpoint file (ours or a released PromptSRC teacher)
        "TEACHER_DEPTH_TEXT": 0, "TEACHER_DEPTH_VISION": 0,  # 0: from the checkpoint (metadata, else its tensors)
        "CLASS_VECTORS": "",  # read W from a class-vector file instead of running the teacher's text encoder
        "VAL_MODE": "none",  # none | kd | base_fewshot (held-out model selection; never test data)
        "DG_SPLIT": "transductive",  # dg: transductive (adapt on the test images) | halves (seeded disjoint halves)
        "TEACHER_CACHE": "",  # folder of cached teacher image features (tools/build_teacher_cache.py); "" = online
        "VIEW_KEYED_AUG": False,  # training views keyed by (seed, epoch, index); implied by TEACHER_CACHE
    })


# ------------------------------------------------------------------------------------------------------ stage 2
@TRAINER_REGISTRY.register()
class PromptKD(PromptDistillTrainer):
    """Student = prompted ViT-B/16 image tower + projector; teacher = frozen prompted ViT-L/14; loss = scaled KL.

    With ``TRAINER.PROMPTKD.TEACHER_CACHE`` the teacher's image features of every view come from an offline cache
    (one E-dim row per view; logits = teacher scale * u @ W.T, exactly what the online teacher computes)."""

    model_name = "VLPromptLearner"  # the reference's checkpoint sub-folder
    precision_node = "PROMPTKD"
    cache_node = "PROMPTKD"

    @cached_property
    def cache(self) -> OfflineTeacherCache:
        return OfflineTeacherCache(self.cfg, self.cache_node, self.device)

    @property
    def kd(self):
        return cfg_node(self.cfg, "TRAINER.PROMPTKD")

    @property
    def modal(self) -> str:
        return cfg_value(self.cfg, "TRAINER.MODAL")

    @property
    def kd_weight(self) -> float:
        """KD_WEIGHT, or the reference's per-dataset table when it is < 0 (:func:`kd_weight_for`)."""
        return kd_weight_for(self.cfg.DATASET.NAME, self.modal, float(self.kd.KD_WEIGHT))[0]

    # ----------------------------------------------------------------------------------------------------- config
    def check_cfg(self, cfg) -> None:
        k = cfg_node(cfg, "TRAINER.PROMPTKD")
        modal = cfg_value(cfg, "TRAINER.MODAL")
        if modal not in MODALS:
            raise ValueError(f"TRAINER.MODAL must be one of {MODALS}, got {modal!r}.")
        if k.VAL_MODE not in VAL_MODES:
            raise ValueError(f"TRAINER.PROMPTKD.VAL_MODE must be one of {VAL_MODES}, got {k.VAL_MODE!r}.")
        if k.VAL_MODE == "base_fewshot" and modal != "base2novel":
            raise ValueError("VAL_MODE base_fewshot needs TRAINER.MODAL base2novel (it validates on base labels).")
        if cfg.TEST.FINAL_MODEL == "best_val" and k.VAL_MODE == "none":
            raise ValueError(
                "TEST.FINAL_MODEL best_val needs a held-out validation: set TRAINER.PROMPTKD.VAL_MODE kd or "
                "base_fewshot, or use last_step. (The reference selected on the test set; we never do.)")
        if k.DG_SPLIT not in DG_SPLITS:
            raise ValueError(f"TRAINER.PROMPTKD.DG_SPLIT must be one of {DG_SPLITS}, got {k.DG_SPLIT!r}.")
        if k.TEMPERATURE <= 0:
            raise ValueError(f"TRAINER.PROMPTKD.TEMPERATURE must be > 0, got {k.TEMPERATURE}.")
        if k.TEACHER_CACHE and k.VAL_MODE == "kd":
            raise ValueError("VAL_MODE kd runs the teacher on the validation images, which TRAINER.PROMPTKD."
                             "TEACHER_CACHE avoids building: use VAL_MODE base_fewshot or none with a cache.")
        teacher_backbone(k)
        kd_weight, source = kd_weight_for(cfg.DATASET.NAME, modal, float(k.KD_WEIGHT))
        print(f"PromptKD: KD_WEIGHT {kd_weight:g} ({source}), temperature {k.TEMPERATURE:g}, modal {modal}")

    # ------------------------------------------------------------------------------------------------------- data
    def build_data_loader(self) -> None:
        """Dassl's loaders for the evaluated classes; the distillation loader over ALL classes, unlabeled."""
        super().build_data_loader()
        cfg = self.cfg
        self.all_dataset = all_class_dataset(cfg, self.dm.dataset)
        self.all_classnames: List[str] = list(self.all_dataset.classnames)
        self.eval_range = eval_rows(cfg_value(cfg, "DATASET.SUBSAMPLE_CLASSES"), len(self.all_classnames))
        check_classnames(self.all_classnames[slice(*self.eval_range)], self.dm.dataset.classnames,
                         f"Rows {self.eval_range} of the all-class list")
        train_items, test_items = self.distillation_items()
        self.train_loader_x = self._loader(train_items, is_train=True)
        if test_items is not None:
            self.test_loader = self._loader(test_items, is_train=False)
        self.val_loader = self.build_val_loader()
        print(f"PromptKD data: distilling on {len(train_items):,} unlabeled images ({self.regime_images()}); "
              f"evaluating rows {self.eval_range[0]}..{self.eval_range[1] - 1} of W on "
              f"{len(self.test_loader.dataset):,} test images")

    def _loader(self, items: Sequence, is_train: bool):
        cfg = self.cfg
        node = cfg.DATALOADER.TRAIN_X if is_train else cfg.DATALOADER.TEST
        extra = {"n_domain": node.N_DOMAIN, "n_ins": node.N_INS} if is_train else {}
        wrapper = self.cache.dataset_wrapper() if is_train else None
        if wrapper is not None:  # keyed views for the teacher cache
            extra["dataset_wrapper"] = wrapper
        return build_data_loader(cfg, sampler_type=node.SAMPLER, data_source=list(items), batch_size=node.BATCH_SIZE,
                                 tfm=build_transform(cfg, is_train=is_train), is_train=is_train, **extra)

    def distillation_items(self) -> Tuple[list, Optional[list]]:
        """(distillation images, replacement test images or None)."""
        if self.modal == "dg" and self.kd.DG_SPLIT == "halves":
            items = list(self.dm.dataset.test)
            order = random.Random(self.cfg.SEED).sample(range(len(items)), len(items))
            half = len(items) // 2
            return [items[i] for i in sorted(order[:half])], [items[i] for i in sorted(order[half:])]
        return list(self.all_dataset.train_x), None

    def build_val_loader(self):
        """Held-out images for VAL_MODE (the split file's val split, never the test set); None for ``none``."""
        mode = self.kd.VAL_MODE
        if mode == "none":
            return None
        val = list(self.all_dataset.val or [])
        test_paths = {d.impath for d in self.all_dataset.test}
        if not val or all(d.impath in test_paths for d in val):
            raise ValueError(f"VAL_MODE {mode} needs a validation split distinct from the test set; "
                             f"{self.cfg.DATASET.NAME} has none here (e.g. ImageNet's val split is its test set).")
        if mode == "base_fewshot":
            m = math.ceil(len(self.all_classnames) / 2)
            rng = random.Random(self.cfg.SEED)
            by_label: Dict[int, list] = {}
            for d in val:
                if d.label < m:
                    by_label.setdefault(d.label, []).append(d)
            val = [d for label in sorted(by_label) for d in rng.sample(by_label[label], min(4, len(by_label[label])))]
        return self._loader(val, is_train=False)

    # ----------------------------------------------------------------------------------------------------- models
    def build_student(self) -> PromptKDStudent:
        cfg, k = self.cfg, self.kd
        loaded = load_student_clip(cfg)
        if cfg.INPUT.SIZE[0] != loaded.preprocess.size:
            raise ValueError(f"INPUT.SIZE {cfg.INPUT.SIZE[0]} does not match {cfg.MODEL.BACKBONE.NAME}'s input "
                             f"resolution {loaded.preprocess.size}.")
        self.teacher_dim = known_embed_dim(teacher_backbone(k), cfg_value(cfg, "MODEL.CLIP.DOWNLOAD_ROOT"),
                                           k.TEACHER_WEIGHTS)
        learner = StudentLearner(loaded.model, k.N_CTX_VISION, k.PROMPT_DEPTH_VISION, self.teacher_dim,
                                 k.PROJECT_LAYER)
        student = PromptKDStudent(loaded, learner)
        student.set_eval_rows(*self.eval_range)
        return student

    def build_model(self) -> None:
        super().build_model()
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        print(f"Trainable tensors ({len(names)}): {', '.join(names)}")
        self.teacher_info: Dict[str, Any] = {}
        self._model_dir = ""
        self.text_encoder_calls = 0  # teacher text-encoder passes in this run (W is computed at most once)

    def load_teacher(self) -> PromptedTeacher:
        """The frozen prompted teacher of TRAINER.PROMPTKD.TEACHER_CKPT, checked against the dataset."""
        cfg, k = self.cfg, self.kd
        path = resolve_teacher_checkpoint(k.TEACHER_CKPT)
        ckpt = load_checkpoint_file(path, torch.device("cpu"))
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        meta = ckpt.get("meta") or {} if isinstance(ckpt, dict) else {}
        name = teacher_backbone(k)
        if meta.get("backbone") and meta["backbone"] != name:
            raise ValueError(f"Teacher checkpoint {path} was trained on {meta['backbone']!r} but "
                             f"TRAINER.PROMPTKD.TEACHER_BACKBONE is {name!r}.")
        loaded = load_clip(name, download_root=cfg_value(cfg, "MODEL.CLIP.DOWNLOAD_ROOT"),
                           weights=k.TEACHER_WEIGHTS)
        prec = resolve_precision(k.PREC, self.device, "teacher")
        teacher, parts, design = build_prompted_teacher(
            loaded, state, meta, k.CTX_INIT, cfg.INPUT.SIZE[0], cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, prec,
            n_ctx_text=int(k.N_CTX_TEXT), depth_text=int(k.TEACHER_DEPTH_TEXT),
            depth_vision=int(k.TEACHER_DEPTH_VISION), source=path,
            truncate_text=cfg_value(cfg, "MODEL.CLIP.TRUNCATE_TEXT"))
        self.check_teacher_classes(parts.num_classes, meta, path)
        if parts.unknown:
            print(f"Warning: ignored {len(parts.unknown)} unknown entries of {path}: {parts.unknown[:8]}")
        self.teacher_info = {"checkpoint": path, "sha256": sha256_of(path), "backbone": name,
                             "design": vars(design).copy(), "epoch": ckpt.get("epoch") if isinstance(ckpt, dict)
                             else None, "encoder_weights_from_checkpoint": bool(parts.encoder)}
        print(f"Teacher {name} from {path} (epoch {self.teacher_info['epoch']}, text/vision ctx "
              f"{design.n_ctx_text}/{design.n_ctx_vision}, depth {design.depth_text}/{design.depth_vision}, "
              f"precision {prec})")
        return teacher

    def check_teacher_classes(self, trained: Optional[int], meta: Dict[str, Any], path: str) -> None:
        """A base-to-novel teacher must be this dataset's: trained on its m base (or all N) classes."""
        if self.modal != "base2novel":
            return
        n = len(self.all_classnames)
        m = math.ceil(n / 2)
        trained = int(meta.get("num_classes") or 0) or trained
        if trained is not None and trained not in (m, n):
            raise ValueError(f"Teacher checkpoint {path} was trained on {trained} classes, but "
                             f"{self.cfg.DATASET.NAME} has {n} classes ({m} base): it is another dataset's teacher. "
                             "Point TRAINER.PROMPTKD.TEACHER_CKPT at this dataset's teacher.")
        if meta.get("dataset") and meta["dataset"] != self.cfg.DATASET.NAME:
            raise ValueError(f"Teacher checkpoint {path} was trained on {meta['dataset']}, not "
                             f"{self.cfg.DATASET.NAME}.")
        if meta.get("classnames"):
            check_classnames(meta["classnames"], self.all_classnames[:len(meta["classnames"])], path)

    def build_teacher(self) -> Optional[PromptedTeacher]:
        """Training only: the teacher and W, or with a teacher cache no teacher at all (W and the teacher's logit
        scale then come from the cache folder)."""
        cache = self.cache.open(self.cache_meta(), self.max_epoch)
        if cache is None:
            return self.build_online_teacher()
        folder = self.kd.TEACHER_CACHE
        # the cache's teacher hash (already checked against TEACHER_CKPT when one is configured) must be W's too
        record = load_class_vectors(folder, self.all_classnames, cache.meta.get("teacher_sha256", ""))
        self.model.set_class_vectors(record["class_vectors"])
        self.teacher_scale = torch.tensor(float(record["logit_scale"]), device=self.device)
        self.teacher_info = {"checkpoint": record.get("checkpoint", ""), "sha256": record.get("checkpoint_sha256", ""),
                             "backbone": record.get("backbone", ""), "teacher_cache": folder}
        print(f"Class vectors W {tuple(record['class_vectors'].shape)} and the teacher's logit scale "
              f"{float(self.teacher_scale):.4f} read from the cache at {folder}")
        self.store_class_vectors(self.model.class_vectors, record.get("template", ""))
        return None

    def build_online_teacher(self) -> PromptedTeacher:
        """The frozen teacher, and W computed once from it (or read from CLASS_VECTORS)."""
        k = self.kd
        teacher = self.load_teacher().to(self.device)
        if k.CLASS_VECTORS:
            record = load_class_vectors(k.CLASS_VECTORS, self.all_classnames, self.teacher_info["sha256"])
            teacher.class_features = record["class_vectors"].float().to(self.device)
            print(f"Class vectors W {tuple(teacher.class_features.shape)} read from {k.CLASS_VECTORS}")
        else:
            start = time.time()
            teacher.set_class_names(self.all_classnames)
            self.text_encoder_calls += 1
            self.timings["class_vectors_s"] = time.time() - start
            print(f"Class vectors W {tuple(teacher.class_features.shape)} computed once from the teacher's prompted "
                  f"text encoder ({self.timings['class_vectors_s']:.1f}s); it never runs again")
        self.model.set_class_vectors(teacher.class_features)
        self.store_class_vectors(teacher.class_features, teacher.prompt_template)
        return teacher

    def store_class_vectors(self, vectors: torch.Tensor, template: str, folder: str = "", **info: Any) -> str:
        """W and the teacher's provenance as ``class_vectors.pt`` (in the output dir: what --eval-only reads)."""
        t = self.teacher_info
        return save_class_vectors(osp.join(folder or self.output_dir, CLASS_VECTORS_FILE), vectors,
                                  self.all_classnames, template=template, backbone=t["backbone"],
                                  checkpoint=t["checkpoint"], checkpoint_sha256=t["sha256"],
                                  dataset=self.cfg.DATASET.NAME, num_base=math.ceil(len(self.all_classnames) / 2),
                                  **info)

    # ------------------------------------------------------------------------------------------ teacher cache
    def cache_meta(self) -> Dict[str, Any]:
        """A row = the teacher's L2-normalised image feature of a view; W and the scale live in the cache folder."""
        k = self.kd
        meta = {**self.cache.view_meta(self.train_loader_x.dataset.data_source), "kind": "teacher_features", "width": int(self.teacher_dim),
                "teacher_backbone": teacher_backbone(k),
                "teacher_prec": resolve_precision(k.PREC, self.device, "teacher")}
        if k.TEACHER_CKPT:  # a cached run may omit it: the cache's class_vectors.pt then names the teacher
            meta["teacher_sha256"] = sha256_of(resolve_teacher_checkpoint(k.TEACHER_CKPT))
        return meta

    def cache_rows(self, teacher: PromptedTeacher, images: torch.Tensor) -> torch.Tensor:
        return teacher.encode_image(images)

    def cache_row_scale(self) -> float:
        """Rows are features; the reader scales the logits (teacher scale * u @ W.T)."""
        return 1.0

    def cache_topk(self) -> int:
        """Whole feature rows (a top-k of a feature vector means nothing)."""
        return 0

    def student_cache_meta(self) -> None:
        """The student's image tower trains (deep visual prompts): nothing of it can be cached."""
        return None

    def write_cache_files(self, cache_dir: str, teacher: PromptedTeacher) -> None:
        self.store_class_vectors(teacher.class_features, teacher.prompt_template, folder=cache_dir,
                                 logit_scale=float(teacher.logit_scale))

    def teacher_logits(self, batch: TrainBatch) -> torch.Tensor:
        """The teacher's logits over all N classes for these views: online, or from cached image features."""
        with self.teacher_timer:
            if self.cache.teacher is not None:  # fp32, as the online teacher's logits, inside the student's autocast
                with full_precision(self.device):
                    rows = self.cache.rows(self.epoch, batch.index)
                    return self.teacher_scale * rows @ self.model.class_vectors.t()
            return self.teacher.logits(batch.images, self.teacher.logit_scale)

    def ensure_class_vectors(self) -> None:
        """W for a run without a teacher (--eval-only): the trained run's class_vectors.pt, else CLASS_VECTORS, else
        one pass of the teacher's text encoder (its image tower never runs at test time)."""
        if self.model.has_class_vectors:
            return
        candidates = [osp.join(self._model_dir, CLASS_VECTORS_FILE)] if self._model_dir else []
        candidates += [self.kd.CLASS_VECTORS] if self.kd.CLASS_VECTORS else []
        for path in candidates:
            if osp.exists(path):
                record = load_class_vectors(path, self.all_classnames)
                self.model.set_class_vectors(record["class_vectors"])
                print(f"Class vectors W {tuple(record['class_vectors'].shape)} read from {path}")
                return
        if not self.kd.TEACHER_CKPT:
            raise RuntimeError(f"No class vectors: none of {candidates or ['--model-dir/' + CLASS_VECTORS_FILE]} "
                               "exists and TRAINER.PROMPTKD.TEACHER_CKPT is empty.")
        teacher = self.load_teacher().to(self.device)
        self.model.set_class_vectors(teacher.set_class_names(self.all_classnames))
        self.text_encoder_calls += 1
        print("Class vectors W computed from the teacher's prompted text encoder (its image tower is not used)")
        del teacher

    # --------------------------------------------------------------------------------------------------- training
    def reads_labels(self) -> bool:
        """Only with CE_WEIGHT > 0 (optional, off by default: PromptKD is label-free)."""
        return self.kd.CE_WEIGHT > 0

    def compute_loss(self, batch: TrainBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        teacher_logits = self.teacher_logits(batch)
        student_logits = self.model(batch.images, key="train")
        kd = promptkd_loss(teacher_logits, student_logits, float(self.kd.TEMPERATURE), self.kd_weight)
        terms = {"loss KD": kd}
        loss = kd
        if self.kd.CE_WEIGHT > 0:
            terms["loss CE"] = F.cross_entropy(student_logits, batch.labels)
            loss = loss + self.kd.CE_WEIGHT * terms["loss CE"]
        return loss, {"loss": loss, **terms}

    # ---------------------------------------------------------------------------------------------------- testing
    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        super().load_model(directory, epoch)
        self._model_dir = directory or ""

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        if split == "val":
            return self.validate()
        self.ensure_class_vectors()
        return super().test(split)

    @torch.no_grad()
    def validate(self) -> float:
        """Held-out selection metric (higher is better): -mean KD loss (kd) or base accuracy (base_fewshot)."""
        self.set_model_mode("eval")
        mode = self.kd.VAL_MODE
        total, score = 0, 0.0
        for batch in self.val_loader:
            images = batch["img"].to(self.device)
            if mode == "kd":
                teacher_logits = self.teacher.logits(images, self.teacher.logit_scale)
                loss = promptkd_loss(teacher_logits, self.model(images, key="train"), float(self.kd.TEMPERATURE),
                                     self.kd_weight)
                score -= float(loss) * images.shape[0]
            else:
                m = math.ceil(len(self.all_classnames) / 2)
                logits = self.model.logit_scale * self.model.encode_image(images) @ self.model.class_vectors[:m].t()
                score += float((logits.argmax(-1).cpu() == batch["label"]).sum()) * 100
            total += images.shape[0]
        result = score / max(total, 1)
        print(f"Held-out validation ({mode}) on {total} images: {'-KD loss' if mode == 'kd' else 'accuracy'} "
              f"{result:.4f}")
        self.write_scalar(f"val/{mode}", result, self.epoch)
        return result

    # ---------------------------------------------------------------------------------------------------- records
    def regime_images(self) -> str:
        modal, n = self.modal, len(self.all_classnames)
        if modal == "dg":
            return ("a seeded half of the test images; evaluated on the other half" if self.kd.DG_SPLIT == "halves"
                    else "the test images themselves: transductive on test images")
        shots = int(self.cfg.DATASET.NUM_SHOTS)
        what = f"{shots}-shot sample" if shots > 0 else "full training split"
        scope = "base and novel" if modal == "base2novel" else "target dataset"
        return f"{what} of all {n} classes ({scope}), labels unused: transductive"

    def information_regime(self) -> Dict[str, str]:
        teacher = self.teacher_info.get("checkpoint") or self.kd.TEACHER_CKPT
        return {"labels": "none" if self.kd.CE_WEIGHT <= 0 else "all training labels (CE_WEIGHT > 0)",
                "images": self.regime_images(),
                "class_names": f"all {len(self.all_classnames)} classes of the dataset",
                "teacher": f"{teacher_backbone(self.kd)} PromptSRC ({teacher})",
                "student": self.cfg.MODEL.BACKBONE.NAME}

    def extra_results(self) -> Dict[str, Any]:
        """What a PromptKD row needs (modal, KD weight, W rows, teacher provenance), in the base's atomic write."""
        return {"modal": self.modal, "kd_weight": self.kd_weight,
                "temperature": float(self.kd.TEMPERATURE), "num_all_classes": len(self.all_classnames),
                "class_vector_rows": list(self.eval_range), "teacher": self.teacher_info or None,
                "teacher_text_encoder_calls": self.text_encoder_calls}

    def checkpoint_meta(self) -> Dict[str, Any]:
        meta = super().checkpoint_meta()
        meta.update({"modal": self.modal, "teacher_backbone": teacher_backbone(self.kd),
                     "teacher_checkpoint": self.teacher_info.get("checkpoint", ""),
                     "teacher_sha256": self.teacher_info.get("sha256", ""),
                     "num_all_classes": len(self.all_classnames), "project_layer": int(self.kd.PROJECT_LAYER)})
        return meta
