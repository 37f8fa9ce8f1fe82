"""The wan_vace engine: Wan 2.1 VACE (all-in-one video creation and editing) on diffusers' WanVACEPipeline.

One checkpoint, one pipeline class, three tasks (``vace_params``): txt2vid, vid2vid (a video and an
optional mask video: inpaint, outpaint, restyle, control) and ref2vid (reference images). The VACE
transformer is a Wan 2.1 transformer plus "context" blocks that read the conditioning (the video's
latents, the mask, the reference images' latents) and add hints to every fifth block.

Samplers: the pipeline only calls ``scheduler.set_timesteps(steps)`` and ``scheduler.step``, so every
flow sampler of the kit runs on it (UniPC, Euler, DPM++ 2M); none is excluded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codex_core import Job
from codex_diffusers import ContextParallel

from .context_parallel import vace_plan
from .engines import _Wan
from .vace_params import VACE_TASKS


class WanVACE(_Wan):
    key = "wan_vace"
    # diffusers' WanVACETransformer3DModel has no _cp_plan: the plugin's (codex_wan.context_parallel), on both
    # experts of a Wan 2.2 VACE-Fun folder too (same class)
    # reference_images (ref2vid) are encoded into latent frames put before the video's, which the plan splits with
    # the rest: not the IP-Adapter images the kit refuses with --parallel
    context_parallel = ContextParallel(denoisers=("transformer", "transformer_2"),
                                       plans={"transformer": vace_plan, "transformer_2": vace_plan},
                                       split_fields=("reference_images",))
    family = "wan2.1"
    description = ("Wan 2.1 VACE 14B: text-to-video, video-to-video with a mask (inpaint/outpaint/restyle) and "
                   "reference-image-to-video (diffusers format)")
    tasks = VACE_TASKS
    pipelines = {task: "WanVACEPipeline" for task in VACE_TASKS}
    arguments = {"conditioning_scale": "conditioning_scale"}
    model_name = "Wan 2.1 VACE"
    # diffusers' docstring and its single-file loader (the default repo of a "wan-vace-14B" file) name it
    repo = "Wan-AI/Wan2.1-VACE-14B-diffusers"
    reference_configs = {"vace_14b": "reference_configs/vace_14b"}
    latent_format = "wan21"  # the Wan 2.1 VAE (16 latent channels)
    # only the VACE transformer has these: a plain Wan transformer file is not one (diffusers or Wan-AI layout)
    component_markers = {name: ("vace_blocks.0.", "vace_patch_embedding.") for name in ("transformer", "transformer_2")}

    def config_problem(self, folder: Path, index: dict) -> str | None:
        # the pipeline class (model_index.json) already says it is VACE; a Wan 2.2 VACE-Fun folder (two experts
        # and boundary_ratio) runs too: the pipeline switches experts itself, cfg guiding both
        return None

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        params = job.params
        size = (params.width, params.height)
        if job.task == "vid2vid":
            count = params.num_frames
            frames = job.input_video("init_video", size)
            if len(frames) > count:
                job.notes["init_video_frames"] = {"used": count, "of": len(frames)}
            arguments = {"video": frames[:count]}
            if params.mask_video is not None:
                arguments["mask"] = job.input_video("mask_video", size, "L")[:count]
            return arguments
        if job.task == "ref2vid":
            return {"reference_images": [job.input_image(f"reference_images.{index}", None, path=path)
                                         for index, path in enumerate(params.reference_images)]}
        return {}

    def build_tiny(self, dest: Path) -> None:
        from .vace_tiny import build_vace

        build_vace(dest)
