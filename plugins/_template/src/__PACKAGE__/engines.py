"""The __NAME__ engine. STARTING POINT: as generated it runs the template's example, PixArt-Sigma text-to-image
on diffusers' PixArtSigmaPipeline, until you change the lines marked STARTING POINT to your model family's
(`grep -rn "STARTING POINT"` lists them in every file of this package).

Everything else (loading, placement, the per-run scheduler, seeds, progress, timings, the mapping of
the canonical request fields to pipeline arguments, exports) comes from ``DiffusersEngine``.
"""

from __future__ import annotations

from pathlib import Path

from codex_core import Job
from codex_diffusers import DiffusersEngine

from .params import TASKS


class __CLASS__(DiffusersEngine):
    key = "__NAME__"
    family = "__NAME__"
    # STARTING POINT: the family, description, pipelines, denoisers, samplers, default_repo and extra_arguments
    description = "__NAME__ (STARTING POINT: the codex-diffusers template's PixArt-Sigma text-to-image)"
    tasks = TASKS
    pipelines = {"txt2img": "PixArtSigmaPipeline"}  # task -> diffusers pipeline class
    denoisers = ("transformer",)  # timed as the denoise stage
    sampler_family = "discrete"
    # The checkpoint's DPM-Solver and these run correctly with it; DDIM is left out: the checkpoint's
    # scheduler config has no clip_sample, so DDIM's default (True) clips the latents.
    samplers = ("DPM++ 2M", "Euler", "Euler a", "UniPC")
    default_repo = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    gpu_dtype = "float16"
    tiny_version = "1"

    def extra_arguments(self, job: Job, pipe) -> dict:
        # exactly width x height (no aspect-ratio bins), and the prompt as given (no caption cleaning)
        return {"use_resolution_binning": False, "clean_caption": False}

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
