"""Registers the svd engine. Imports no torch: the engine module loads on first run."""

from __future__ import annotations

import json
from pathlib import Path

from codex_core import hookimpl
from codex_core.engines import EngineSpec
from codex_core.presets import locate

from .params import TASKS

# The UNet config's num_frames tells the checkpoints apart: 14 for stable-video-diffusion-img2vid,
# 25 for img2vid-xt (and img2vid-xt-1-1). Their presets differ in the frame count.
VARIANT_BY_FRAMES = {14: "svd", 25: "svd_xt"}

# The SVD UNet is conditioned on the continuous noise level (c_noise = 0.25 ln sigma, sigma from 700
# down to 0.002) and predicts v. Of the discrete table only EulerDiscreteScheduler with the
# checkpoint's timestep_type="continuous" feeds it that; the others pass timesteps 0..999 (or fail)
# and diffusers runs them without a word. tests/test_svd_samplers.py checks this on the real
# scheduler classes with an exact denoiser. Schedule types: the checkpoint's own (Karras sigmas);
# "Simple" would change nothing under Karras, "Exponential"/"Beta" clash with its use_karras_sigmas.
SAMPLERS = ("Euler",)
SCHEDULE_TYPES = ("Automatic", "Karras")


def detect_variant(folder: Path) -> str | None:
    """Read ``unet/config.json`` (no torch): 14 frames -> "svd", 25 -> "svd_xt", else None."""
    try:
        config = json.loads((Path(folder) / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return VARIANT_BY_FRAMES.get(config.get("num_frames")) if isinstance(config, dict) else None


SVD = EngineSpec(
    key="svd",
    family="stable-video-diffusion",
    tasks=TASKS,
    engine="codex_svd.engine:StableVideoDiffusionEngine",
    sampler_family="discrete",
    samplers=SAMPLERS,
    schedule_types=SCHEDULE_TYPES,
    variants=("svd", "svd_xt"),
    detect_variant=detect_variant,
    tiny_variant="svd",
    default_repo="stabilityai/stable-video-diffusion-img2vid-xt",
    gpu_dtype="float16",
    tiny_version="1",
    presets_dir=locate(__file__, "svd"),
    description="Stable Video Diffusion image-to-video in diffusers format: img2vid-xt (25 frames, default) or the "
                "14-frame stabilityai/stable-video-diffusion-img2vid; no text prompt",
)


@hookimpl
def codex_register_engines(register):
    register(SVD)
