"""The flux engine: FLUX.1 [dev] and [schnell] on the diffusers Flux pipelines (txt2img, img2img, inpaint), and
FLUX.1 Kontext [dev] (edit), which is its own checkpoint of the same architecture.

The variant is read from the checkpoint before anything loads (``detect_variant``): dev has a
guidance embedding, schnell does not, and their presets differ (presets/flux/dev/, .../schnell/).

ControlNets (``controls``): diffusers' FluxControlNet pipelines with FluxControlNetModel, several stacked
through FluxMultiControlNetModel; a union model (InstantX/FLUX.1-dev-Controlnet-Union, Shakker-Labs'
Union-Pro) is a FluxControlNetModel with ``num_mode`` in its config, its ``type`` the model card's modes.
FLUX.1 Redux (``reference_images``, txt2img): redux.py.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

from codex_core import Job, ModelSource
from codex_diffusers import ContextParallel, ControlNets, DiffusersEngine, read_config

from .params import TASKS

SCHNELL_MAX_SEQUENCE_LENGTH = 256  # schnell was distilled with 256 T5 tokens (BFL's reference code)
# the control modes of InstantX/FLUX.1-dev-Controlnet-Union and Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro (model cards)
UNION_MODES = {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5, "lq": 6}
# the model of the run in progress: the kit calls extra_arguments without it, Redux keeps its modules with it
_RUN_MODEL: ContextVar[Any] = ContextVar("flux_run_model")


def variant_from_config(config: dict) -> str | None:
    """dev carries a guidance embedding (``guidance_embeds``: true); schnell does not."""
    if config.get("_class_name") != "FluxTransformer2DModel":
        return None
    # a config without the key loads with diffusers' default (False): no guidance embedding
    return "dev" if config.get("guidance_embeds", False) else "schnell"


class Flux(DiffusersEngine):
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    lora_prefixes = ("transformer.", "lora_transformer_", "diffusion_model.double_blocks", "diffusion_model.single_blocks",
                     "lora_unet_double_blocks", "lora_unet_single_blocks")  # diffusers/PEFT, BFL, kohya
    key = "flux"
    family = "flux"
    description = ("FLUX.1 [dev] (black-forest-labs/FLUX.1-dev) and [schnell] (black-forest-labs/FLUX.1-schnell) "
                   "in diffusers format; the variant is read from the checkpoint")
    tasks = TASKS
    pipelines = {"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline",
                 "edit": "FluxKontextPipeline"}
    # edit is FLUX.1 Kontext [dev]: looked up under CODEX_MODEL_FLUX_EDIT / <models dir>/flux_edit/
    task_default_repos = {"edit": "black-forest-labs/FLUX.1-Kontext-dev"}
    arguments = {"max_sequence_length": "max_sequence_length"}
    denoisers = ("transformer",)
    # diffusers' FluxTransformer2DModel has a _cp_plan: --parallel splits its attention across ranks
    context_parallel = ContextParallel()
    mag_ratios = "diffusers.hooks.mag_cache:FLUX_MAG_RATIOS"  # MagCache's ratios for FLUX.1 (dev, 28 steps)
    sampler_family = "flow"
    # Euler (FlowMatchEulerDiscreteScheduler) is the checkpoints' own. UniPC runs txt2img with the
    # same dynamic shift; img2img/inpaint are Euler-only: diffusers' FluxImg2ImgPipeline and
    # FluxInpaintPipeline call scheduler.scale_noise, which only FlowMatchEulerDiscreteScheduler has.
    # DPM++ 2M is left out: diffusers fails with it on schnell (set_timesteps asserts dynamic shifting)
    # and on img2img/inpaint (it takes no custom sigmas). tests/test_flux.py checks each of these
    # failures. No flow_shift field: the checkpoint's scheduler config decides the shift.
    # FluxKontextPipeline sets its timesteps as FluxPipeline does (sigmas and a dynamic shift): the same two.
    samplers = ("Euler", "UniPC")
    task_samplers = {"img2img": ("Euler",), "inpaint": ("Euler",)}
    default_repo = "black-forest-labs/FLUX.1-dev"
    variants = ("dev", "schnell")
    # the configs of black-forest-labs/FLUX.1-dev, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"dev": "reference_configs/dev"}
    tiny_variant = "dev"
    gpu_dtype = "bfloat16"
    tiny_version = "1"
    latent_format = "flux"
    controlnets = ControlNets(
        model_classes=("FluxControlNetModel",), multi_class="FluxMultiControlNetModel", union_config_key="num_mode",
        pipelines={"txt2img": "FluxControlNetPipeline", "img2img": "FluxControlNetImg2ImgPipeline",
                   "inpaint": "FluxControlNetInpaintPipeline"},
        union_modes=UNION_MODES)
    # diffusers' Flux ControlNet img2img/inpaint pipelines take no true_cfg_scale (txt2img's does)
    controlnet_without_true_cfg = ("img2img", "inpaint")

    def preview_latents(self, pipe, latents, job):
        """Flux packs 2x2 latent patches into a sequence ([B, h/2 * w/2, 4C]): unpacked as the pipeline does."""
        width, height = self.output_size(job)
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)[0]

    def task_folders(self, source: ModelSource) -> dict[str, Path]:
        """A FLUX.1 folder serves txt2img/img2img/inpaint, a Kontext folder edit (the tiny model, or a folder with
        its transformer from a file: all four, the architecture being the same)."""
        # with --component transformer=FILE the file decides: a Kontext transformer file (ComfyUI's
        # flux1-kontext-dev.safetensors) runs edit on a FLUX.1 folder's other components, which are Kontext's too
        if source.kind in ("tiny", "file") or dict(source.components).get("transformer"):
            return super().task_folders(source)
        if self.checkpoint_task(source.path, source.label) == "edit":
            return {"edit": source.path}
        return {task: source.path for task in self.pipelines if task != "edit"}

    def run(self, model, job: Job):
        token = _RUN_MODEL.set(model)
        try:
            return super().run(model, job)
        finally:
            _RUN_MODEL.reset(token)

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        """Kontext: the output size from the image's (not diffusers' square default) and the area it scales to.
        Redux: the prompt's and reference images' embeddings instead of the prompt. A ControlNet img2img/inpaint
        pipeline: no true-CFG arguments (the checks refused true_cfg above 1 there)."""
        if getattr(job.params, "reference_images", None):
            from .redux import redux_arguments

            return redux_arguments(_RUN_MODEL.get(), pipe, job)
        if getattr(job.params, "controls", None) and job.task in self.controlnet_without_true_cfg:
            return {"true_cfg_scale": None, "negative_prompt": None}
        if job.task != "edit":
            return {}
        params = job.params
        start = (params.width, params.height) if params.width is not None else params.first_image_size()
        return {"width": start[0], "height": start[1], "max_area": params.area(), "_auto_resize": params.auto_resize}

    def detect_variant(self, folder: Path) -> str | None:
        return variant_from_config(read_config(folder, "transformer/config.json"))

    def check_request(self, task, params, variant) -> list[str]:
        """schnell has no guidance embedding and was distilled with at most 256 T5 tokens."""
        problems = super().check_request(task, params, variant)
        if variant == "schnell":
            if params.cfg != 0.0:
                problems.append(f"cfg: got {params.cfg!r}: FLUX.1-schnell has no guidance embedding, so cfg would "
                                "be ignored; leave it out (the schnell preset sets 0.0). For classifier-free guidance "
                                "against a negative prompt use true_cfg")
            if params.max_sequence_length > SCHNELL_MAX_SEQUENCE_LENGTH:
                problems.append(f"max_sequence_length: got {params.max_sequence_length}: FLUX.1-schnell takes at "
                                f"most {SCHNELL_MAX_SEQUENCE_LENGTH} T5 tokens (allowed: an integer >= 1 and "
                                f"<= {SCHNELL_MAX_SEQUENCE_LENGTH})")
        if getattr(params, "controls", None) and task in self.controlnet_without_true_cfg and params.true_cfg > 1.0:
            problems.append(f"true_cfg: got {params.true_cfg!r}: diffusers' {self.controlnets.pipelines[task]} has no "
                            "true classifier-free guidance; leave true_cfg out (1.0) with controls, or use txt2img")
        return problems

    def check_with_checkpoint(self, task, params, context) -> list[str]:
        problems = super().check_with_checkpoint(task, params, context)
        if getattr(params, "reference_images", None):
            from .redux import redux_problems

            folder = context.source().path
            config = read_config(folder, "transformer/config.json") if folder.is_dir() else {}
            problems += redux_problems(params, config.get("joint_attention_dim"))
        return problems

    def controlnet_fit(self, config: dict, folder: Path) -> str | None:
        """A FluxControlNetModel adds its block outputs to the transformer's and reads the same packed latents and
        T5 tokens: its widths must be the transformer's."""
        transformer = read_config(folder, "transformer/config.json")
        width = lambda c: c.get("num_attention_heads", 24) * c.get("attention_head_dim", 128)  # noqa: E731
        for name, ours, theirs in (("joint_attention_dim", config.get("joint_attention_dim", 4096),
                                    transformer.get("joint_attention_dim", 4096)),
                                   ("in_channels", config.get("in_channels", 64), transformer.get("in_channels", 64)),
                                   ("num_attention_heads x attention_head_dim", width(config), width(transformer))):
            if ours != theirs:
                return (f"its {name} is {ours}, this flux model's transformer has {theirs}: it is a ControlNet for "
                        "another model")
        return None

    def config_problem(self, folder: Path, index: dict) -> str | None:
        # FLUX.1 Fill/Depth/Canny transformers take extra conditioning channels: not for these pipelines.
        in_channels = read_config(folder, "transformer/config.json").get("in_channels")
        expected = 4 * read_config(folder, "vae/config.json").get("latent_channels", 16)  # 2x2-packed latents
        if in_channels != expected:
            return (f"it is not a FLUX.1 dev/schnell base model: its transformer takes {in_channels} input channels, "
                    f"FluxPipeline gives {expected} (FLUX.1 Fill/Depth/Canny need their own pipelines)")
        return None

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest, self.tiny_variant)
