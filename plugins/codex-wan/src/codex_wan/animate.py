"""wan_animate: Wan 2.2 Animate-14B on diffusers' WanAnimatePipeline (task ``animate``).

A character image moved by a pose video and a face video (Wan-Animate's preprocessing outputs), in
``animate_mode`` "animate" (the character alone) or "replace" (the character put into a background
video where a mask video is white). One transformer (WanAnimateTransformer3DModel, with its motion and
face encoders), a CLIP ViT-H image encoder for the character, the Wan 2.1 VAE (float32 on a GPU, as
for the other Wan engines) and UMT5.

How the inputs reach the pipeline:
- the character image at its own size: the pipeline fits it into width x height itself, keeping
  its aspect ratio (black bars), and gives the CLIP encoder the image as it is;
- the pose video (and background/mask videos) at width x height, the face video at the motion
  encoder's square size (``motion_encoder_size`` of the transformer's config, 512 for the real model),
  each resized with Lanczos (as the pipeline would) and recorded in ``info.notes.resized``;
- the output has the pose video's frames (``num_frames`` is that count; the pipeline has no such
  argument) at the request's fps (default: the pose video's).

Samplers: the pipeline only calls ``scheduler.set_timesteps(steps)`` and ``scheduler.step`` (and
resets the scheduler per segment), so every flow sampler runs; the checkpoint's is UniPC (the Wan
authors' default solver, with DPM++ their other one); Euler is what diffusers' own tests run it with.
"""

from __future__ import annotations

from pathlib import Path

from codex_core import Job
from codex_diffusers import ContextParallel

from .animate_params import ANIMATE_TASKS
from .context_parallel import animate_layout_problem, animate_plan
from .engines import _Wan


class WanAnimate(_Wan):
    key = "wan_animate"
    # diffusers' WanAnimateTransformer3DModel has no _cp_plan: the plugin's (codex_wan.context_parallel: the face
    # adapters run on the whole sequence)
    context_parallel = ContextParallel(denoisers=("transformer",), plans={"transformer": animate_plan},
                                       layouts=animate_layout_problem)
    description = ("Wan 2.2 Animate-14B: a character image animated by a pose and a face video, alone or replacing "
                   "a person in a video (diffusers format)")
    tasks = ANIMATE_TASKS
    pipelines = {"animate": "WanAnimatePipeline"}
    denoisers = ("transformer",)
    samplers = ("UniPC", "DPM++ 2M", "Euler")  # all flow samplers: the pipeline needs only set_timesteps and step
    model_name = "Wan 2.2 Animate-14B"
    repo = "Wan-AI/Wan2.2-Animate-14B-Diffusers"
    reference_configs = {"animate_14b": "reference_configs/animate_14b"}
    latent_format = "wan21"  # the Wan 2.1 VAE (16 channels), as the A14B models
    arguments = {"animate_mode": "mode", "segment_frame_length": "segment_frame_length",
                 "prev_segment_conditioning_frames": "prev_segment_conditioning_frames",
                 "max_sequence_length": "max_sequence_length"}
    unpassed_fields = {"num_frames": "the pose video's frame count decides the output's"}
    replaceable_components = ("transformer",)
    # what only an Animate transformer has, in the diffusers layout and in the Wan-AI / ComfyUI one alike
    component_markers = {"transformer": ("pose_patch_embedding.", "motion_encoder.", "face_adapter.")}

    def config_problem(self, folder: Path, index: dict) -> str | None:
        # the kit refuses a folder of another pipeline class first; a WanAnimatePipeline folder is this model
        # (the other Wan engines' checks, transformer_2 and expand_timesteps, do not apply)
        return None

    def extra_arguments(self, job: Job, pipe) -> dict:
        params = job.params
        size = (params.width, params.height)
        face = pipe.transformer.config.motion_encoder_size
        arguments = {
            "image": job.input_image("character_image", None),
            "pose_video": job.input_video("pose_video", size),
            "face_video": job.input_video("face_video", (face, face)),
        }
        if params.animate_mode == "replace":
            arguments["background_video"] = job.input_video("background_video", size)
            arguments["mask_video"] = job.input_video("mask_video", size, "L")
        if arguments["image"].size != size:
            job.notes["character_image_fit"] = {"from": list(arguments["image"].size), "into": list(size),
                                                "rule": "the pipeline keeps its aspect ratio and pads with black"}
        return arguments

    def build_tiny(self, dest: Path) -> None:
        from .animate_tiny import build_animate_14b

        build_animate_14b(dest)
