"""Live previews of a run's latents: a linear latent-to-RGB projection (``latent_rgb``), as a small PNG.

``Previewer`` is built once per run, when the progress asks for previews (``Progress.preview_every``) and
the engine declares a ``latent_format`` whose channels match the checkpoint's VAE; otherwise there is none
and no preview is made (an engine without coefficients, or a test model whose VAE has other channels).
The engine turns the pipeline's latents into one image's ``[C, h, w]`` (``DiffusersEngine.preview_latents``:
unpacking packed latents, the newest frame of a video); this module maps them into the space the
coefficients were fitted in (``normalisation``), projects and encodes. The projection is a
``C x 3`` product per latent pixel, computed where the latents are (the GPU), and only the
``h x w x 3`` bytes come back: previews are latent-sized (1/8 of the output's sides for most VAEs),
at most ``MAX_SIDE`` pixels on their longest side.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import torch

from .latent_rgb import FORMATS, LatentRGB

MAX_SIDE = 256  # pixels on a preview's longest side


def _vector(value: Any, channels: int) -> torch.Tensor | None:
    """A per-channel statistic (a config list or a VAE buffer) as a float tensor, None when it has none."""
    if value is None:
        return None
    tensor = torch.as_tensor(value, dtype=torch.float32).detach().cpu().flatten()
    return tensor if tensor.numel() == channels else None


def _space(vae, keys: tuple[str, ...], channels: int, fmt: LatentRGB | None = None):
    """(mean, scale, std) of ``z = (raw - mean) * scale / std``: how a pipeline normalises latents with the keys of
    ``vae``'s config it applies, or (``fmt``) the space the coefficients were fitted in."""
    config = dict(vae.config) if vae is not None else {}

    def value(key):
        stated = getattr(fmt, key) if fmt is not None else None
        if fmt is None or stated == "vae":  # the checkpoint's own: a buffer on the VAE (LTX) or its config
            own = getattr(vae, "_buffers", {}).get(key)
            return own if own is not None else config.get(key)
        return stated

    zero, one = torch.zeros(channels), torch.ones(channels)
    mean = std = None
    if "latents_mean" in keys and "latents_std" in keys:
        mean, std = _vector(value("latents_mean"), channels), _vector(value("latents_std"), channels)
        if mean is None or std is None:  # a pipeline applies them only as a pair (SDXL: when the config has both)
            mean = std = None
    if mean is None and "shift_factor" in keys:
        mean = zero + float(value("shift_factor") or 0.0)
    scale = float(value("scaling_factor") or 1.0) if "scaling_factor" in keys else 1.0
    return (zero if mean is None else mean), scale, (one if std is None else std)


def normalisation(fmt: LatentRGB, vae) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) per channel with ``a * z + b`` = the pipeline's latent ``z`` in the coefficients' space: undo the
    checkpoint's normalisation (what the pipeline does before it decodes), apply the coefficients' own."""
    mean, scale, std = _space(vae, fmt.applies, fmt.channels)
    ref_mean, ref_scale, ref_std = _space(vae, fmt.applies, fmt.channels, fmt)
    a = std / scale * ref_scale / ref_std
    b = (mean - ref_mean) * ref_scale / ref_std
    return a, b


def project(latent: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``[C, h, w]`` latents -> ``[h, w, 3]`` RGB in about [-1, 1]: each pixel's channels times ``factors`` (C x 3)."""
    return torch.einsum("chw,cr->hwr", latent.float(), factors.to(latent.device)) + bias.to(latent.device)


def to_pixels(rgb: torch.Tensor):
    """[-1, 1] RGB -> 8-bit, on the CPU (a numpy array h x w x 3)."""
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).mul(255.0).to(torch.uint8).cpu().numpy()


def encode(pixels) -> tuple[bytes, int, int]:
    """A PNG of ``pixels``, at most ``MAX_SIDE`` on its longest side; (png, width, height)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # small images: speed over the last bytes
    return buffer.getvalue(), image.width, image.height


class Previewer:
    """The previews of one run: ``previewer(latents)`` -> (png, width, height), or None for latents it cannot show."""

    def __init__(self, fmt: LatentRGB, vae, to_chw: Callable[[torch.Tensor], torch.Tensor | None]):
        a, b = normalisation(fmt, vae)
        factors = torch.tensor(fmt.factors, dtype=torch.float32)
        # the normalisation folded into the product: (a z + b) F + bias = z (a F) + (b F + bias)
        self.factors = a[:, None] * factors
        self.bias = b @ factors + torch.tensor(fmt.bias, dtype=torch.float32)
        self.to_chw = to_chw

    def __call__(self, latents: torch.Tensor) -> tuple[bytes, int, int] | None:
        latent = self.to_chw(latents)
        if latent is None or latent.ndim != 3 or latent.shape[0] != self.factors.shape[0]:
            return None
        return encode(to_pixels(project(latent.detach(), self.factors, self.bias)))


def latent_channels(vae) -> int | None:
    config = dict(vae.config) if vae is not None else {}
    return config.get("latent_channels") or config.get("z_dim")


def previewer_for(engine, pipe, job) -> Previewer | None:
    """The run's previewer: None when previews are off, or the engine has no coefficients for this VAE."""
    fmt = FORMATS.get(engine.latent_format or "")
    vae = getattr(pipe, "vae", None)
    if not job.progress.preview_every or fmt is None or latent_channels(vae) != fmt.channels:
        return None
    return Previewer(fmt, vae, lambda latents: engine.preview_latents(pipe, latents, job))
