"""The svd engine: Stable Video Diffusion image-to-video (SVD and SVD-XT) on StableVideoDiffusionPipeline."""

from __future__ import annotations

from pathlib import Path

from codex_diffusers import DiffusersEngine, read_config

from .params import TASKS

# The UNet config's num_frames tells the checkpoints apart: 14 for stable-video-diffusion-img2vid,
# 25 for img2vid-xt (and img2vid-xt-1-1). Their presets differ in the frame count.
VARIANT_BY_FRAMES = {14: "svd", 25: "svd_xt"}

# The SVD UNet is conditioned on the continuous noise level (c_noise = 0.25 ln sigma, sigma from 700
# down to 0.002) and predicts v. Of the discrete table only EulerDiscreteScheduler with the
# checkpoint's timestep_type="continuous" feeds it that; the others pass timesteps 0..999 (or fail)
# and diffusers runs them without a word. tests/test_svd_samplers.py checks this on the real
# scheduler classes with an exact denoiser. Schedule types: the checkpoint's own (Karras sigmas);
# "Simple", "Uniform" and "DDIM" (timestep spacing only) would change nothing under Karras,
# "Exponential"/"Beta" clash with its use_karras_sigmas.
SAMPLERS = ("Euler",)
SCHEDULE_TYPES = ("Automatic", "Karras")


class StableVideoDiffusion(DiffusersEngine):
    key = "svd"
    family = "stable-video-diffusion"
    description = ("Stable Video Diffusion image-to-video in diffusers format: img2vid-xt (25 frames, default) or "
                   "the 14-frame stabilityai/stable-video-diffusion-img2vid; no text prompt")
    tasks = TASKS
    pipelines = {"img2vid": "StableVideoDiffusionPipeline"}
    # The pipeline conditions on fps - 1, as SVD was trained; guidance ramps from min_cfg to max_cfg.
    arguments = {"min_cfg": "min_guidance_scale", "max_cfg": "max_guidance_scale", "fps": "fps",
                 "motion_bucket_id": "motion_bucket_id", "noise_aug_strength": "noise_aug_strength",
                 "decode_chunk_size": "decode_chunk_size"}
    # SVD's conditioning is the CLIP image embedding (no text): timed as the encode stage.
    encoder = "_encode_image"
    sampler_family = "discrete"
    samplers = SAMPLERS
    schedule_types = SCHEDULE_TYPES
    variants = ("svd", "svd_xt")
    tiny_variant = "svd"
    default_repo = "stabilityai/stable-video-diffusion-img2vid-xt"
    gpu_dtype = "float16"
    tiny_version = "1"
    latent_format = "sd15"  # SVD's VAE encodes like Stable Diffusion's kl-f8 (ComfyUI previews it so too)

    def preview_latents(self, pipe, latents, job):
        """SVD's latents are [B, F, C, h, w]: the newest frame of the first video."""
        return latents[0, -1] if latents.ndim == 5 else None

    def detect_variant(self, folder: Path) -> str | None:
        """Read ``unet/config.json`` (no torch): 14 frames -> "svd", 25 -> "svd_xt", else None."""
        return VARIANT_BY_FRAMES.get(read_config(folder, "unet/config.json").get("num_frames"))

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
