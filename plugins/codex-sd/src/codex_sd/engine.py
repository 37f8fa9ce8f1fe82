"""Loading and running SD 1.5 / SDXL on the diffusers Stable Diffusion pipelines."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from codex_core.diffusers_support import PipelineFamily, call, load_pipeline
from codex_core.engine_api import Engine, Job
from codex_core.outputs import ImageOutput

from . import tiny

MODE_ADAPTER = "codex_mode_lora"


@contextmanager
def mode_lora(pipe, job: Job):
    """Apply the request's accelerator LoRA (``mode_lora``) for one call, then unload it.

    The UNet and text encoders are shared by every cached task pipeline, so the LoRA must not
    outlive the run: ``unload_lora_weights`` restores the original modules for the next request.
    """
    lora = getattr(job.params, "mode_lora", None)
    if lora is None or job.params.mode == "normal":
        yield
        return
    pipe.load_lora_weights(lora.path, adapter_name=MODE_ADAPTER)
    try:
        pipe.set_adapters([MODE_ADAPTER], adapter_weights=[lora.scale])
        job.notes["mode_lora"] = {"path": lora.path, "scale": lora.scale, "mode": job.params.mode,
                                  "unloaded_after_run": True}
        yield
    finally:
        pipe.unload_lora_weights()


class _StableDiffusionEngine(Engine):
    """SD-style engines differ only in their pipeline classes and tiny model."""

    pipelines: dict[str, type]
    load_overrides: dict = {}

    def load(self, source, runtime) -> PipelineFamily:
        base = load_pipeline(self.pipelines["txt2img"], source, runtime, **self.load_overrides)
        return PipelineFamily(base, runtime)

    def run(self, family: PipelineFamily, job: Job) -> ImageOutput:
        params, task = job.params, job.task
        pipe = family.scheduled(self.pipelines[task], job.scheduler)
        kwargs = dict(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            num_inference_steps=params.steps,
            guidance_scale=params.cfg,
            num_images_per_prompt=params.batch_size,
        )
        if task == "txt2img":
            kwargs.update(width=params.width, height=params.height)
        elif task == "img2img":
            image = job.input_image("init_image", params.target_size())
            kwargs.update(image=image, strength=params.strength)
        elif task == "inpaint":
            size = params.target_size()
            image = job.input_image("init_image", size)
            mask = job.input_image("mask_image", size, "L")
            kwargs.update(image=image, mask_image=mask, width=size[0], height=size[1], strength=params.strength)
        elif task == "upscale":
            # Hires fix: resize to the target size, then refine with img2img at `strength`.
            image = job.input_image("init_image", params.target_size())
            kwargs.update(image=image, strength=params.strength)
        else:  # the spec lists only the tasks above; reaching here is a bug, not a user error
            raise AssertionError(f"unexpected task {task}")
        with mode_lora(pipe, job):
            return ImageOutput(call(pipe, job, **kwargs).images)


class StableDiffusion15Engine(_StableDiffusionEngine):
    pipelines = {
        "txt2img": StableDiffusionPipeline,
        "img2img": StableDiffusionImg2ImgPipeline,
        "inpaint": StableDiffusionInpaintPipeline,
        "upscale": StableDiffusionImg2ImgPipeline,
    }
    # Like every local SD tool, no NSFW safety checker is loaded (it also costs ~1.2 GB).
    load_overrides = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    def build_tiny(self, dest: Path) -> None:
        tiny.build_sd15(dest)


class StableDiffusionXLEngine(_StableDiffusionEngine):
    pipelines = {
        "txt2img": StableDiffusionXLPipeline,
        "img2img": StableDiffusionXLImg2ImgPipeline,
        "inpaint": StableDiffusionXLInpaintPipeline,
        "upscale": StableDiffusionXLImg2ImgPipeline,
    }

    def build_tiny(self, dest: Path) -> None:
        tiny.build_sdxl(dest)
