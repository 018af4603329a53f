"""Time the student's text path at full length vs truncated (and length-bucketed, and with the shared prompt prefix),
and SDPA vs module attention.

Measures, on one device, with random weights of a real architecture (default ``random:ViT-B/32``):
  * CoOp text forward+backward over ``--classes`` class prompts (Caltech-101's names, cycled) at 77 tokens, cut after
    the longest EOT (what ``MODEL.CLIP.TRUNCATE_TEXT True`` runs), bucketed by EOT (each group at its own cut), and
    cut with SOS + context run once for all classes (``MODEL.CLIP.SHARE_TEXT_PREFIX True``, SDPA only), with and
    without the last block run for the pooled tokens alone;
  * driven attention blocks through ``F.scaled_dot_product_attention`` vs ``nn.MultiheadAttention`` (text tower
    forward+backward at the cut, image tower forward in ``no_grad`` and forward+backward with VPT-style prompts), and
    the attention op alone at the text (causal) and image shapes (widths 512 / 768, 8 / 12 heads).
All variants of a tower (both attention paths included) run interleaved after ``--warmup`` rounds; each figure is
the median over ``--repeats`` rounds.

    python -m benchmarks.text_path_benchmark --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch.nn import functional as F

from trainers.core.clip_models import load_clip
from trainers.core.encoders import VisionEncoder
from trainers.core.prompt_learners import ClassPrompts, CoOpPromptLearner, PromptedCLIP, VPTPromptLearner

#: Caltech-101's class names as CoOp prompts them (100 classes, the first dataset of every CoOp table).
CALTECH101 = (
    "face leopard motorbike accordion airplane anchor ant barrel bass beaver binocular bonsai brain brontosaurus "
    "buddha butterfly camera cannon car_side ceiling_fan cellphone chair chandelier cougar_body cougar_face crab "
    "crayfish crocodile crocodile_head cup dalmatian dollar_bill dolphin dragonfly electric_guitar elephant emu "
    "euphonium ewer ferry flamingo flamingo_head garfield gerenuk gramophone grand_piano hawksbill headphone hedgehog "
    "helicopter ibis inline_skate joshua_tree kangaroo ketch lamp laptop llama lobster lotus mandolin mayfly menorah "
    "metronome minaret nautilus octopus okapi pagoda panda pigeon pizza platypus pyramid revolver rhino rooster "
    "saxophone schooner scissors scorpion sea_horse snoopy soccer_ball stapler starfish stegosaurus stop_sign "
    "strawberry sunflower tick trilobite umbrella watch water_lilly wheelchair wild_cat windsor_chair wrench "
    "yin_yang").split()


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def race(variants: Dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
         ) -> Dict[str, float]:
    """Median seconds per variant, the variants interleaved so that machine drift hits all alike."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def with_sdpa(encoders: List[torch.nn.Module], sdpa: bool, fn: Callable[[], None], read_only_pooled: bool = True
              ) -> Callable[[], None]:
    """``fn`` with the encoders' attention path (and last-block shortcut) forced, so that variants can run
    interleaved."""
    def run() -> None:
        for encoder in encoders:
            encoder.sdpa = sdpa
            encoder.read_only_pooled = read_only_pooled
        fn()
    return run


def attention_variants(heads: int, shape: tuple, causal: bool, grad: bool, device: torch.device
                       ) -> Dict[str, Callable[[], None]]:
    """Self-attention alone (module vs SDPA) on frozen weights, input (N, L, D) with or without a backward."""
    from trainers.core.encoders import self_attention

    attn = torch.nn.MultiheadAttention(shape[-1], heads).to(device).requires_grad_(False)
    x = torch.randn(*shape, device=device, requires_grad=grad)
    mask = torch.full(shape[1:2] * 2, float("-inf"), device=device).triu(1) if causal else None

    def run(sdpa: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.set_grad_enabled(grad):
                out = self_attention(attn, x, None if sdpa and causal else mask, causal, sdpa)
                if grad:
                    out.sum().backward()
        return step
    return {"module": run(False), "sdpa": run(True)}


def coop_text_step(student: PromptedCLIP, prompts: ClassPrompts, length: int, buckets: bool = False,
                   shared: bool = False) -> Callable[[], None]:
    """One forward+backward of CoOp's text features at ``length`` tokens (or per EOT bucket, each at its cut; or with
    the shared prefix run once)."""
    enc, learner = student.text_encoder, student.prompt_learner
    n = learner.n_ctx
    groups = [torch.arange(len(prompts))]
    if buckets:
        eot = prompts.eot_index.cpu()
        groups = [torch.nonzero(eot == e).flatten() for e in eot.unique()]

    def step() -> None:
        learner.zero_grad(set_to_none=True)
        feats = []
        for rows in groups:
            cut = int(prompts.eot_index[rows].max()) + 1 if buckets else length
            embeds, eot = prompts.embed(student.clip.token_embedding, rows.to(prompts.tokens.device), cut)
            x = torch.cat([embeds[:, :1], learner.ctx.expand(len(rows), -1, -1), embeds[:, 1 + n:]], dim=1)
            feats.append(enc(x, eot, shared_prefix=1 + n if shared else 0))
        F.normalize(torch.cat(feats).float(), dim=-1).sum().backward()
    return step


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:ViT-B/32")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=4, help="images for the image-tower timings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loaded = load_clip(args.model)
    names = [CALTECH101[i % len(CALTECH101)] for i in range(args.classes)]
    student = PromptedCLIP(loaded, CoOpPromptLearner(loaded.model, loaded.tokenize, 16)).to(device)
    student.register_class_set("bench", names)
    prompts = student.class_sets["classes_bench"]
    eot = prompts.eot_index.float()
    cut = student.text_encoder.cut_length(prompts.max_eot)
    print(f"{args.model}, {args.classes} classes, CPU threads {torch.get_num_threads()}, device {device}: EOT "
          f"positions {int(eot.min())}..{int(eot.max())} (mean {float(eot.mean()):.1f}); cut {cut} of "
          f"{student.text_encoder.context_length} tokens")

    enc = student.text_encoder
    text_variants = {}
    for sdpa in (False, True):
        tag = "sdpa" if sdpa else "module"
        text_variants.update({
            f"text fwd+bwd 77 tokens [{tag}]": with_sdpa([enc], sdpa, coop_text_step(student, prompts, 77)),
            f"text fwd+bwd cut {cut} [{tag}]": with_sdpa([enc], sdpa, coop_text_step(student, prompts, cut)),
            f"text fwd+bwd EOT buckets [{tag}]": with_sdpa([enc], sdpa,
                                                           coop_text_step(student, prompts, cut, buckets=True)),
        })
    shared_name = f"text fwd+bwd cut {cut} + shared prefix [sdpa]"
    whole_last = f"text fwd+bwd cut {cut} + shared prefix, whole last block [sdpa]"
    text_variants[whole_last] = with_sdpa([enc], True, coop_text_step(student, prompts, cut, shared=True), False)
    text_variants[shared_name] = with_sdpa([enc], True, coop_text_step(student, prompts, cut, shared=True))
    results = race(text_variants, device, args.warmup, args.repeats)

    depth = len(loaded.model.visual.transformer.resblocks)
    vpt = PromptedCLIP(loaded, VPTPromptLearner(loaded.model, 8, depth)).to(device)
    images = torch.randn(args.batch, 3, loaded.preprocess.size, loaded.preprocess.size, device=device)
    frozen = VisionEncoder(loaded.model)

    def image_forward() -> None:
        with torch.no_grad():
            frozen(images)

    def vpt_step() -> None:
        vpt.prompt_learner.zero_grad(set_to_none=True)
        vpt.encode_image(images).sum().backward()

    image_variants = {f"image fwd no_grad batch {args.batch} [clip encode_image]": lambda: native_image_forward()}

    def native_image_forward() -> None:  # the package's own tower: the path before our driven blocks
        with torch.no_grad():
            loaded.model.encode_image(images)

    for sdpa, pooled in ((False, False), (True, False), (True, True)):
        tag = ("sdpa" if sdpa else "module") + (", whole last block" if sdpa and not pooled else "")
        image_variants.update({
            f"image fwd no_grad batch {args.batch} [{tag}]": with_sdpa([frozen], sdpa, image_forward, pooled),
            f"image fwd+bwd VPT batch {args.batch} [{tag}]": with_sdpa([vpt.image_encoder], sdpa, vpt_step, pooled),
        })
    results.update(race(image_variants, device, args.warmup, args.repeats))
    for label, heads, shape, causal in (("text", 8, (args.classes, cut, 512), True),
                                        ("text", 8, (args.classes, 77, 512), True),
                                        ("image", 12, (args.batch, 50, 768), False),
                                        ("image", 12, (8 * args.batch, 50, 768), False)):
        for grad in (False, True):
            kind = "fwd+bwd" if grad else "fwd no_grad"
            timings = race(attention_variants(heads, shape, causal, grad, device), device, args.warmup,
                           4 * args.repeats)
            results.update({f"attention only, {label} {tuple(shape)} {kind} [{k}]": v for k, v in timings.items()})
    width = max(map(len, results))
    for name, seconds in results.items():
        print(f"  {name:<{width}}  {seconds * 1000:9.1f} ms")
    speedups = {tag: (results[f"text fwd+bwd 77 tokens [{tag}]"] / results[f"text fwd+bwd cut {cut} [{tag}]"],
                      results[f"text fwd+bwd cut {cut} [{tag}]"] / results[f"text fwd+bwd EOT buckets [{tag}]"])
                for tag in ("module", "sdpa")}
    print("; ".join(f"[{tag}] text 77 -> cut {cut}: {a:.2f}x, EOT buckets vs cut: {b:.2f}x"
                    for tag, (a, b) in speedups.items()))
    fwd, vpt_fb = f"image fwd no_grad batch {args.batch}", f"image fwd+bwd VPT batch {args.batch}"
    print(f"[sdpa] last block for the pooled token only: text (cut + shared prefix) "
          f"{results[whole_last] / results[shared_name]:.2f}x; image fwd "
          f"{results[f'{fwd} [sdpa, whole last block]'] / results[f'{fwd} [sdpa]']:.2f}x, VPT fwd+bwd "
          f"{results[f'{vpt_fb} [sdpa, whole last block]'] / results[f'{vpt_fb} [sdpa]']:.2f}x")
    print(f"[sdpa] text cut {cut} -> cut + shared prefix: "
          f"{results[f'text fwd+bwd cut {cut} [sdpa]'] / results[shared_name]:.2f}x; 77 tokens [module] -> cut + "
          f"shared prefix [sdpa]: {results['text fwd+bwd 77 tokens [module]'] / results[shared_name]:.2f}x")


if __name__ == "__main__":
    main()
