"""The qwen_image engine: Qwen-Image on the diffusers QwenImage pipelines (txt2img, img2img, inpaint).

One checkpoint (Qwen/Qwen-Image, or Qwen/Qwen-Image-2512 of the same architecture) serves the
three tasks; the tasks share its components (``from_pipe``). Every component runs in the runtime
dtype (bfloat16 on GPU, as the model card loads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codex_core import Job
from codex_diffusers import ContextParallel, ControlNets, DiffusersEngine, read_config

from .controls import QWEN_CONTROLNETS, controlnet_fit_problems, controls_task_problems
from .params import TASKS


class QwenImage(DiffusersEngine):
    # A transformer-only file in diffusers' key names (ComfyUI's Qwen-Image model uses the same) or a GGUF
    # (city96/Qwen-Image-gguf) with --component transformer=FILE --model BASE_FOLDER; diffusers' single-file
    # mapping for this class is the identity, so a model.diffusion_model.-prefixed file fails in the loader
    replaceable_components = ("transformer",)
    # keys only the Qwen-Image MMDiT has (Flux's blocks have no img_mod, and no txt_norm)
    component_markers = {"transformer": ("transformer_blocks.0.img_mod.", "txt_norm.")}
    # the LoRA layouts tests/test_component_files.py loads: diffusers/PEFT and ComfyUI's (diffusion_model.)
    lora_prefixes = ("transformer.", "diffusion_model.transformer_blocks")
    key = "qwen_image"
    family = "qwen-image"
    description = ("Qwen-Image 20B MMDiT (Qwen/Qwen-Image, Qwen-Image-2512) with the Qwen2.5-VL-7B text encoder, "
                   "diffusers format")
    tasks = TASKS
    pipelines = {"txt2img": "QwenImagePipeline", "img2img": "QwenImageImg2ImgPipeline",
                 "inpaint": "QwenImageInpaintPipeline"}
    # cfg is the real classifier-free guidance of these pipelines (true_cfg_scale); params.py says why
    arguments = {"cfg": "true_cfg_scale", "max_sequence_length": "max_sequence_length"}
    denoisers = ("transformer",)
    # diffusers' QwenImageTransformer2DModel has a _cp_plan: --parallel splits its attention across ranks
    context_parallel = ContextParallel()
    sampler_family = "flow"
    # Euler (FlowMatchEulerDiscreteScheduler) is the checkpoint's own. UniPC runs txt2img with the
    # same resolution-dependent shift (the pipeline passes sigmas and mu). img2img/inpaint are
    # Euler-only: QwenImageImg2ImgPipeline and QwenImageInpaintPipeline call scheduler.scale_noise,
    # which only FlowMatchEulerDiscreteScheduler has. DPM++ 2M is left out: its set_timesteps takes
    # no custom sigmas, which every QwenImage pipeline passes. tests/test_qwen.py checks each failure.
    samplers = ("Euler", "UniPC")
    task_samplers = {"img2img": ("Euler",), "inpaint": ("Euler",)}
    default_repo = "Qwen/Qwen-Image"
    # the configs of Qwen/Qwen-Image, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"qwen_image": "reference_configs/qwen_image"}
    gpu_dtype = "bfloat16"
    tiny_version = "2"
    controlnets: ControlNets = QWEN_CONTROLNETS  # controls.py says what each task's ControlNet pipeline takes

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        """The pipelines run classifier-free guidance only when a negative prompt is given: "" when the request
        has none and cfg is above 1 (a blank negative, as the model card's example); none at cfg 1."""
        params = job.params
        return {"negative_prompt": params.negative_prompt if params.cfg > 1.0 else None}

    def config_problem(self, folder: Path, index: dict) -> str | None:
        # A guidance-distilled transformer would need guidance_scale, which this engine never passes.
        if read_config(folder, "transformer/config.json").get("guidance_embeds"):
            return ("its transformer is guidance-distilled (guidance_embeds: true); qwen_image runs the Qwen-Image "
                    "checkpoints, whose guidance is classifier-free (cfg)")
        return None

    def check_request(self, task: str, params, variant: str | None) -> list[str]:
        return super().check_request(task, params, variant) + controls_task_problems(task, params)

    def prepare_view(self, pipe, job: Job) -> None:
        # whether each ControlNet fits the transformer is known only once the checkpoint is loaded: before the run
        controlnet_fit_problems(pipe, job)

    def run_context(self, pipe, job: Job):
        context = super().run_context(pipe, job)
        if job.task == "inpaint" and getattr(job.params, "controls", None):
            from contextlib import ExitStack

            from .controls import seeded_global_rng

            stack = ExitStack()
            stack.enter_context(seeded_global_rng(job.seed))
            stack.enter_context(context)
            return stack
        return context

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
