"""Loading and running Stable Video Diffusion on diffusers' StableVideoDiffusionPipeline."""

from __future__ import annotations

from pathlib import Path

from diffusers import StableVideoDiffusionPipeline

from codex_core.diffusers_support import PipelineFamily, call, load_pipeline
from codex_core.engine_api import Engine, Job
from codex_core.outputs import VideoOutput

from . import tiny


class StableVideoDiffusionEngine(Engine):
    def build_tiny(self, dest: Path) -> None:
        tiny.build(dest)

    def load(self, source, runtime) -> PipelineFamily:
        return PipelineFamily(load_pipeline(StableVideoDiffusionPipeline, source, runtime), runtime)

    def run(self, family: PipelineFamily, job: Job) -> VideoOutput:
        params = job.params
        pipe = family.scheduled(StableVideoDiffusionPipeline, job.scheduler)
        kwargs = dict(
            # The pipeline would resize for the VAE by itself (and CLIP-encode the unresized image):
            # resizing here gives both the same image, and records it.
            image=job.input_image("init_image", (params.width, params.height)),
            width=params.width,
            height=params.height,
            num_frames=params.num_frames,
            num_inference_steps=params.steps,
            min_guidance_scale=params.min_cfg,
            max_guidance_scale=params.max_cfg,
            fps=params.fps,  # the pipeline conditions on fps - 1, as SVD was trained
            motion_bucket_id=params.motion_bucket_id,
            noise_aug_strength=params.noise_aug_strength,
            decode_chunk_size=params.decode_chunk_size,
            num_videos_per_prompt=params.batch_size,
            output_type="pil",
        )
        # SVD's conditioning is the CLIP image embedding (no text): timed as the encode stage.
        frames = call(pipe, job, encoder="_encode_image", **kwargs).frames[0]
        return VideoOutput(frames=frames, fps=params.fps)
