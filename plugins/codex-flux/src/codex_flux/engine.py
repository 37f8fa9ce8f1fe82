"""Loading and running FLUX.1 on the diffusers Flux pipelines (txt2img, img2img, inpaint)."""

from __future__ import annotations

from pathlib import Path

from diffusers import FluxImg2ImgPipeline, FluxInpaintPipeline, FluxPipeline

from codex_core.diffusers_support import PipelineFamily, call, load_pipeline
from codex_core.engine_api import Engine, Job
from codex_core.errors import UsageError
from codex_core.outputs import ImageOutput

from . import tiny


def _note_truncation(pipe, job: Job, field: str, text: str, limit: int) -> None:
    """diffusers truncates T5 input to max_sequence_length with only a log warning: record it."""
    tokens = len(pipe.tokenizer_2(text).input_ids)
    if tokens > limit:
        job.notes.setdefault("truncated", {})[field] = {"t5_tokens": tokens, "kept": limit}


class FluxEngine(Engine):
    pipelines = {"txt2img": FluxPipeline, "img2img": FluxImg2ImgPipeline, "inpaint": FluxInpaintPipeline}

    def build_tiny(self, dest: Path) -> None:
        tiny.build(dest, self.spec.tiny_variant)

    def load(self, source, runtime) -> PipelineFamily:
        base = load_pipeline(FluxPipeline, source, runtime)
        # FLUX.1 Fill/Depth/Canny transformers take extra conditioning channels: not for these pipelines.
        expected = 4 * base.vae.config.latent_channels  # 2x2-packed latents
        if base.transformer.config.in_channels != expected:
            raise UsageError(f"{source.label} is not a FLUX.1 dev/schnell base model: its transformer takes "
                             f"{base.transformer.config.in_channels} input channels, FluxPipeline gives {expected}",
                             hint="point --model at a FLUX.1 [dev] or [schnell] folder in diffusers format")
        return PipelineFamily(base, runtime)

    def run(self, family: PipelineFamily, job: Job) -> ImageOutput:
        params, task = job.params, job.task
        pipe = family.scheduled(self.pipelines[task], job.scheduler)
        true_cfg = params.true_cfg > 1.0
        kwargs = dict(
            prompt=params.prompt,
            # diffusers runs true CFG only when a negative prompt is passed: "" is the unconditional prompt
            negative_prompt=params.negative_prompt if true_cfg else None,
            true_cfg_scale=params.true_cfg,
            guidance_scale=params.cfg,  # embedded guidance; the schnell transformer has no input for it
            num_inference_steps=params.steps,
            num_images_per_prompt=params.batch_size,
            max_sequence_length=params.max_sequence_length,
        )
        _note_truncation(pipe, job, "prompt", params.prompt, params.max_sequence_length)
        if true_cfg:
            _note_truncation(pipe, job, "negative_prompt", params.negative_prompt, params.max_sequence_length)
        if task == "txt2img":
            kwargs.update(width=params.width, height=params.height)
        elif task in ("img2img", "inpaint"):
            # The Flux pipelines default to 1024x1024, not the init image's size: always pass the size.
            size = params.target_size()
            kwargs.update(image=job.input_image("init_image", size),
                          width=size[0], height=size[1], strength=params.strength)
            if task == "inpaint":
                kwargs["mask_image"] = job.input_image("mask_image", size, "L")
        else:  # the spec lists only the tasks above; reaching here is a bug, not a user error
            raise AssertionError(f"unexpected task {task}")
        return ImageOutput(call(pipe, job, denoiser="transformer", **kwargs).images)
