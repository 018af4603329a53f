"""Time one distillation training step, split into its parts, against what the authors' code does per step.

For one method, backbone pair, class count and batch size, four variants are built once and stepped interleaved
(ours, cached, reference, floor, ours, ...) so that a shared machine's drift hits all alike; each part is the median
over ``--steps`` rounds after ``--warmup`` rounds. Parts: teacher image / teacher text / host (work on the host and
device-to-host reads) / student forward+backward / optimizer.

  ours      -- the step our trainers run (``trainers.kdpl`` / ``trainers.promptkd``): the same core modules
               (:class:`PromptedCLIP`, :class:`FrozenTeacher`, :class:`PromptedTeacher`, :class:`PromptKDStudent`,
               whatever text-encoder optimisations they apply by default), the teacher's class vectors computed once
               at build time, the teacher in ``--teacher-prec``, nothing read back to the host.
  cached    -- ours with the teacher's outputs read from an offline teacher cache (``tools/build_teacher_cache.py``):
               KDPL's teacher cosine similarities (read back times the student's logit scale) and CoOp's frozen
               image features, PromptKD's teacher image features (then logits = scale * u @ W.T).
  reference -- the per-step work of the authors' code, written here from reading it (nothing copied):
    KDPL_CoOp, github:miccunifi/KDPL --
      * ``src/trainers/kdpl_utils.py`` ``CustomCLIPTeacher.init_teacher_text_features``: the teacher's text features
        are computed ONCE (``encode_text`` in chunks of 128), not per step; ``CustomCLIPTeacher.forward``: every step
        the teacher's image tower on the student's view, in the teacher's weight dtype -- fp32 for the default
        open_clip DFN5B teacher (``load_teacher_to_cpu``; ``CoOp_KDPL.build_model`` never halves it) -- and the
        text features re-normalised, logits scaled by the student's ``logit_scale.exp()``;
      * ``kdpl_utils.sampling``, called every step (also in the non-class-agnostic mode, with K = all classes):
        teacher logits ``.cpu().numpy()``, softmax over a host tensor, batch average and ``np.argpartition`` in
        NumPy; the NumPy indices then gather the student's prompt embeddings, its token ids and the teacher logits;
      * ``src/trainers/coop_kdpl.py`` ``CustomCLIPStudent.forward``: CoOp's prompt learner over all N classes at 77
        tokens, the selected rows through CoOp's ``TextEncoder`` (the full 77-token sequence), the student's frozen
        image tower; ``CoOp_KDPL.forward_backward``: two ``F.kl_div(log_target=True, reduction="batchmean")``,
        Dassl's ``model_backward_and_update`` (its ``detect_anomaly`` reads ``torch.isfinite(loss)`` on the host)
        and three ``.item()`` for the loss summary.
    PromptKD, github:zhengli97/PromptKD ``trainers/promptkd.py`` --
      * ``CustomCLIP_teacher.forward``, run by ``PromptKD.forward_backward`` AND ``PromptKD.test`` on every batch:
        ``VLPromptLearner.forward`` builds the prompts of all N classes (77 tokens; the base2novel halves
        concatenated), ``tokenized_prompts.cuda()`` copies the token ids to the device, ``TextEncoder`` runs the
        IVLP-prompted text tower over all N x 77 tokens, then the teacher's prompted image tower; the teacher's
        weights stay fp16 (``clip.build_model``, never ``.float()``);
      * the student (``CustomCLIP``): IVLP visual prompts, ``Feature_Trans_Module_two_layer`` (fp16), logits against
        the teacher text features just computed; ``KL(sum) * T^2 / numel``; one ``.item()``.
  floor     -- the base method alone, no teacher:
    KDPL_CoOp: CoOp's own step, github:KaiyangZhou/CoOp ``trainers/coop.py`` (``CustomCLIP.forward``, ``TextEncoder``
      over 77 tokens, cross-entropy, Dassl's ``model_backward_and_update``, two ``.item()``: loss and accuracy).
    PromptKD: our student alone (prompted image tower + projector against fixed class vectors, cross-entropy).

The reference and floor text towers are written here (:func:`reference_text_features`) as CoOp's ``TextEncoder``
computes them: the whole 77-token sequence through CLIP's own residual blocks (``nn.MultiheadAttention`` with CLIP's
77 x 77 causal mask); they never get our text-encoder optimisations. Precision as in the authors' code: ``fp16`` /
``bf16`` student weights when ``--student-prec`` says so (their ``PREC fp16`` default), KDPL's teacher fp32,
PromptKD's teacher fp16; on CPU fp16 falls back to fp32 (bf16 and amp run, in bf16).

For PromptKD the test step (one batch, forward only) is timed too: the reference runs its whole teacher on every
test batch, ours runs the student alone.

On CPU the parts are the step and ``total`` is their sum. On CUDA the parts are timed with a synchronisation at
each boundary and ``total`` is the median end-to-end step timed separately without them, so the cost of the
reference's host reads (pipeline stalls) shows in ``total``. Runs on CPU or GPU; ``random:<arch>`` shapes need no
weights:

    python -m benchmarks.step_benchmark --method kdpl_coop --student random:ViT-B/32 --teacher random:ViT-L/14 \
        --classes 100 --batch 4
    python -m benchmarks.step_benchmark --method promptkd --student random:ViT-B/16 --teacher random:ViT-L/14 \
        --classes 100 --batch 4
    bash benchmarks/targets.sh            # the issue's targets (see docs/performance.md)
"""
from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time
import weakref
from contextlib import contextmanager
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from trainers.core.clip_models import LoadedClip, freeze, load_clip
from trainers.core.losses import promptkd_loss, symmetric_kl
from trainers.core.precision import autocast, cast_to_precision, full_precision, resolve_precision, weight_dtype
from trainers.core.projector import PromptKDStudent, StudentLearner
from trainers.core.prompt_learners import (CoOpPromptLearner, IVLPPromptLearner, PromptedCLIP, count_init_tokens,
                                           init_context)
from trainers.core.prompted_teacher import PromptedTeacher
from trainers.core.teacher import FrozenTeacher
from trainers.core.teacher_cache import TeacherCache, save_shard, student_part_dir, write_meta

PARTS = ("teacher image", "teacher text", "host", "student fwd+bwd", "optimizer")
VARIANTS = ("ours", "cached", "reference", "floor")
CTX_INIT = "a photo of a"  # KDPL_CoOp's and PromptKD's configs: 4 context tokens initialised from these words
TEMPLATE = "a photo of a {}."
PROMPTKD_DEPTH, PROMPTKD_CTX = 9, 4  # PROMPT_DEPTH_* and N_CTX_* of PromptKD's configs (teacher and student)
LR, MOMENTUM, WEIGHT_DECAY = 0.002, 0.9, 5e-4  # Dassl's sgd with the configs' LR


class Target(NamedTuple):
    """A speed target: ``total[num] / total[den] <op> bound``."""

    num: str
    den: str
    op: str
    bound: float
    text: str


TARGETS: Dict[str, List[Target]] = {
    "kdpl_coop": [
        Target("ours", "reference", "<=", 0.5, "KDPL_CoOp online step <= 0.5x the KDPL-code reference step"),
        Target("ours", "floor", "<=", 0.65, "KDPL_CoOp online step <= 0.65x the CoOp-code floor"),
        Target("cached", "floor", "<=", 0.35, "KDPL_CoOp step with the teacher cache <= 0.35x the CoOp-code floor"),
    ],
    "promptkd": [
        Target("reference", "ours", ">=", 3.0, "PromptKD step >= 3x faster than the PromptKD-code reference step"),
    ],
}
#: the ratios printed for each method (numerator, denominator)
RATIOS = {"kdpl_coop": [("ours", "reference"), ("ours", "floor"), ("cached", "floor"), ("reference", "floor")],
          "promptkd": [("reference", "ours"), ("ours", "floor"), ("cached", "floor"), ("reference", "cached")]}


def ratio_meets(ratio: float, op: str, bound: float) -> bool:
    """Whether a measured ratio satisfies ``ratio <op> bound`` (op: "<=" or ">=")."""
    if op == "<=":
        return ratio <= bound
    if op == ">=":
        return ratio >= bound
    raise ValueError(f"Unknown comparison {op!r}; use '<=' or '>='.")


class PartTimer:
    """Wall time per part of one step. With ``sync`` the device is synchronised at part boundaries (CUDA only)."""

    def __init__(self, device: torch.device, sync: bool = True):
        self.device, self.sync = device, sync
        self.step: Dict[str, float] = {}

    def _sync(self) -> None:
        if self.sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        if name not in PARTS:
            raise KeyError(f"Unknown part {name!r}; parts are {PARTS}.")
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.step[name] = self.step.get(name, 0.0) + time.perf_counter() - start


class FlopCounter(PartTimer):
    """Floating-point operations per part of one step instead of seconds (``torch.utils.flop_counter``: matrix
    products and convolutions, forward and backward). A ratio of FLOPs is the speed-up an implementation doing the
    same arithmetic at the same efficiency would get: what a time ratio can reach without skipping work."""

    def __init__(self, device: torch.device):
        super().__init__(device, sync=False)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        if name not in PARTS:
            raise KeyError(f"Unknown part {name!r}; parts are {PARTS}.")
        with FlopCounterMode(display=False) as counter:
            yield
        self.step[name] = self.step.get(name, 0.0) + counter.get_total_flops()


def counted_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """``F.scaled_dot_product_attention`` as its matrix products (the flop counter does not see the fused CPU
    kernel); the same arithmetic: softmax(Q K^T / sqrt(d) + M) V."""
    scores = query @ key.transpose(-2, -1) * (scale if scale is not None else query.shape[-1] ** -0.5)
    if is_causal:
        length, keys = scores.shape[-2:]
        attn_mask = torch.ones(length, keys, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    return F.dropout(scores.softmax(-1), dropout_p) @ value


def count_flops(variants: Sequence[Variant], device: torch.device) -> Dict[str, Dict[str, float]]:
    """GFLOP per part (and ``total``) of one training step of each variant."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = counted_attention
    try:
        counts = {}
        for variant in variants:
            counter = FlopCounter(device)
            variant.train_step(counter)
            row = {p: counter.step.get(p, 0.0) / 1e9 for p in PARTS}
            counts[variant.name] = {**row, "total": sum(row.values())}
        return counts
    finally:
        F.scaled_dot_product_attention = original


# ------------------------------------------------------------------------------------- the authors' computations
def reference_text_features(clip_model: nn.Module, prompts: torch.Tensor, token_ids: torch.Tensor,
                            deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """CoOp's ``TextEncoder.forward`` (github:KaiyangZhou/CoOp trainers/coop.py) as the authors' code runs it.

    ``prompts`` (N, 77, D) go whole through CLIP's own residual blocks (its ``nn.MultiheadAttention`` with the
    77 x 77 causal mask); the features are read at each prompt's end-of-text token, located with ``token_ids`` as
    the code keeps them (on the host). ``deep_prompts[j]`` replaces tokens 1..n before block j+1, as the IVLP blocks
    of PromptKD's ``clip/model.py`` (``ResidualAttentionBlock_IVLP``) do.
    """
    dtype = clip_model.visual.conv1.weight.dtype  # CoOp's clip_model.dtype
    x = (prompts + clip_model.positional_embedding.type(dtype)).permute(1, 0, 2)
    if not deep_prompts:
        x = clip_model.transformer(x)
    else:
        for i, block in enumerate(clip_model.transformer.resblocks):
            if 1 <= i <= len(deep_prompts):
                ctx = deep_prompts[i - 1].type(dtype)
                x = torch.cat([x[:1], ctx.unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + ctx.shape[0]:]])
            x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2)).type(dtype)
    return x[torch.arange(x.shape[0]), token_ids.argmax(dim=-1)] @ clip_model.text_projection


def reference_image_features(visual: nn.Module, images: torch.Tensor, prompts: Optional[torch.Tensor] = None,
                             deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """CLIP's own image tower on ``images`` (CoOp, KDPL), or PromptKD's IVLP one (``VisionTransformer`` of its
    ``clip/model.py``): prompts appended after the patch tokens before ``ln_pre``, ``deep_prompts[j]`` replacing
    them before block j+1, every block CLIP's own module."""
    dtype = visual.conv1.weight.dtype
    if prompts is None:
        return visual(images.type(dtype))
    x = visual.conv1(images.type(dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.type(dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=dtype, device=x.device)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.type(dtype)
    x = torch.cat([x, prompts.type(dtype).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if deep_prompts is not None and 1 <= i <= len(deep_prompts):
            ctx = deep_prompts[i - 1].type(dtype)
            x = torch.cat([x[: x.shape[0] - ctx.shape[0]], ctx.unsqueeze(1).expand(-1, x.shape[1], -1)])
        x = block(x)
    return visual.ln_post(x[0]) @ visual.proj


def kdpl_host_sampling(teacher_logits: torch.Tensor, k: int) -> np.ndarray:
    """KDPL's ``sampling`` (kdpl_utils.py): the logits to the host, softmax, batch mean and ``argpartition`` in
    NumPy; the indices of the k classes with the largest mean probability, in argpartition's order."""
    host = teacher_logits.detach().cpu().numpy()
    mean_prob = torch.tensor(host).softmax(dim=1).numpy().mean(axis=0)
    return np.argpartition(mean_prob, -k)[-k:]


class CoOpCodeStudent(nn.Module):
    """CoOp's ``CustomCLIP`` + ``PromptLearner`` (class token at the end, generic context) as its code computes them:
    the frozen embeddings of all N prompts at 77 tokens as ``token_prefix`` / ``token_suffix`` buffers, the token
    ids kept on the host (a plain attribute, as CoOp's ``tokenized_prompts``), the context spliced in every step."""

    def __init__(self, loaded: LoadedClip, classnames: Sequence[str], ctx_init: str, prec: str):
        super().__init__()
        self.clip = freeze(loaded.model)
        cast_to_precision(self.clip, prec)  # CoOp's PREC fp16: clip.build_model's half weights (norms stay fp32)
        dtype = self.clip.visual.conv1.weight.dtype
        n_ctx = count_init_tokens(loaded.tokenize, ctx_init)
        self.ctx = nn.Parameter(init_context(self.clip, loaded.tokenize, n_ctx, ctx_init).to(dtype))
        self.tokenized_prompts = loaded.tokenize([f"{ctx_init} {c}." for c in classnames])  # stays on the host
        with torch.no_grad():
            emb = self.clip.token_embedding(self.tokenized_prompts).type(dtype)
        self.register_buffer("token_prefix", emb[:, :1], persistent=False)
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:], persistent=False)

    def prompts(self) -> torch.Tensor:
        n = self.token_prefix.shape[0]
        return torch.cat([self.token_prefix, self.ctx.unsqueeze(0).expand(n, -1, -1), self.token_suffix], dim=1)

    def forward(self, images: torch.Tensor, indices: Optional[np.ndarray] = None) -> torch.Tensor:
        """Logits over all classes, or over ``indices`` (KDPL's ``CustomCLIPStudent``: NumPy indices from the host)."""
        image_features = self.clip.visual(images.type(self.clip.visual.conv1.weight.dtype))
        prompts, token_ids = self.prompts(), self.tokenized_prompts
        if indices is not None:
            prompts, token_ids = prompts[indices], token_ids[indices]
        text_features = reference_text_features(self.clip, prompts, token_ids)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.clip.logit_scale.exp() * image_features @ text_features.t()


# -------------------------------------------------------------------------------------------------------- setup
class Bench:
    """What every variant of one run shares: the batch, the class names and the teacher(s)."""

    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.classnames = [f"class {i}" for i in range(args.classes)]
        size = load_clip(args.student).preprocess.size
        torch.manual_seed(0)
        self.images = torch.randn(args.batch, 3, size, size, device=device)
        self.labels = torch.randint(0, args.classes, (args.batch,), device=device)
        self.student_prec = resolve_precision(args.student_prec, device, "student")
        self.teacher_prec = resolve_precision(args.teacher_prec, device, "teacher")
        self._teacher = None

    def load_teacher_clip(self) -> LoadedClip:
        a = self.args
        return load_clip(a.teacher, backend=a.teacher_backend, pretrained=a.teacher_pretrained)

    def student_input(self) -> tuple:
        loaded = load_clip(self.args.student)
        return loaded.preprocess.size, loaded.preprocess.mean, loaded.preprocess.std

    @property
    def teacher(self):
        """Ours: KDPL's frozen teacher with its text features computed once, or PromptKD's prompted teacher with W
        computed once (built on first use, shared by ours and cached)."""
        if self._teacher is None:
            self._teacher = self.build_promptkd_teacher() if self.args.method == "promptkd" \
                else self.build_kdpl_teacher()
        return self._teacher

    def build_kdpl_teacher(self) -> FrozenTeacher:
        size, mean, std = self.student_input()
        teacher = FrozenTeacher(self.load_teacher_clip(), size, mean, std, precision=self.teacher_prec)
        teacher = teacher.to(self.device)
        teacher.set_class_texts([TEMPLATE.format(c) for c in self.classnames])
        return teacher

    def build_promptkd_teacher(self) -> PromptedTeacher:
        """A PromptSRC-style teacher: IVLP prompts (random here) on the teacher CLIP, as PromptKD_Teacher trains."""
        size, mean, std = self.student_input()
        loaded = self.load_teacher_clip()
        blocks = min(len(loaded.model.transformer.resblocks), len(loaded.model.visual.transformer.resblocks))
        depth = min(PROMPTKD_DEPTH, blocks)
        torch.manual_seed(1)
        learner = IVLPPromptLearner(loaded.model, loaded.tokenize, PROMPTKD_CTX, PROMPTKD_CTX, CTX_INIT, depth, depth)
        teacher = PromptedTeacher(loaded, learner, size, mean, std, precision=self.teacher_prec).to(self.device)
        teacher.set_class_names(self.classnames)
        return teacher


def tensor_mib(*modules: Optional[nn.Module]) -> float:
    """MiB of the distinct parameters and buffers of ``modules`` (what a variant keeps resident)."""
    seen = {}
    for module in modules:
        if module is None:
            continue
        for t in list(module.parameters()) + list(module.buffers()):
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values()) / 2 ** 20


def scratch_dir(owner: object) -> str:
    """A temporary folder for a variant's teacher cache, removed with its owner (or when the process exits)."""
    folder = tempfile.mkdtemp(prefix="teacher_cache_")
    weakref.finalize(owner, shutil.rmtree, folder, True)
    return folder


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(list(params), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


class Variant:
    """One way of running the method's training step. :meth:`train_step` records its parts in ``timer`` and returns
    the loss (detached, never read on the host by ours); :meth:`test_step` (optional) is one forward-only batch."""

    name = ""
    has_test_step = False

    def __init__(self, bench: Bench):
        self.bench, self.device = bench, bench.device
        self.times: List[Dict[str, float]] = []
        self.totals: List[float] = []
        self.test_times: List[float] = []
        self.transient_mib = 0.0
        self.last_loss: Optional[torch.Tensor] = None

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        raise NotImplementedError

    def test_step(self) -> torch.Tensor:
        raise NotImplementedError

    def resident_modules(self) -> List[Optional[nn.Module]]:
        return []

    def resident_mib(self) -> float:
        return tensor_mib(*self.resident_modules())


# ------------------------------------------------------------------------------------------------- KDPL_CoOp
class KDPLOurs(Variant):
    """``KDPL_CoOp`` as our trainer steps it (KDPLTrainer.compute_loss under PromptDistillTrainer.forward_backward);
    with ``cached`` the teacher's logits and the student's frozen image features come from a teacher cache."""

    def __init__(self, bench: Bench, cached: bool = False):
        super().__init__(bench)
        self.name = "cached" if cached else "ours"
        torch.manual_seed(0)
        loaded = load_clip(bench.args.student)
        student = PromptedCLIP(loaded, CoOpPromptLearner(loaded.model, loaded.tokenize, 4, CTX_INIT))
        student = cast_to_precision(student.to(self.device), bench.student_prec)  # as the trainers
        student.register_class_set("train", bench.classnames)
        self.student, self.teacher = student, bench.teacher
        self.optim = sgd(student.prompt_learner.parameters())
        self.cache = self.build_cache() if cached else None

    def build_cache(self) -> TeacherCache:
        """The cache holds this batch's views (teacher cosines, read at the student's logit scale, + the student's
        frozen image features in the cache's student part), built once."""
        images, batch = self.bench.images, self.bench.args.batch
        folder = self.cache_dir = scratch_dir(self)
        rows = self.teacher.logits(images, 1.0)
        write_meta(folder, {"num_images": batch, "kind": "logits", "width": rows.shape[1], "epochs": 1})
        save_shard(folder, 0, 0, torch.arange(batch), rows)
        with torch.no_grad(), autocast(self.device, self.bench.student_prec):
            feats = self.student.encode_image(images)
        part = student_part_dir(folder, {"student": self.bench.args.student, "student_prec": self.bench.student_prec})
        write_meta(part, {"num_images": batch, "kind": "student_features", "width": feats.shape[1], "epochs": 1})
        save_shard(part, 0, 0, torch.arange(batch), feats)
        self.index = torch.arange(batch, device=self.device)
        self.student_cache = TeacherCache(part, self.device)
        return TeacherCache(folder, self.device, scale=float(self.student.logit_scale))

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        images, prec = self.bench.images, self.bench.student_prec
        with autocast(self.device, prec):
            image_features = None
            with timer.part("teacher image"):
                if self.cache is None:
                    teacher_logits = self.teacher.logits(images, self.student.logit_scale)
                else:
                    teacher_logits = self.cache.lookup(0, self.index)
                    image_features = F.normalize(self.student_cache.lookup(0, self.index), dim=-1)
            with timer.part("student fwd+bwd"):
                logits = self.student(images, key="train", image_features=image_features)
                loss = symmetric_kl(teacher_logits, logits)[0]
        with timer.part("student fwd+bwd"):
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()
        return loss.detach()

    def resident_modules(self):
        return [self.student] + ([self.teacher] if self.cache is None else [])

    def resident_mib(self) -> float:
        rows = self.cache._rows if self.cache is not None else None
        extra = rows.numel() * rows.element_size() / 2 ** 20 if rows is not None else 0.0
        return super().resident_mib() + extra


class KDPLReference(Variant):
    """``CoOp_KDPL`` as github:miccunifi/KDPL runs it (see the module docstring for the files and functions)."""

    name = "reference"

    def __init__(self, bench: Bench):
        super().__init__(bench)
        torch.manual_seed(0)
        self.student = CoOpCodeStudent(load_clip(bench.args.student), bench.classnames, CTX_INIT,
                                       bench.student_prec).to(self.device)
        loaded = bench.load_teacher_clip()
        if loaded.preprocess.size != bench.images.shape[-1]:
            raise ValueError(f"The KDPL code feeds the student's {bench.images.shape[-1]}px view to the teacher "
                             f"unchanged; teacher {bench.args.teacher} expects {loaded.preprocess.size}px. Pick a "
                             "teacher with the student's input size.")
        self.teacher = freeze(loaded.model).to(self.device)  # fp32, as the DFN5B open_clip teacher
        tokens = loaded.tokenize([TEMPLATE.format(c) for c in bench.classnames])
        with torch.no_grad():  # init_teacher_text_features: once, in chunks of 128
            self.teacher_text = torch.cat([self.teacher.encode_text(t.to(self.device)) for t in tokens.split(128)])
        self.k = len(bench.classnames)  # non-class-agnostic: K = all classes (get_K_max)
        self.optim = sgd([self.student.ctx])

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        images = self.bench.images
        with timer.part("teacher image"):  # CustomCLIPTeacher.forward (not under no_grad; nothing needs a grad)
            feats = reference_image_features(self.teacher.visual, images)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            text = self.teacher_text / self.teacher_text.norm(dim=-1, keepdim=True)
            teacher_logits = self.student.clip.logit_scale.exp() * feats @ text.t()
        with timer.part("host"):
            indices = kdpl_host_sampling(teacher_logits, self.k)
        with timer.part("student fwd+bwd"):
            student_logits = self.student(images, indices)
            teacher_logits = teacher_logits[:, indices]
            teacher_log_prob = F.log_softmax(teacher_logits, dim=-1)
            student_log_prob = F.log_softmax(student_logits, dim=-1)
            loss_f = F.kl_div(student_log_prob, teacher_log_prob, log_target=True, reduction="batchmean")
            loss_r = F.kl_div(teacher_log_prob, student_log_prob, log_target=True, reduction="batchmean")
            loss = 0.5 * loss_f + 0.5 * loss_r
            self.optim.zero_grad()
            if not torch.isfinite(loss).all():  # Dassl's detect_anomaly, inside model_backward_and_update
                raise FloatingPointError("Loss is infinite or NaN!")
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()
        with timer.part("host"):
            self.summary = {"loss symmetric KL": loss.item(), "loss KL forward": loss_f.item(),
                            "loss KL reverse": loss_r.item()}
        return loss.detach()

    def resident_modules(self):
        return [self.student, self.teacher]


class CoOpFloor(Variant):
    """CoOp's own training step (github:KaiyangZhou/CoOp trainers/coop.py ``CoOp.forward_backward``), no teacher."""

    name = "floor"

    def __init__(self, bench: Bench):
        super().__init__(bench)
        torch.manual_seed(0)
        self.student = CoOpCodeStudent(load_clip(bench.args.student), bench.classnames, CTX_INIT,
                                       bench.student_prec).to(self.device)
        self.optim = sgd([self.student.ctx])

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        labels = self.bench.labels
        with timer.part("student fwd+bwd"):
            with autocast(self.device, self.bench.student_prec):  # CoOp's amp path; a no-op otherwise
                output = self.student(self.bench.images)
                loss = F.cross_entropy(output, labels)
            self.optim.zero_grad()
            if not torch.isfinite(loss).all():  # Dassl's detect_anomaly
                raise FloatingPointError("Loss is infinite or NaN!")
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()
        with timer.part("host"):
            self.summary = {"loss": loss.item(),
                            "acc": ((output.argmax(dim=1) == labels).float().mean() * 100).item()}
        return loss.detach()

    def resident_modules(self):
        return [self.student]


# ---------------------------------------------------------------------------------------------------- PromptKD
def build_promptkd_student(bench: Bench) -> PromptKDStudent:
    """Our PromptKD student (deep visual prompts + projector); same seed, same initial values in every variant."""
    teacher_dim = int(bench.teacher.class_features.shape[1])  # builds the shared teacher first (own seed)
    torch.manual_seed(0)
    loaded = load_clip(bench.args.student)
    depth = min(PROMPTKD_DEPTH, len(loaded.model.visual.transformer.resblocks))
    student = PromptKDStudent(loaded, StudentLearner(loaded.model, PROMPTKD_CTX, depth, teacher_dim, 2))
    student = cast_to_precision(student.to(bench.device), bench.student_prec)
    student.set_class_vectors(bench.teacher.class_features)
    student.set_eval_rows(math.ceil(len(bench.classnames) / 2), None)  # the test split's new classes
    return student.train()


class PromptKDOurs(Variant):
    """``PromptKD`` as our trainer steps it (W computed once; online teacher image tower, or its cached features)."""

    has_test_step = True

    def __init__(self, bench: Bench, cached: bool = False):
        super().__init__(bench)
        self.name = "cached" if cached else "ours"
        self.student, self.teacher = build_promptkd_student(bench), bench.teacher
        self.optim = sgd(self.student.prompt_learner.parameters())
        self.cache = None
        if cached:
            folder = self.cache_dir = scratch_dir(self)
            rows = self.teacher.encode_image(bench.images)
            write_meta(folder, {"num_images": bench.args.batch, "kind": "teacher_features", "width": rows.shape[1],
                                "epochs": 1})
            save_shard(folder, 0, 0, torch.arange(bench.args.batch), rows)
            self.index = torch.arange(bench.args.batch, device=self.device)
            self.cache = TeacherCache(folder, self.device)

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        images = self.bench.images
        with autocast(self.device, self.bench.student_prec):
            with timer.part("teacher image"):
                if self.cache is None:
                    teacher_logits = self.teacher.logits(images, self.teacher.logit_scale)
                else:  # PromptKD.teacher_logits with a cache: fp32, as the online teacher's logits
                    with full_precision(self.device):
                        teacher_logits = self.teacher.logit_scale * self.cache.lookup(0, self.index) \
                            @ self.student.class_vectors.t()
            with timer.part("student fwd+bwd"):
                loss = promptkd_loss(teacher_logits, self.student(images, key="train"))
        with timer.part("student fwd+bwd"):
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()
        return loss.detach()

    @torch.no_grad()
    def test_step(self) -> torch.Tensor:
        """Our test batch: the student alone against W's new-class rows (the teacher never runs at test time)."""
        self.student.eval()
        with autocast(self.device, self.bench.student_prec):
            out = self.student(self.bench.images, key="eval")
        self.student.train()
        return out

    def resident_modules(self):
        return [self.student] + ([self.teacher] if self.cache is None else [])


class PromptKDReference(Variant):
    """``PromptKD`` as github:zhengli97/PromptKD trainers/promptkd.py runs it (module docstring: files, functions)."""

    name = "reference"
    has_test_step = True

    def __init__(self, bench: Bench):
        super().__init__(bench)
        ours = bench.teacher
        self.student = build_promptkd_student(bench)  # its learner: the same initial prompts and projector
        student_prec = bench.student_prec
        self.student_dtype = weight_dtype(student_prec) if student_prec in ("fp16", "bf16") else torch.float32
        cast_to_precision(self.student.prompt_learner.projector, student_prec)  # convert_weights(VPT_image_trans)
        loaded = bench.load_teacher_clip()
        if loaded.preprocess.size != bench.images.shape[-1]:
            raise ValueError(f"The PromptKD code feeds the student's {bench.images.shape[-1]}px view to the teacher "
                             f"unchanged; teacher {bench.args.teacher} expects {loaded.preprocess.size}px.")
        self.teacher = freeze(loaded.model)
        # clip.build_model's fp16 weights on a GPU (norms stay fp32)
        cast_to_precision(self.teacher.to(self.device), "fp16" if self.device.type == "cuda" else "fp32")
        self.learner = ours.prompted.prompt_learner  # the same (frozen) teacher prompts as ours
        n_ctx = self.learner.n_ctx
        self.tokenized_prompts = loaded.tokenize([f"{CTX_INIT} {c}." for c in bench.classnames])  # host
        dtype = self.teacher.visual.conv1.weight.dtype
        with torch.no_grad():
            emb = self.teacher.token_embedding(self.tokenized_prompts.to(self.device)).type(dtype)
        m = math.ceil(len(bench.classnames) / 2)  # base2novel: base and new halves kept apart, joined every step
        self.prefix = (emb[:m, :1], emb[m:, :1])
        self.suffix = (emb[:m, 1 + n_ctx:], emb[m:, 1 + n_ctx:])
        self.m = m
        self.optim = sgd(self.student.prompt_learner.parameters())

    def teacher_forward(self, images: torch.Tensor, timer: Optional[PartTimer] = None):
        """``CustomCLIP_teacher.forward``: text features of all N classes, then image features and logits."""
        timer = timer or PartTimer(self.device, sync=False)
        learner = self.learner
        with torch.no_grad():
            with timer.part("teacher text"):
                prefix, suffix = torch.cat(self.prefix), torch.cat(self.suffix)
                ctx = learner.ctx.type(prefix.dtype).unsqueeze(0).expand(prefix.shape[0], -1, -1)
                prompts = torch.cat([prefix, ctx, suffix], dim=1)
                text = reference_text_features(self.teacher, prompts, self.tokenized_prompts.to(self.device),
                                               learner.text_deep_prompts())
                text = text / text.norm(dim=-1, keepdim=True)
            with timer.part("teacher image"):
                vctx, vdeep = learner.vision_prompts()
                feats = reference_image_features(self.teacher.visual, images, vctx, vdeep)
                feats = feats / feats.norm(dim=-1, keepdim=True)
                logits = self.teacher.logit_scale.exp() * feats @ text.t()
        return text, logits

    def student_features(self, images: torch.Tensor) -> torch.Tensor:
        """The student's ``CustomCLIP.forward``: prompted image tower, projector, L2 normalisation."""
        learner = self.student.prompt_learner
        vctx, vdeep = learner.vision_prompts()
        feats = reference_image_features(self.student.image_encoder.visual, images, vctx, vdeep)
        feats = learner.projector(feats.type(self.student_dtype))
        return feats / feats.norm(dim=-1, keepdim=True)

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        images = self.bench.images
        text, teacher_logits = self.teacher_forward(images, timer)
        with timer.part("student fwd+bwd"):
            feats = self.student_features(images)
            student_logits = self.student.logit_scale * feats @ text.t().type(feats.dtype)
            temperature = 1.0
            loss = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                            F.softmax(teacher_logits / temperature, dim=1),
                            reduction="sum") * temperature ** 2 / student_logits.numel()
            self.optim.zero_grad()
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()
        with timer.part("host"):
            self.summary = {"loss": loss.item()}
        return loss.detach()

    @torch.no_grad()
    def test_step(self) -> torch.Tensor:
        """``PromptKD.test`` on one batch: the whole teacher, then the student against the new-class text rows."""
        self.student.eval()
        text, _ = self.teacher_forward(self.bench.images)
        feats = self.student_features(self.bench.images)
        out = self.student.logit_scale * feats @ text[self.m:].t().type(feats.dtype)
        self.student.train()
        return out

    def resident_modules(self):
        return [self.student, self.teacher, self.learner]


class PromptKDFloor(Variant):
    """Our PromptKD student alone (no teacher): cross-entropy against fixed class vectors."""

    name = "floor"

    def __init__(self, bench: Bench):
        super().__init__(bench)
        self.student = build_promptkd_student(bench)
        self.optim = sgd(self.student.prompt_learner.parameters())

    def train_step(self, timer: PartTimer) -> torch.Tensor:
        with timer.part("student fwd+bwd"):
            with autocast(self.device, self.bench.student_prec):
                loss = F.cross_entropy(self.student(self.bench.images, key="train"), self.bench.labels)
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()
        return loss.detach()

    def resident_modules(self):
        return [self.student]


BUILDERS = {
    "kdpl_coop": {"ours": KDPLOurs, "cached": lambda b: KDPLOurs(b, cached=True), "reference": KDPLReference,
                  "floor": CoOpFloor},
    "promptkd": {"ours": PromptKDOurs, "cached": lambda b: PromptKDOurs(b, cached=True),
                 "reference": PromptKDReference, "floor": PromptKDFloor},
}


def build_variants(args, device: torch.device, names: Sequence[str] = VARIANTS) -> List[Variant]:
    """Every requested variant of ``args.method``, built once (the teachers' one-time work happens here)."""
    bench = Bench(args, device)
    return [BUILDERS[args.method][name](bench) for name in names]


# ------------------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variants: Sequence[Variant], args, device: torch.device) -> Dict[str, Dict[str, float]]:
    """Step the variants interleaved; per variant the median of each part, the total and the test step, in ms."""
    for step in range(args.warmup + args.steps):
        for variant in variants:
            if device.type == "cuda":
                _sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            timer = PartTimer(device)
            start = time.perf_counter()
            variant.last_loss = variant.train_step(timer)
            _sync(device)
            total = time.perf_counter() - start
            if device.type == "cuda":
                variant.transient_mib = max(variant.transient_mib,
                                            (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20)
                start = time.perf_counter()  # the same step without part syncs: the honest total on a GPU
                variant.train_step(PartTimer(device, sync=False))
                _sync(device)
                total = time.perf_counter() - start
            else:
                total = sum(timer.step.values())
            test = None
            if variant.has_test_step:
                _sync(device)
                start = time.perf_counter()
                variant.test_step()
                _sync(device)
                test = time.perf_counter() - start
            if step >= args.warmup:
                variant.times.append(timer.step)
                variant.totals.append(total)
                if test is not None:
                    variant.test_times.append(test)
    rows = {}
    for variant in variants:
        row = {p: 1000 * statistics.median(t.get(p, 0.0) for t in variant.times) for p in PARTS}
        row["total"] = sum(row[p] for p in PARTS) if device.type != "cuda" \
            else 1000 * statistics.median(variant.totals)
        if variant.test_times:
            row["test step"] = 1000 * statistics.median(variant.test_times)
        row["peak MiB"] = variant.resident_mib() + variant.transient_mib if device.type == "cuda" else float("nan")
        rows[variant.name] = row
    return rows


def run_variants(args, device: torch.device, names: Sequence[str] = VARIANTS) -> Dict[str, Dict[str, float]]:
    """The measured rows, each with its step's ``GFLOP`` (counted in one extra step after the timed ones)."""
    variants = build_variants(args, device, names)
    rows = measure(variants, args, device)
    for name, flops in count_flops(variants, device).items():
        rows[name]["GFLOP"] = flops["total"]
    return rows


def report(args, device: torch.device, rows: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Print the table, the ratios of the totals and one met / NOT met line per target; return the ratios."""
    columns = [*PARTS, "total"] + (["test step"] if args.method == "promptkd" else []) + ["peak MiB"] + \
        (["GFLOP"] if all("GFLOP" in row for row in rows.values()) else [])
    total_note = "the sum of the parts" if device.type != "cuda" else "the end-to-end step without part syncs"
    print(f"\n{args.method}: student {args.student}, teacher {args.teacher}, {args.classes} classes, batch "
          f"{args.batch}, median of {args.steps} steps on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (ms per step; total = {total_note})")
    print("| variant | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 1))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row.get(k, float('nan')):.2f}" for k in columns) + " |")
    ratios = {f"{a}/{b}": rows[a]["total"] / rows[b]["total"] for a, b in RATIOS[args.method]
              if a in rows and b in rows}
    if "test step" in rows.get("reference", {}) and "test step" in rows.get("ours", {}):
        ratios["test reference/ours"] = rows["reference"]["test step"] / rows["ours"]["test step"]
    print()
    for key, value in ratios.items():
        print(f"ratio {key} = {value:.3f}")
    for a, b in RATIOS[args.method]:
        if "GFLOP" in rows.get(a, {}) and "GFLOP" in rows.get(b, {}):
            print(f"GFLOP ratio {a}/{b} = {rows[a]['GFLOP'] / rows[b]['GFLOP']:.3f} (the same arithmetic at the same "
                  "efficiency)")
    for t in TARGETS[args.method]:
        key = f"{t.num}/{t.den}"
        if key not in ratios:
            continue
        verdict = "met" if ratio_meets(ratios[key], t.op, t.bound) else "NOT met"
        print(f"target {t.text}: {key} = {ratios[key]:.3f} ({t.op} {t.bound:g}) -> {verdict}")
    return ratios


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=tuple(BUILDERS), default="kdpl_coop")
    p.add_argument("--student", default="tiny-vit")
    p.add_argument("--teacher", default="tiny-vit-wide")
    p.add_argument("--teacher-backend", default="auto")
    p.add_argument("--teacher-pretrained", default="")
    p.add_argument("--teacher-prec", default="fp32", help="ours: fp32 | bf16 | fp16 | amp (the references: their own)")
    p.add_argument("--student-prec", default="fp32", help="fp32 | fp16 | bf16 | amp (all variants; CPU: fp16 -> fp32)")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    return args


def main(argv=None) -> Dict[str, float]:
    args = parse_args(argv)
    device = torch.device(args.device)
    rows = run_variants(args, device, args.variants.split(","))
    return report(args, device, rows)


if __name__ == "__main__":
    main()
