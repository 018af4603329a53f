"""Image parameterisations optimised by text-driven synthesis: ``pixel``, ``fourier`` and ``vqgan``.

Each holds independent latents for a batch of images (Adam is element-wise, so batching changes nothing per image)
and returns images in [0, 1]. Every latent is initialised from its own seed, so an image does not depend on which
batch it was synthesised in (resumed runs reproduce it).

``vqgan`` is the VQGAN-CLIP recipe (reconstruction of the paper's secondary-sourced generator): a taming-transformers
VQGAN decoder, written here so that no taming / pytorch-lightning import is needed, loading only ``decoder.*``,
``post_quant_conv.*`` and ``quantize.embedding.weight`` from a taming-format checkpoint. The module names follow
taming's, so the checkpoint's keys load unchanged. ``fourier`` follows lucid's decorrelated FFT parameterisation
("Feature Visualization", distill.pub 2017). No Dassl import.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

GENERATORS = ("pixel", "fourier", "vqgan")

#: Decoder settings of taming's ``vqgan_imagenet_f16_16384`` (the VQGAN-CLIP default checkpoint).
VQGAN_F16_16384: Dict[str, Any] = {
    "embed_dim": 256, "n_embed": 16384,
    "ddconfig": {"double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                 "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0},
}
#: lucid's square root of the ImageNet colour correlation (columns = decorrelated channels).
_COLOR_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = _COLOR_SVD_SQRT / np.max(np.linalg.norm(_COLOR_SVD_SQRT, axis=0))


class VQGANCheckpointError(RuntimeError):
    """The VQGAN checkpoint is missing, unreadable, or does not match the decoder configuration."""


def image_seed(base_seed: int, index: int) -> int:
    """Seed of image ``index``: fixed by the set's seed and the image's position only."""
    return (int(base_seed) * 1_000_003 + int(index)) % (2 ** 63 - 1)


def _per_image_normal(seeds: Sequence[int], shape: Tuple[int, ...], std: float) -> torch.Tensor:
    """(B, *shape) with row b drawn from N(0, std^2) by its own CPU generator (device-independent)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) * std for s in seeds])


class ImageParam(nn.Module):
    """Base class: latents of B images -> images (B, 3, S, S) in [0, 1]."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def latent(self) -> torch.Tensor:
        """The optimised tensor (for the optional L2 "init weight" term)."""
        raise NotImplementedError

    def post_step(self) -> None:
        """Called after every optimiser step (VQGAN clamps z into the codebook box)."""


class PixelParam(ImageParam):
    """One logit per pixel, image = sigmoid(logits); init N(0, 0.01^2)."""

    def __init__(self, seeds: Sequence[int], size: int, std: float = 0.01):
        super().__init__(size)
        self.logits = nn.Parameter(_per_image_normal(seeds, (3, size, size), std))

    def latent(self) -> torch.Tensor:
        return self.logits

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of every 2-D real-FFT coefficient (h, w // 2 + 1 [+1 for odd w])."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
    return np.sqrt(fx * fx + fy * fy)


class FourierParam(ImageParam):
    """lucid's parameterisation: a 1/f-scaled spectrum in a decorrelated colour space, then sigmoid.

    A zero spectrum gives a uniform grey (0.5) image.
    """

    def __init__(self, seeds: Sequence[int], size: int, std: float = 0.01, decay: float = 1.0):
        super().__init__(size)
        freqs = rfft2d_freqs(size, size)
        scale = 1.0 / np.maximum(freqs, 1.0 / size) ** decay * np.sqrt(size * size)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("color", torch.as_tensor(COLOR_CORRELATION), persistent=False)
        self.spectrum = nn.Parameter(_per_image_normal(seeds, (2, 3) + freqs.shape, std))  # (B, re/im, 3, h, wf)

    def latent(self) -> torch.Tensor:
        return self.spectrum

    def forward(self) -> torch.Tensor:
        spec = torch.complex(self.spectrum[:, 0], self.spectrum[:, 1]) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size))[..., : self.size, : self.size] / 4.0
        img = torch.einsum("bchw,dc->bdhw", img, self.color)
        return torch.sigmoid(img)


# ------------------------------------------------------------------------------------------ the VQGAN decoder
def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice with a 1x1 shortcut when the width changes (taming's names)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (taming's names)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, c, h * w).transpose(1, 2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """taming's VQGAN decoder: conv_in, mid (res, attn, res), up levels (res blocks [+attn], upsample), conv_out.

    Attention placement follows the configured ``resolution`` (as in taming), not the runtime latent size.
    """

    def __init__(self, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], resolution: int, z_channels: int, **_: Any):
        super().__init__()
        levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        ups = []
        for level in reversed(range(levels)):
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class _STQuantize(torch.autograd.Function):
    """Nearest codebook vector forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None])
        q = codebook[dist.argmin(1)]
        return q.reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _ClampWithGrad(torch.autograd.Function):
    """Clamp to [lo, hi]; pass the gradient only where it would move the value back into (or within) the range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def straight_through_quantize(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return _STQuantize.apply(z, codebook)


def clamp_with_grad(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return _ClampWithGrad.apply(x, lo, hi)


class _Quantize(nn.Module):
    """Holds the codebook under taming's name ``quantize.embedding``."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)


class VQGANDecoder(nn.Module):
    """Codebook + ``post_quant_conv`` + decoder: latent grid z (B, embed_dim, h, w) -> image in [0, 1]."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        dd = dict(config["ddconfig"])
        self.config = {"embed_dim": int(config["embed_dim"]), "n_embed": int(config["n_embed"]), "ddconfig": dd}
        self.downsample = 2 ** (len(dd["ch_mult"]) - 1)
        self.quantize = _Quantize(self.config["n_embed"], self.config["embed_dim"])
        self.post_quant_conv = nn.Conv2d(self.config["embed_dim"], dd["z_channels"], 1)
        self.decoder = Decoder(**dd)

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantize.embedding.weight

    def codebook_box(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (min, max) of the codebook, shaped (1, C, 1, 1) for clamping z."""
        cb = self.codebook.detach()
        return cb.min(0).values.view(1, -1, 1, 1), cb.max(0).values.view(1, -1, 1, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise (in fp32 even under autocast: nearest-code search must be exact), decode, map to [0, 1]."""
        with torch.autocast(z.device.type, enabled=False):
            zq = straight_through_quantize(z.float(), self.codebook.float())
        x = self.decoder(self.post_quant_conv(zq))
        return clamp_with_grad(x.float().add(1).div(2), 0.0, 1.0)


def read_vqgan_config(config: str | Mapping[str, Any] | None) -> Dict[str, Any]:
    """Decoder settings from a taming yaml (``model.params``), a dict of the same shape, or the f16-16384 default."""
    if not config:
        return dict(VQGAN_F16_16384)
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise VQGANCheckpointError(f"VQGAN config {config!r} does not exist (TRAINER.DFKD.VQGAN_CONFIG).")
        import yaml

        with open(config) as f:
            config = yaml.safe_load(f)
    params = config.get("model", {}).get("params", config) if isinstance(config, Mapping) else None
    if not isinstance(params, Mapping) or "ddconfig" not in params or "embed_dim" not in params \
            or "n_embed" not in params:
        raise VQGANCheckpointError("The VQGAN config needs model.params.{embed_dim, n_embed, ddconfig} (taming's "
                                   "yaml format).")
    return {"embed_dim": params["embed_dim"], "n_embed": params["n_embed"], "ddconfig": dict(params["ddconfig"])}


def read_vqgan_state_dict(path: str, trusted: bool = False) -> Dict[str, torch.Tensor]:
    """The decoder's tensors (``decoder.*``, ``post_quant_conv.*``, ``quantize.embedding.weight``) of a checkpoint.

    Tries ``weights_only=True`` first; a Lightning pickle that needs arbitrary objects is only unpickled when the
    user marked the file as trusted (TRAINER.DFKD.VQGAN_TRUSTED), because unpickling runs code.
    """
    if not path:
        raise VQGANCheckpointError("SYN_GENERATOR vqgan needs a checkpoint: set TRAINER.DFKD.VQGAN_CKPT to a "
                                   "taming-transformers VQGAN .ckpt (e.g. vqgan_imagenet_f16_16384/last.ckpt).")
    if not os.path.isfile(path):
        raise VQGANCheckpointError(f"VQGAN checkpoint {path!r} does not exist (TRAINER.DFKD.VQGAN_CKPT).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        if not trusted:
            raise VQGANCheckpointError(
                f"{path} holds Python objects that weights_only loading refuses (a Lightning checkpoint). Loading it "
                f"runs code from the file: only if you trust it, set TRAINER.DFKD.VQGAN_TRUSTED True. ({exc})"
            ) from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as err:
            raise VQGANCheckpointError(f"Unpickling {path} needs module {err.name!r}; install it or re-save the "
                                       "checkpoint's state_dict alone with torch.save.") from err
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise VQGANCheckpointError(f"{path} is not a VQGAN checkpoint (no state_dict mapping).")
    keep = {k: v for k, v in state.items()
            if k.startswith(("decoder.", "post_quant_conv.")) or k == "quantize.embedding.weight"}
    if "quantize.embedding.weight" not in keep or not any(k.startswith("decoder.") for k in keep):
        raise VQGANCheckpointError(f"{path} has no taming VQGAN decoder (expected keys decoder.*, post_quant_conv.*, "
                                   f"quantize.embedding.weight; found e.g. {sorted(state)[:6]}).")
    return keep


def load_vqgan_decoder(path: str, config: str | Mapping[str, Any] | None = None, trusted: bool = False
                       ) -> VQGANDecoder:
    """Build the decoder for ``config`` and load a checkpoint into it; any missing/mis-shaped tensor is an error."""
    model = VQGANDecoder(read_vqgan_config(config))
    state = read_vqgan_state_dict(path, trusted)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and
           state[k].shape != v.shape]
    extra = [k for k in state if k not in own]
    if missing or bad or extra:
        raise VQGANCheckpointError(
            f"VQGAN checkpoint {path} does not match the decoder config (TRAINER.DFKD.VQGAN_CONFIG): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, wrong shape (name, ckpt, model) {bad[:5]}, "
            f"unexpected {extra[:5]}. Point VQGAN_CONFIG at the checkpoint's own taming yaml.")
    model.load_state_dict(state)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class VQGANParam(ImageParam):
    """A continuous latent grid per image; quantised straight-through, decoded, clamped into the codebook box."""

    def __init__(self, decoder: VQGANDecoder, seeds: Sequence[int], size: int, init: str = "uniform"):
        super().__init__(size)
        if size % decoder.downsample:
            raise ValueError(f"SYN_SIZE {size} is not a multiple of the VQGAN downsampling factor "
                             f"{decoder.downsample}.")
        self.decoder = decoder
        grid = size // decoder.downsample
        dim = decoder.config["embed_dim"]
        cb = decoder.codebook.detach().float().cpu()
        zs = []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            if init == "uniform":  # VQGAN-CLIP overwrites its random-code init with U[0, 2)
                zs.append(torch.rand(dim, grid, grid, generator=g) * 2)
            elif init == "codebook":
                idx = torch.randint(cb.shape[0], (grid * grid,), generator=g)
                zs.append(cb[idx].t().reshape(dim, grid, grid))
            else:
                raise ValueError(f"Unknown SYN_VQGAN_INIT {init!r}; use uniform or codebook.")
        self.z = nn.Parameter(torch.stack(zs))
        lo, hi = decoder.codebook_box()
        self.register_buffer("z_min", lo.float().cpu(), persistent=False)
        self.register_buffer("z_max", hi.float().cpu(), persistent=False)

    def latent(self) -> torch.Tensor:
        return self.z

    def forward(self) -> torch.Tensor:
        return self.decoder.decode(self.z)

    @torch.no_grad()
    def post_step(self) -> None:
        self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))


def build_image_param(kind: str, seeds: Sequence[int], size: int, decoder: Optional[VQGANDecoder] = None,
                      fourier_decay: float = 1.0, vqgan_init: str = "uniform") -> ImageParam:
    """The parameterisation ``kind`` for images with the given per-image seeds."""
    if kind == "pixel":
        return PixelParam(seeds, size)
    if kind == "fourier":
        return FourierParam(seeds, size, decay=fourier_decay)
    if kind == "vqgan":
        if decoder is None:
            raise VQGANCheckpointError("SYN_GENERATOR vqgan needs a loaded decoder (TRAINER.DFKD.VQGAN_CKPT).")
        return VQGANParam(decoder, seeds, size, vqgan_init)
    raise ValueError(f"Unknown SYN_GENERATOR {kind!r}; use one of {GENERATORS}.")


def describe_decoder(size: int, decoder: VQGANDecoder) -> str:
    """A one-line description for logs (latent grid and downsampling)."""
    grid = size // decoder.downsample
    return f"VQGAN f={decoder.downsample}, z {decoder.config['embed_dim']}x{grid}x{grid}, " \
           f"codebook {decoder.config['n_embed']}x{decoder.config['embed_dim']}"


__all__ = ["GENERATORS", "VQGAN_F16_16384", "VQGANCheckpointError", "ImageParam", "PixelParam", "FourierParam",
           "VQGANParam", "VQGANDecoder", "Decoder", "load_vqgan_decoder", "read_vqgan_config",
           "read_vqgan_state_dict", "straight_through_quantize", "clamp_with_grad", "build_image_param",
           "image_seed", "rfft2d_freqs", "describe_decoder"]
