"""PromptKD's teacher: a frozen IVLP-prompted CLIP (PromptSRC, stage 1) and its stored class vectors W.

Stage 2 needs the teacher's prompted image features for every batch, but its prompted *text* features only once:
the teacher is frozen, so W = normalize(text features of all N class prompts) is a constant (spec §3). This module
loads a teacher checkpoint (ours, or a released PromptSRC whole-model checkpoint), checks it, builds the teacher,
computes W once, and reads/writes the class-vector file. No Dassl import.

Reference checkpoint keys (PromptSRC's ``CustomCLIP`` state dict) and what happens to them:
  * prompts: ``prompt_learner.ctx``, ``image_encoder.VPT``, ``{image,text}_encoder.transformer.resblocks.i.VPT_shallow``
    -> loaded into :class:`~trainers.core.prompt_learners.IVLPPromptLearner`; any missing one is an error;
  * frozen encoders: ``image_encoder.*``, ``text_encoder.*``, ``logit_scale`` -> loaded into the CLIP when present
    (all of them, shape-checked; our own checkpoints carry prompts only);
  * known extras, ignored: ``prompt_learner.token_prefix[2]`` / ``token_suffix[2]`` (class-dependent buffers) and
    ``prompt_learner.ZS_image_encoder.*`` (PromptSRC's frozen zero-shot copy).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .checkpoints import atomic_torch_save
from .clip_models import LoadedClip, freeze
from .precision import autocast
from .prompt_learners import (IVLPPromptLearner, PromptedCLIP, clean_classname, count_init_tokens,
                              load_learner_state, map_reference_keys)
from .teacher import FrozenTeacher

CLASS_VECTORS_FILE = "class_vectors.pt"
CLASS_VECTORS_FORMAT = "promptkd-class-vectors/1"
_PROMPT_KEY = re.compile(r"^(ctx|vision_ctx|text_deep\.\d+|vision_deep\.\d+)$")
_KNOWN_EXTRA = re.compile(r"^(token_prefix2?|token_suffix2?|ZS_image_encoder\..+|tokenized_prompts)$")
_TEXT_TOWER = ("transformer.", "positional_embedding", "ln_final.", "text_projection")


# ------------------------------------------------------------------------------------------------ checkpoint file
def _checkpoint_rank(path: str) -> Tuple[int, int]:
    """model-best.pth.tar first, then model.pth.tar-<epoch> by decreasing epoch."""
    name = os.path.basename(path)
    if name == "model-best.pth.tar":
        return (0, 0)
    match = re.fullmatch(r"model\.pth\.tar-(\d+)", name)
    return (1, -int(match.group(1))) if match else (2, 0)


def resolve_teacher_checkpoint(path: str) -> str:
    """The checkpoint file for ``TRAINER.PROMPTKD.TEACHER_CKPT``: a file, or a folder holding (directly or one level
    down, e.g. ``VLPromptLearner/``) ``model-best.pth.tar`` (released b2n teachers) or ``model.pth.tar-<epoch>``
    (PromptSRC's and our stage-1 runs, the highest epoch)."""
    if not path:
        raise FileNotFoundError(
            "TRAINER.PROMPTKD.TEACHER_CKPT is empty: set it to the stage-1 output folder "
            "(scripts/promptkd/teacher_train.sh) or to a released PromptSRC teacher file such as "
            "teacher_model/<DATASET>/VLPromptLearner/model-best.pth.tar.")
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Teacher checkpoint {path!r} does not exist (TRAINER.PROMPTKD.TEACHER_CKPT): give a "
                                "checkpoint file, or a folder holding [<sub-folder>/]model-best.pth.tar or "
                                "model.pth.tar-<epoch> such as the output of scripts/promptkd/teacher_train.sh.")
    for folder in [path] + sorted(d for d in glob.glob(os.path.join(path, "*")) if os.path.isdir(d)):
        files = [f for f in glob.glob(os.path.join(folder, "model*.pth.tar*")) if _checkpoint_rank(f)[0] < 2]
        if files:
            return min(files, key=_checkpoint_rank)
    found = sorted(os.path.relpath(p, path) for p in glob.glob(os.path.join(path, "*")) + glob.glob(
        os.path.join(path, "*", "*")))
    raise FileNotFoundError(
        f"No teacher checkpoint in {path}: expected {path}/[<sub-folder>/]model-best.pth.tar or "
        f"model.pth.tar-<epoch> (found: {found[:12] or 'nothing'}).")


# --------------------------------------------------------------------------------------------- checkpoint content
@dataclass
class TeacherState:
    """A teacher state dict sorted into prompts, frozen-encoder weights and ignored entries (learner key names)."""

    prompts: Dict[str, torch.Tensor]
    encoder: Dict[str, torch.Tensor]
    ignored: List[str] = field(default_factory=list)
    unknown: List[str] = field(default_factory=list)
    num_classes: Optional[int] = None  # classes the teacher was trained on, when the checkpoint tells


def split_teacher_state(state: Mapping[str, torch.Tensor]) -> TeacherState:
    """Sort a checkpoint's tensors (ours or a reference whole-model layout) by what they are."""
    prompts: Dict[str, torch.Tensor] = {}
    encoder: Dict[str, torch.Tensor] = {}
    ignored, unknown = [], []
    num_classes = None
    for key, value in map_reference_keys(state).items():
        if _PROMPT_KEY.match(key):
            prompts[key] = value
        elif key.startswith("image_encoder."):
            encoder["visual." + key[len("image_encoder."):]] = value
        elif key.startswith("text_encoder."):
            encoder[key[len("text_encoder."):]] = value
        elif key == "logit_scale":
            encoder[key] = value
        elif _KNOWN_EXTRA.match(key):
            ignored.append(key)
            if key in ("token_prefix", "token_prefix2"):
                num_classes = (num_classes or 0) + int(value.shape[0])
        else:
            unknown.append(key)
    return TeacherState(prompts, encoder, ignored, unknown, num_classes)


@dataclass(frozen=True)
class TeacherDesign:
    """The IVLP design a checkpoint holds (PromptKD's reference hard-codes 4/4 tokens, depth 9/9)."""

    n_ctx_text: int
    n_ctx_vision: int
    depth_text: int
    depth_vision: int


def teacher_design(prompts: Mapping[str, torch.Tensor], meta: Optional[Mapping[str, Any]] = None,
                   depth_text: int = 0, depth_vision: int = 0, source: str = "teacher checkpoint") -> TeacherDesign:
    """Design from explicit depths (> 0), else the checkpoint's metadata, else its tensors; every prompt tensor the
    design needs must be present (the reference's ``strict=False`` load silently kept random prompts)."""
    meta = meta or {}
    for key, ref in (("ctx", "prompt_learner.ctx"), ("vision_ctx", "image_encoder.VPT")):
        if key not in prompts:
            raise KeyError(f"{source} lacks the prompt tensor {ref!r} ({key}): not a PromptSRC/IVLP teacher, or a "
                           f"damaged file (prompt keys found: {sorted(prompts)}).")
    found = {tower: sorted(int(k.split(".")[1]) for k in prompts if k.startswith(f"{tower}_deep."))
             for tower in ("text", "vision")}
    depths = {}
    for tower, explicit in (("text", depth_text), ("vision", depth_vision)):
        from_meta = int(meta.get(f"depth_{tower}", 0) or 0)
        inferred = (max(found[tower]) + 2) if found[tower] else 1
        depths[tower] = explicit or from_meta or inferred
        if explicit and from_meta and explicit != from_meta:
            raise ValueError(f"{source} was trained with {tower} prompt depth {from_meta}, but the config asks for "
                             f"{explicit} (TRAINER.PROMPTKD.TEACHER_DEPTH_{tower.upper()}).")
    ref_names = {"text": "text_encoder.transformer.resblocks.{}.VPT_shallow",
                 "vision": "image_encoder.transformer.resblocks.{}.VPT_shallow"}
    missing = [ref_names[t].format(i + 1) for t in ("text", "vision") for i in range(depths[t] - 1)
               if i not in found[t]]
    if missing:
        raise KeyError(f"{source} lacks prompt tensors {missing} required by its design (text depth "
                       f"{depths['text']}, vision depth {depths['vision']}).")
    extra = [ref_names[t].format(i + 1) for t in ("text", "vision") for i in found[t] if i >= depths[t] - 1]
    if extra:
        raise ValueError(f"{source} holds prompt tensors {extra} beyond the expected depth (text {depths['text']}, "
                         f"vision {depths['vision']}): check TRAINER.PROMPTKD.TEACHER_DEPTH_*.")
    design = TeacherDesign(int(prompts["ctx"].shape[0]), int(prompts["vision_ctx"].shape[0]), depths["text"],
                           depths["vision"])
    for key in ("n_ctx_text", "n_ctx_vision"):
        if key in meta and int(meta[key]) != getattr(design, key):
            raise ValueError(f"{source}: metadata says {key}={meta[key]} but the tensors hold "
                             f"{getattr(design, key)}.")
    return design


def load_encoder_weights(model: nn.Module, encoder: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a reference checkpoint's frozen image/text tower into ``model``: all or nothing, shapes checked."""
    own = model.state_dict()
    expected = [k for k in own if k.startswith("visual.") or k.startswith(_TEXT_TOWER) or k == "logit_scale"]
    missing = [k for k in expected if k not in encoder]
    if missing:
        raise KeyError(f"{source} carries frozen encoder weights but lacks {len(missing)} of them, e.g. "
                       f"{missing[:5]} (as image_encoder.* / text_encoder.*): a truncated or foreign checkpoint.")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in encoder.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{source} encoder weights do not fit the teacher backbone (name, checkpoint, model): "
                         f"{bad[:5]}. Check TRAINER.PROMPTKD.TEACHER_BACKBONE.")
    model.load_state_dict({k: encoder[k] for k in expected}, strict=False)


# ----------------------------------------------------------------------------------------------------- the teacher
class PromptedTeacher(FrozenTeacher):
    """A frozen prompted (IVLP) CLIP teacher: image features with its visual prompts, and class vectors from its
    prompted text encoder computed once (:meth:`set_class_names`). Always in eval mode, never trained."""

    def __init__(self, loaded: LoadedClip, learner: IVLPPromptLearner, input_size: int,
                 input_mean: Sequence[float], input_std: Sequence[float], precision: str = "fp32",
                 truncate_text: bool = True):
        prompted = PromptedCLIP(loaded, learner, truncate_text=truncate_text)
        super().__init__(loaded, input_size, input_mean, input_std, precision, truncate_text)
        self.prompted = freeze(prompted)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.prompted.logit_scale

    @property
    def prompt_template(self) -> str:
        return f"{self.prompted.prompt_learner.prompt_prefix} {{}}."

    def set_class_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise TypeError("A prompted teacher encodes class names with its learned context: use set_class_names().")

    @torch.no_grad()
    def set_class_names(self, classnames: Sequence[str], chunk: int = 256) -> torch.Tensor:
        """W (N, E): L2-normalised prompted text features of every class, fp32, computed in chunks, once."""
        self.text_encoder_calls += 1
        self.prompted.register_class_set("all", classnames)
        with autocast(self.in_mean.device, self.precision):
            self.class_features = encode_class_set(self.prompted, "all", chunk)
        return self.class_features

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = self.adapt_input(images)
        with autocast(x.device, self.precision):
            feats = self.prompted.encode_image(x.to(self.prompted.image_encoder.dtype))
        return feats.float()


@torch.no_grad()
def encode_class_set(prompted: PromptedCLIP, key: str, chunk: int = 256) -> torch.Tensor:
    """All classes of a registered class set through the prompted text encoder, ``chunk`` classes at a time."""
    n = prompted.num_classes(key)
    device = prompted.logit_scale.device
    parts = [prompted.encode_text(key, torch.arange(s, min(s + chunk, n), device=device)) for s in range(0, n, chunk)]
    return torch.cat(parts).float()


def build_prompted_teacher(loaded: LoadedClip, state: Mapping[str, torch.Tensor], meta: Optional[Mapping[str, Any]],
                           ctx_init: str, input_size: int, input_mean: Sequence[float], input_std: Sequence[float],
                           precision: str = "fp32", n_ctx_text: int = 0, depth_text: int = 0, depth_vision: int = 0,
                           source: str = "teacher checkpoint", truncate_text: bool = True
                           ) -> Tuple[PromptedTeacher, TeacherState, TeacherDesign]:
    """Build the teacher a checkpoint describes and load it; every mismatch is an error naming the setting."""
    parts = split_teacher_state(state)
    design = teacher_design(parts.prompts, meta, depth_text, depth_vision, source)
    if n_ctx_text and n_ctx_text != design.n_ctx_text:
        raise ValueError(f"TRAINER.PROMPTKD.N_CTX_TEXT={n_ctx_text} but {source} holds {design.n_ctx_text} text "
                         "context vectors.")
    if ctx_init and count_init_tokens(loaded.tokenize, ctx_init) != design.n_ctx_text:
        raise ValueError(f"CTX_INIT {ctx_init!r} has {count_init_tokens(loaded.tokenize, ctx_init)} tokens but "
                         f"{source} holds {design.n_ctx_text} text context vectors.")
    model = loaded.model
    for tower, blocks, depth in (("text", len(model.transformer.resblocks), design.depth_text),
                                 ("vision", len(model.visual.transformer.resblocks), design.depth_vision)):
        if depth > blocks:
            raise ValueError(f"{source} has {tower} prompt depth {depth} but the teacher backbone has only {blocks} "
                             "blocks: wrong TRAINER.PROMPTKD.TEACHER_BACKBONE?")
    learner = IVLPPromptLearner(model, loaded.tokenize, design.n_ctx_text, design.n_ctx_vision, ctx_init,
                                design.depth_text, design.depth_vision)
    load_learner_state(learner, parts.prompts, source)
    if parts.encoder:
        load_encoder_weights(model, parts.encoder, source)
    teacher = PromptedTeacher(loaded, learner, input_size, input_mean, input_std, precision, truncate_text)
    return teacher, parts, design


# ------------------------------------------------------------------------------------------ the class-vector file
def check_classnames(stored: Sequence[str], expected: Sequence[str], source: str) -> None:
    """The class list stored with W must equal the dataset's, in order (underscores = spaces)."""
    a = [clean_classname(c) for c in stored]
    b = [clean_classname(c) for c in expected]
    if a != b:
        diff = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y][:5]
        raise ValueError(f"{source} holds class vectors for {len(a)} classes that do not match the dataset's "
                         f"{len(b)} classes in order (first differences (index, stored, dataset): {diff}). Use the "
                         "teacher/class vectors of this dataset.")


def save_class_vectors(path: str, vectors: torch.Tensor, classnames: Sequence[str], **info: Any) -> str:
    """Write W and its provenance (class names, template, backbone, checkpoint and its sha256...) atomically."""
    record = {"format": CLASS_VECTORS_FORMAT, "class_vectors": vectors.detach().float().cpu().contiguous(),
              "classnames": list(classnames), **info}
    return atomic_torch_save(record, path)


def load_class_vectors(path: str, expected_classnames: Optional[Sequence[str]] = None,
                       checkpoint_sha256: str = "") -> Dict[str, Any]:
    """Read a class-vector file; the class list must match and, when given, the teacher checkpoint hash too."""
    if os.path.isdir(path):
        path = os.path.join(path, CLASS_VECTORS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No class-vector file at {path}.")
    record = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != CLASS_VECTORS_FORMAT:
        raise ValueError(f"{path} is not a PromptKD class-vector file (format {CLASS_VECTORS_FORMAT}).")
    vectors = record["class_vectors"]
    if vectors.dim() != 2 or vectors.shape[0] != len(record["classnames"]):
        raise ValueError(f"{path}: {tuple(vectors.shape)} vectors for {len(record['classnames'])} class names.")
    if expected_classnames is not None:
        check_classnames(record["classnames"], expected_classnames, path)
    stored_hash = record.get("checkpoint_sha256", "")
    if checkpoint_sha256 and stored_hash and stored_hash != checkpoint_sha256:
        raise ValueError(f"{path} was computed from teacher checkpoint {record.get('checkpoint')} (sha256 "
                         f"{stored_hash[:12]}...), not from the configured one (sha256 {checkpoint_sha256[:12]}...).")
    return record
