"""Time one distillation training step, split into its parts, against the reference-style step and the floor.

Prints, for one method / backbone pair / class count / batch size, the milliseconds per step of
  (a) ours       : teacher class vectors computed once, teacher in the configured precision, no host sync;
  (b) reference  : the same method with the reference code's per-step teacher work reinstated (teacher text features
                   recomputed over all classes every step, teacher in fp32, a device-to-host copy of the teacher
                   logits each step);
  (a') cached    : ours with the teacher's outputs read from an offline teacher cache (tools/build_teacher_cache.py):
                   KDPL's logits (and CoOp's frozen image features), PromptKD's teacher image features (then
                   logits = scale * u @ W.T);
  (c) floor      : the base prompt method alone (no teacher: CoOp for KDPL, the prompted student for PromptKD);
split into teacher image / teacher text / student forward+backward / optimizer, with peak memory (CUDA: the
variant's resident tensors plus its largest step transient), and the ratios measured in this run. The variants' steps
run interleaved after ``--warmup`` rounds and each part is the median over ``--steps`` rounds, so a shared machine's
drift hits every variant alike. Runs on CPU (tiny models by default) or GPU (``random:<arch>`` shapes need no
weights; real names need their weights locally):

    python -m benchmarks.step_benchmark --method kdpl_coop --classes 1000 --batch 8
    python -m benchmarks.step_benchmark --method promptkd --student ViT-B/16 --teacher ViT-L/14 --device cuda \
        --teacher-prec bf16 --classes 1000 --batch 8
    bash benchmarks/targets.sh cuda      # the issue's targets with the real architectures (random weights)
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from torch.nn import functional as F

from trainers.core.clip_models import load_clip
from trainers.core.losses import promptkd_loss, symmetric_kl
from trainers.core.precision import autocast, resolve_precision, weight_dtype
from trainers.core.prompt_learners import CoOpPromptLearner, PromptedCLIP, VPTPromptLearner
from trainers.core.teacher import FrozenTeacher
from trainers.core.teacher_cache import TeacherCache, save_shard, write_meta

PARTS = ("teacher image", "teacher text", "student fwd+bwd", "optimizer")
VARIANTS = ("ours", "cached", "reference", "floor")
#: issue targets per method: (ratio, bound, description); a positive bound is a minimum, a negative one a maximum.
TARGETS = {
    "promptkd": [("(b)/(a)", 3.0, "PromptKD step at least 3x faster than the reference-style step, (b)/(a) >= 3")],
    "kdpl_coop": [("(a')/(c)", -1.15, "KDPL_CoOp with the cache at most 1.15x the CoOp step, (a')/(c) <= 1.15"),
                  ("(b)/(a)", 1.0, "KDPL_CoOp online not slower than the reference-style step, (b)/(a) >= 1")],
}


def ratio_meets(ratio: float, bound: float) -> bool:
    return ratio >= bound if bound > 0 else ratio <= -bound



class PartTimer:
    """Wall time per part of one step; synchronises the device at part boundaries (benchmark only)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.step: Dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.step[name] = self.step.get(name, 0.0) + time.perf_counter() - start


def build_student(args, device: torch.device):
    student_clip = load_clip(args.student)
    classnames = [f"class {i}" for i in range(args.classes)]
    if args.method == "kdpl_coop":
        learner = CoOpPromptLearner(student_clip.model, student_clip.tokenize, 4, "a photo of a")
    else:
        learner = VPTPromptLearner(student_clip.model, 4, min(9, len(student_clip.model.visual.transformer.resblocks)))
    student = PromptedCLIP(student_clip, learner).to(device)
    if args.student_prec in ("fp16", "bf16"):  # as the trainers: the whole student in that dtype (CoOp's PREC fp16)
        student.to(weight_dtype(args.student_prec))
    student.register_class_set("train", classnames)
    return student


def make_teacher(args, device, size: int, prec: str) -> FrozenTeacher:
    loaded = load_clip(args.teacher, backend=args.teacher_backend, pretrained=args.teacher_pretrained)
    return FrozenTeacher(loaded, size, loaded.preprocess.mean, loaded.preprocess.std, precision=prec).to(device)


def tensor_mib(*modules) -> float:
    """MiB of the distinct parameters and buffers of ``modules`` (what a variant keeps resident)."""
    seen = {}
    for module in modules:
        if module is None:
            continue
        for t in list(module.parameters()) + list(module.buffers()):
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values()) / 2 ** 20


class Variant:
    """One way of running the method's training step; :meth:`step` runs one step and returns its part times."""

    def __init__(self, name: str, args, device: torch.device, teacher: Optional[FrozenTeacher], texts: List[str],
                 images: torch.Tensor, labels: torch.Tensor):
        torch.manual_seed(0)
        self.name, self.args, self.device = name, args, device
        self.student = build_student(args, device)
        self.teacher, self.texts, self.images, self.labels = teacher, texts, images, labels
        self.projector = None
        if args.method == "promptkd":  # student feature -> teacher embedding space (class vectors W)
            out_dim, in_dim = args.teacher_dim, self.student.clip.visual.output_dim
            self.projector = torch.nn.Sequential(
                torch.nn.Linear(in_dim, out_dim), torch.nn.BatchNorm1d(out_dim), torch.nn.ReLU(),
                torch.nn.Linear(out_dim, out_dim)).to(device)
            self.floor_weights = F.normalize(torch.randn(args.classes, out_dim, device=device), dim=-1)
        params = list(self.student.prompt_learner.parameters())
        params += list(self.projector.parameters()) if self.projector is not None else []
        self.optim = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        self.cache = self.build_cache() if name == "cached" else None
        self.times: List[Dict[str, float]] = []
        self.transient_mib = 0.0

    def build_cache(self) -> TeacherCache:
        """The cache holds this batch's views; built once, outside the timed steps."""
        student, teacher, images, args = self.student, self.teacher, self.images, self.args
        folder = tempfile.mkdtemp(prefix="teacher_cache_")
        frozen_tower = not student.prompt_learner.has_vision_prompts  # CoOp: its image features are cached too
        if args.method == "kdpl_coop":
            rows, kind = teacher.logits(images, student.logit_scale), "logits"
        else:
            rows, kind = teacher.encode_image(images), "teacher_features"
        write_meta(folder, {"num_images": args.batch, "kind": kind, "width": rows.shape[1], "epochs": 1,
                            "student_features": frozen_tower})
        with torch.no_grad(), autocast(self.device, args.student_prec):
            student_feats = student.encode_image(images) if frozen_tower else None
        save_shard(folder, 0, 0, torch.arange(args.batch), rows, 0, student_feats)
        self.index = torch.arange(args.batch, device=self.device)
        return TeacherCache(folder, self.device)

    def resident_mib(self) -> float:
        cache = 0.0
        if self.cache is not None and self.cache._rows is not None:
            cache = self.cache._rows.numel() * 2 / 2 ** 20
        teacher = self.teacher if self.name in ("ours", "reference") else None
        return tensor_mib(self.student, self.projector, teacher) + cache

    def step(self, timer: PartTimer) -> None:
        args, device, student, teacher, images = self.args, self.device, self.student, self.teacher, self.images
        teacher_logits = image_features = None
        if self.cache is not None:
            with timer.part("teacher image"):
                teacher_logits = self.cache.lookup(0, self.index)
                if self.cache.kind == "teacher_features":
                    teacher_logits = student.logit_scale * teacher_logits @ teacher.class_features.t()
                image_features = self.cache.lookup_student(0, self.index) if self.cache.has_student_features \
                    else None
        elif self.name != "floor":
            if self.name == "reference":
                with timer.part("teacher text"):
                    teacher.set_class_texts(self.texts)  # the reference recomputes W every step
            with timer.part("teacher image"):
                teacher_logits = teacher.logits(images, student.logit_scale)
                if self.name == "reference":
                    teacher_logits.cpu().numpy()  # the reference's per-step host copy
        with timer.part("student fwd+bwd"):
            with autocast(device, args.student_prec):
                if args.method == "kdpl_coop":
                    logits = student(images, key="train", image_features=image_features)
                    loss = symmetric_kl(teacher_logits, logits)[0] if teacher_logits is not None \
                        else F.cross_entropy(logits.float(), self.labels)
                else:
                    prompts = student.prompt_learner.vision_prompts()
                    feats = F.normalize(self.projector(student.image_encoder(images, *prompts).float()), dim=-1)
                    weights = teacher.class_features if teacher_logits is not None else self.floor_weights
                    logits = student.logit_scale * feats @ weights.t()
                    loss = promptkd_loss(teacher_logits, logits) if teacher_logits is not None \
                        else F.cross_entropy(logits, self.labels)
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
        with timer.part("optimizer"):
            self.optim.step()


def run_variants(args, device: torch.device, names=VARIANTS) -> Dict[str, Dict[str, float]]:
    """Build every variant, then run their steps interleaved (ours, cached, reference, floor, ours, ...), so that
    drift of a shared machine hits all alike; each part is the median over the measured steps, in ms."""
    size = load_clip(args.student).preprocess.size
    texts = [f"a photo of a class {i}." for i in range(args.classes)]
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, size, size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    ours_prec = resolve_precision(args.teacher_prec, device, "teacher")
    ours_teacher = make_teacher(args, device, size, ours_prec)
    ours_teacher.set_class_texts(texts)  # once
    reference_teacher = ours_teacher if ours_prec == "fp32" else make_teacher(args, device, size, "fp32")
    teachers = {"ours": ours_teacher, "cached": ours_teacher, "reference": reference_teacher, "floor": None}
    variants = [Variant(n, args, device, teachers[n], texts, images, labels) for n in names]
    for step in range(args.warmup + args.steps):
        for variant in variants:
            timer = PartTimer(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            variant.step(timer)
            if device.type == "cuda":
                transient = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
                variant.transient_mib = max(variant.transient_mib, transient)
            if step >= args.warmup:
                variant.times.append(timer.step)
    rows = {}
    for variant in variants:
        row = {p: 1000 * statistics.median(t.get(p, 0.0) for t in variant.times) for p in PARTS}
        row["total"] = sum(row[p] for p in PARTS)
        row["peak MiB"] = variant.resident_mib() + variant.transient_mib if device.type == "cuda" else float("nan")
        rows[variant.name] = row
    return rows


def main(argv=None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=("kdpl_coop", "promptkd"), default="kdpl_coop")
    p.add_argument("--student", default="tiny-vit")
    p.add_argument("--teacher", default="tiny-vit-wide")
    p.add_argument("--teacher-backend", default="auto")
    p.add_argument("--teacher-pretrained", default="")
    p.add_argument("--teacher-prec", default="fp32", help="ours: fp32 | bf16 | fp16 | amp (reference: fp32)")
    p.add_argument("--student-prec", default="fp32")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    args.student_prec = resolve_precision(args.student_prec, device, "student")
    args.teacher_dim = load_clip(args.teacher, backend=args.teacher_backend, pretrained=args.teacher_pretrained).embed_dim
    rows = run_variants(args, device)
    print(f"\n{args.method}: student {args.student}, teacher {args.teacher}, {args.classes} classes, batch "
          f"{args.batch}, {args.steps} steps on {device} (ms per step)")
    header = ["variant", *PARTS, "total", "peak MiB"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in header[1:]) + " |")
    ours, ref, floor = rows["ours"]["total"], rows["reference"]["total"], rows["floor"]["total"]
    ratios = {"(b)/(a)": ref / ours, "(a)/(c)": ours / floor, "(a')/(c)": rows["cached"]["total"] / floor}
    print(f"\nspeed-up of ours over the reference-style step (b)/(a): {ratios['(b)/(a)']:.2f}x")
    print(f"ours relative to the floor (a)/(c): {ratios['(a)/(c)']:.2f}x")
    cached = ratios["(a')/(c)"]
    print(f"ours with the teacher cache relative to the floor (a')/(c): {cached:.2f}x")
    for name, bound, text in TARGETS[args.method]:
        met = ratio_meets(ratios[name], bound)
        print(f"target {text}: {ratios[name]:.2f}x -> {'met' if met else 'NOT met'}")
    return ratios


if __name__ == "__main__":
    main()
