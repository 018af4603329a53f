"""Synthetic-set orchestration of data-free distillation (trainers/dfkd.py): TRAINER.DFKD -> prompt and synthesis
configs, the cache key, and :class:`SyntheticSetBuilder`, which loads the CLIP teacher and builds the prompt encoder
lazily (a cached set needs neither) and hands ``synthesize_set`` its target and synthesiser factories."""
from __future__ import annotations

import os
import os.path as osp
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .config import cfg_node, cfg_value
from .core.clip_models import LoadedClip, load_clip
from .core.diversify import (STYLE_DICTIONARY, DiversifyConfig, PromptEncoder, PromptTargets, build_prompt_targets,
                             filter_styles)
from .core.generators import GENERATORS, describe_decoder, image_seed, load_vqgan_decoder
from .core.probe_images import ProbeImages
from .core.synthesis import (CutoutConfig, SynthesisConfig, Synthesizer, key_digest, read_synthetic_set,
                             synthesize_set)

DEFAULT_CACHE = osp.join("output", "dfkd_synthetic")


# ---------------------------------------------------------------------------------------------- configuration
def diversify_config(node, domain_names: Sequence[str] = ()) -> Tuple[DiversifyConfig, List[str]]:
    """Prompt settings from TRAINER.DFKD; returns (config, style words dropped for naming a domain)."""
    styles = list(node.STYLE_DICT) or list(STYLE_DICTIONARY)
    dropped: List[str] = []
    if node.STYLE_EXCLUDE == "domains":
        styles, dropped = filter_styles(styles, domain_names)
    elif node.STYLE_EXCLUDE != "none":
        raise ValueError(f"Unknown STYLE_EXCLUDE {node.STYLE_EXCLUDE!r}; use domains or none.")
    return DiversifyConfig(
        template=node.TEMPLATE, template_ensemble=tuple(node.TEMPLATE_ENSEMBLE), style_dict=tuple(styles),
        mix_k=int(node.MIX_K), mix_alpha=float(node.MIX_ALPHA), mix_space=node.MIX_SPACE,
        mix_template=node.MIX_TEMPLATE, style_template=node.STYLE_TEMPLATE, rand_stats=node.RAND_STATS,
        rand_iso_std=float(node.RAND_ISO_STD), rand_n_tokens=int(node.RAND_N_TOKENS),
        rand_guard=bool(node.RAND_GUARD), rand_max_tries=int(node.RAND_MAX_TRIES), n_prompts=int(node.N_PROMPTS),
        n_pseudo_tokens=int(node.N_PSEUDO_TOKENS), con_tau=float(node.CON_TAU),
        con_lambda_cls=float(node.CON_LAMBDA_CLS), con_cls_scale=float(node.CON_CLS_SCALE),
        con_steps=int(node.CON_STEPS), con_lr=float(node.CON_LR), con_init_std=float(node.CON_INIT_STD),
        con_positives=node.CON_POSITIVES, con_rounds=int(node.CON_ROUNDS), con_joint=bool(node.CON_JOINT),
        con_joint_rounds=int(node.CON_JOINT_ROUNDS), con_joint_iters=int(node.CON_JOINT_ITERS),
        con_joint_steps=int(node.CON_JOINT_STEPS), con_joint_lambda=float(node.CON_JOINT_LAMBDA)), dropped


def resolve_generator(node) -> str:
    """SYN_GENERATOR, or vqgan when a checkpoint is set, else fourier (with a warning: not VQGAN-comparable)."""
    kind = node.SYN_GENERATOR or ("vqgan" if node.VQGAN_CKPT else "fourier")
    if kind not in GENERATORS:
        raise ValueError(f"Unknown SYN_GENERATOR {kind!r}; use one of {GENERATORS}.")
    if not node.SYN_GENERATOR and kind == "fourier":
        warnings.warn("TRAINER.DFKD.VQGAN_CKPT is not set: synthesising with the weight-free 'fourier' "
                      "parameterisation; results are not comparable to VQGAN-CLIP synthesis.", stacklevel=2)
    return kind


def synthesis_config(node) -> SynthesisConfig:
    cut = CutoutConfig(n=int(node.SYN_CUTOUTS), augment=bool(node.SYN_AUGMENT), p=float(node.SYN_AUG_P),
                       noise=float(node.SYN_NOISE))
    return SynthesisConfig(generator=resolve_generator(node), iters=int(node.SYN_ITERS), lr=float(node.SYN_LR),
                           size=int(node.SYN_SIZE), batch=int(node.SYN_BATCH), precision=node.SYN_PRECISION,
                           keep=node.SYN_KEEP, init_weight=float(node.SYN_INIT_WEIGHT),
                           fourier_decay=float(node.SYN_FOURIER_DECAY), vqgan_init=node.SYN_VQGAN_INIT, cutouts=cut)


def prompt_classnames(classnames: Sequence[str], overrides_file: str = "") -> List[str]:
    """The dataset's class names (label order) with optional prompt overrides ("<name> <prompt name>" lines)."""
    names = [str(c).replace("_", " ") for c in classnames]
    if not names or not all(n.strip() for n in names):
        raise ValueError(f"Data-free distillation needs a non-empty class name for every class, got {names}. "
                         "Use a dataset class with names (e.g. PACSNamed, VLCSNamed) or DATASET.NAME's *Named twin.")
    if overrides_file:
        if not osp.isfile(overrides_file):
            raise FileNotFoundError(f"TRAINER.DFKD.CLASSNAMES_FILE {overrides_file!r} does not exist.")
        with open(overrides_file) as f:
            mapping = dict(line.strip().split(" ", 1) for line in f if line.strip() and " " in line.strip())
        names = [mapping.get(n.replace(" ", "_"), mapping.get(n, n)) for n in names]
    return names


def load_teacher_clip(cfg) -> LoadedClip:
    node, clip_cfg = cfg_node(cfg, "TRAINER.DFKD"), cfg_node(cfg, "MODEL.CLIP")
    return load_clip(node.TEACHER, backend=node.TEACHER_BACKEND, pretrained=node.TEACHER_PRETRAINED,
                     download_root=clip_cfg.DOWNLOAD_ROOT, weights=clip_cfg.WEIGHTS)


def cache_root(node) -> str:
    return node.SYN_CACHE_DIR or os.environ.get("DFKD_SYN_CACHE", "") or DEFAULT_CACHE


def synthetic_set_key(cfg, mode: str, classnames: Sequence[str], div: DiversifyConfig, syn: SynthesisConfig
                      ) -> Dict[str, Any]:
    """Everything that changes the images (student settings and the distillation seed do not)."""
    node = cfg_node(cfg, "TRAINER.DFKD")
    key: Dict[str, Any] = {
        "mode": mode, "prompts": div.key(mode), "classnames": list(classnames),
        "teacher": {"name": node.TEACHER, "backend": node.TEACHER_BACKEND, "pretrained": node.TEACHER_PRETRAINED,
                    "weights": cfg_value(cfg, "MODEL.CLIP.WEIGHTS")},
        "synthesis": syn.key(), "per_class": int(node.SYN_PER_CLASS), "seed": synthesis_seed(cfg)}
    if syn.generator == "vqgan":
        key["vqgan"] = {"ckpt": osp.abspath(node.VQGAN_CKPT) if node.VQGAN_CKPT else "",
                        "config": node.VQGAN_CONFIG}
    return key


def synthesis_seed(cfg) -> int:
    seed = int(cfg_value(cfg, "TRAINER.DFKD.SYN_SEED"))
    return int(cfg.SEED) if seed < 0 else seed


class SyntheticSetBuilder:
    """One synthetic set's settings (mode, class names, prompt and synthesis configs, cache folder) plus the lazily
    loaded teacher CLIP and prompt encoder that both the prompt targets and the synthesiser need."""

    def __init__(self, cfg, mode: str, classnames: Sequence[str], domain_names: Sequence[str],
                 device: torch.device, loaded: Optional[LoadedClip] = None):
        self.cfg = cfg
        self.node = cfg_node(cfg, "TRAINER.DFKD")
        self.mode = mode
        self.classnames = list(classnames)
        self.device = device
        self.div, self.dropped = diversify_config(self.node, domain_names)
        self.syn = synthesis_config(self.node)
        self.key = synthetic_set_key(cfg, mode, classnames, self.div, self.syn)
        self.set_dir = osp.join(cache_root(self.node), f"{mode}_{key_digest(self.key)}")
        self.clip: Optional[LoadedClip] = loaded
        self._encoder: Optional[PromptEncoder] = None
        self._synthesizer: Optional[Synthesizer] = None

    def encoder(self) -> PromptEncoder:
        """The teacher's prompt encoder, loading the teacher CLIP on first use only."""
        if self._encoder is None:
            self.clip = self.clip or load_teacher_clip(self.cfg)
            self.clip.model.to(self.device).float()
            self._encoder = PromptEncoder(self.clip.model, self.clip.tokenize,
                                          truncate=cfg_value(self.cfg, "MODEL.CLIP.TRUNCATE_TEXT"))
        return self._encoder

    def make_targets(self) -> PromptTargets:
        node = self.node
        print(f"Building {self.mode} prompt targets for {len(self.classnames)} classes x {node.SYN_PER_CLASS} images")
        probe = None
        if self.mode == "contrastive" and self.div.con_joint:
            # probe image i (prompt i) is seeded apart from the set's images (indices 0..N-1)
            seeds = [image_seed(synthesis_seed(self.cfg), -1 - i) for i in range(self.div.n_prompts)]
            probe = ProbeImages(self.make_synthesizer(), seeds, self.div.con_joint_iters, self.syn.batch)
            print(f"CON_JOINT: {self.div.con_joint_rounds} rounds of {self.div.con_joint_iters} latent steps on "
                  f"{len(seeds)} probe images and {self.div.con_joint_steps} prompt steps")
        targets = build_prompt_targets(self.mode, self.encoder(), self.classnames, int(node.SYN_PER_CLASS), self.div,
                                       synthesis_seed(self.cfg), probe)
        stats = {k: targets.extra[k] for k in ("mean_pairwise_cos", "min_pairwise_dist", "guard_failed")
                 if k in targets.extra}
        if stats:
            print(f"Prompt targets: {stats}")
        return targets

    def make_synthesizer(self) -> Synthesizer:
        """The synthesiser (built once: CON_JOINT's probe images and the set share it)."""
        if self._synthesizer is None:
            self._synthesizer = self._build_synthesizer()
        return self._synthesizer

    def _build_synthesizer(self) -> Synthesizer:
        node, syn = self.node, self.syn
        enc = self.encoder()
        decoder = None
        if syn.generator == "vqgan":
            decoder = load_vqgan_decoder(node.VQGAN_CKPT, node.VQGAN_CONFIG or None, bool(node.VQGAN_TRUSTED))
            print(f"Loaded {describe_decoder(syn.size, decoder)} from {node.VQGAN_CKPT}")
        pre = self.clip.preprocess
        heads = enc.class_features(self.classnames, self.div.template, self.div.template_ensemble)
        return Synthesizer(enc.model, pre.size, pre.mean, pre.std, heads, syn, self.device, decoder,
                           float(node.TEACHER_SCALE))

    def build(self) -> str:
        """The set's folder, read from the cache or synthesised there (resuming a partial set)."""
        node, syn = self.node, self.syn
        if self.dropped and self.mode in ("mix", "contrastive"):
            print(f"Style dictionary: dropped {self.dropped} (they name a benchmark domain); kept "
                  f"{list(self.div.style_dict)}")
        print(f"Synthetic set: {self.set_dir} ({syn.generator}, {syn.iters} iterations, {syn.cutouts.n} cutouts, "
              f"{syn.size}px)")
        return synthesize_set(self.set_dir, self.key, self.classnames, int(node.SYN_PER_CLASS), self.make_targets,
                              self.make_synthesizer, int(node.SYN_BATCH), synthesis_seed(self.cfg),
                              progress=bool(node.SYN_PROGRESS))


def ensure_synthetic_set(cfg, mode: str, classnames: Sequence[str], domain_names: Sequence[str],
                         device: torch.device, loaded: Optional[LoadedClip] = None) -> str:
    """Path of the synthetic set for this config: SYN_DIR, a cached set, or a newly synthesised (resumed) one."""
    node = cfg_node(cfg, "TRAINER.DFKD")
    if node.SYN_DIR:
        read_synthetic_set(node.SYN_DIR, classnames)  # fail early and clearly
        return node.SYN_DIR
    return SyntheticSetBuilder(cfg, mode, classnames, domain_names, device, loaded).build()


__all__ = ["DEFAULT_CACHE", "SyntheticSetBuilder", "cache_root", "diversify_config", "ensure_synthetic_set",
           "load_teacher_clip", "prompt_classnames", "resolve_generator", "synthesis_config", "synthesis_seed",
           "synthetic_set_key"]
