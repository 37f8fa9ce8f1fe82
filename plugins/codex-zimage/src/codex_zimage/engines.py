"""The z_image engine: Z-Image-Turbo and Z-Image (base) on the diffusers Z-Image pipelines
(txt2img, img2img, inpaint).

The variant is read from the checkpoint before anything loads (``detect_variant``). The published
transformer, text encoder and VAE configs of Tongyi-MAI/Z-Image-Turbo and Tongyi-MAI/Z-Image are the
same (one architecture; Turbo is its few-step distillation); what differs is the scheduler config: a
static shift of 3.0 (Turbo) or 6.0 (base). So the scheduler's shift tells them apart, and their presets
differ (presets/z_image/turbo/, .../base/: 9 steps at cfg 0 against 50 steps at cfg 4).
"""

from __future__ import annotations

from pathlib import Path

from codex_core import Job
from codex_diffusers import ControlNets, DiffusersEngine, read_config

from .controls import ZIMAGE_CONTROLNETS, controlnet_fit_problems, controls_task_problems
from .params import TASKS

VARIANT_SHIFTS = {3.0: "turbo", 6.0: "base"}  # scheduler/scheduler_config.json "shift" of each published repo


def variant_from_configs(transformer: dict, scheduler: dict) -> str | None:
    """turbo (shift 3.0) or base (shift 6.0) for a Z-Image transformer; None for anything else."""
    if transformer.get("_class_name") != "ZImageTransformer2DModel":
        return None
    return VARIANT_SHIFTS.get(scheduler.get("shift"))


class ZImage(DiffusersEngine):
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    # the pad tokens are Z-Image's own and keep their names in the diffusers and the original/ComfyUI layouts
    component_markers = {"transformer": ("x_pad_token", "cap_pad_token")}
    key = "z_image"
    family = "z_image"
    description = ("Z-Image-Turbo (Tongyi-MAI/Z-Image-Turbo) and Z-Image (Tongyi-MAI/Z-Image) in diffusers format; "
                   "the variant is read from the checkpoint's scheduler config")
    tasks = TASKS
    pipelines = {"txt2img": "ZImagePipeline", "img2img": "ZImageImg2ImgPipeline", "inpaint": "ZImageInpaintPipeline"}
    arguments = {"max_sequence_length": "max_sequence_length", "cfg_normalization": "cfg_normalization",
                 "cfg_truncation": "cfg_truncation"}
    denoisers = ("transformer",)
    sampler_family = "flow"
    # Euler (FlowMatchEulerDiscreteScheduler), the checkpoints' own, is the only sampler the Z-Image pipelines
    # run: they hand set_timesteps their sigma schedule as a Python list, which UniPC's flow-sigma shift
    # cannot multiply (TypeError); DPM++ 2M's set_timesteps takes no sigmas at all; and img2img/inpaint call
    # scheduler.scale_noise, which only FlowMatchEulerDiscreteScheduler has. tests/test_zimage.py checks
    # each of these failures, so the list grows when diffusers changes.
    samplers = ("Euler",)
    default_repo = "Tongyi-MAI/Z-Image-Turbo"
    variants = ("turbo", "base")
    # the configs of Tongyi-MAI/Z-Image-Turbo, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"turbo": "reference_configs/turbo"}
    tiny_variant = "turbo"
    gpu_dtype = "bfloat16"
    tiny_version = "1"
    latent_format = "flux"  # FLUX.1's VAE (16 channels, scaling 0.3611, shift 0.1159); unpacked latents
    controlnets: ControlNets = ZIMAGE_CONTROLNETS  # controls.py says what each task's ControlNet pipeline takes

    def detect_variant(self, folder: Path) -> str | None:
        return variant_from_configs(read_config(folder, "transformer/config.json"),
                                    read_config(folder, "scheduler/scheduler_config.json"))

    def config_problem(self, folder: Path, index: dict) -> str | None:
        transformer = read_config(folder, "transformer/config.json")
        if transformer.get("siglip_feat_dim"):
            return "its transformer takes SigLIP image features (Z-Image Omni): the Z-Image pipelines give none"
        return None

    def check_request(self, task: str, params, variant: str | None) -> list[str]:
        return super().check_request(task, params, variant) + controls_task_problems(task, params)

    def prepare_view(self, pipe, job: Job) -> None:
        # whether the ControlNet fits the transformer is known only once the checkpoint is loaded: before the run
        controlnet_fit_problems(pipe, job)

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest, self.tiny_variant)
