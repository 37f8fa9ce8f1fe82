"""The chroma engine: Chroma1 (lodestones/Chroma1-HD and its kin in diffusers format) on the diffusers Chroma
pipelines (txt2img, img2img, inpaint).

One variant: Chroma1-HD, Chroma1-Base and the unlocked-vNN checkpoints share the architecture and the
presets (the model card's 40 steps at cfg 3.0).
"""

from __future__ import annotations

from pathlib import Path

from codex_core.parallel import parse
from codex_diffusers import ContextParallel, DiffusersEngine, read_config

from .context_parallel import layout_problem as cp_layout_problem, plan as cp_plan, prepare_split, token_problems
from .params import TASKS


class Chroma(DiffusersEngine):
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    # the approximator that replaces FLUX.1's modulation layers is Chroma's own; its name is the same in the
    # diffusers and the original/ComfyUI layouts
    component_markers = {"transformer": ("distilled_guidance_layer.",)}
    lora_prefixes = ("transformer.", "lora_transformer_", "diffusion_model.double_blocks", "diffusion_model.single_blocks",
                     "lora_unet_double_blocks", "lora_unet_single_blocks")  # diffusers/PEFT, original, kohya
    key = "chroma"
    family = "chroma"
    description = "Chroma1 (lodestones/Chroma1-HD; Chroma1-Base and unlocked-vNN in diffusers format)"
    tasks = TASKS
    pipelines = {"txt2img": "ChromaPipeline", "img2img": "ChromaImg2ImgPipeline", "inpaint": "ChromaInpaintPipeline"}
    arguments = {"max_sequence_length": "max_sequence_length"}
    denoisers = ("transformer",)
    sampler_family = "flow"
    # Euler (FlowMatchEulerDiscreteScheduler) is the checkpoints' own. UniPC runs txt2img: the pipeline hands
    # its sigma schedule to set_timesteps, which UniPC takes. img2img/inpaint are Euler-only: they call
    # scheduler.scale_noise, which only FlowMatchEulerDiscreteScheduler has. DPM++ 2M is left out: its
    # set_timesteps takes no sigmas, which every Chroma pipeline passes. tests/test_chroma.py checks these.
    samplers = ("Euler", "UniPC")
    task_samplers = {"img2img": ("Euler",), "inpaint": ("Euler",)}
    default_repo = "lodestones/Chroma1-HD"
    # the configs of lodestones/Chroma1-HD, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"hd": "reference_configs/hd"}
    gpu_dtype = "bfloat16"
    tiny_version = "1"
    latent_format = "flux"  # FLUX.1's VAE (16 channels, scaling 0.3611, shift 0.1159)
    # no IP-Adapter here: the optional image_encoder/feature_extractor are not loaded even where a repo has them
    load_options = {"image_encoder": None, "feature_extractor": None}
    # --parallel: diffusers' ChromaTransformer2DModel has no cp plan; ours (Flux's), with the mask hook
    # prepare_view adds (context_parallel.py says why the plan alone is not enough)
    context_parallel = ContextParallel(denoisers=("transformer",), plans={"transformer": cp_plan},
                                       layouts=cp_layout_problem)

    def preview_latents(self, pipe, latents, job):
        """Chroma packs 2x2 latent patches into a sequence as FLUX.1 does: unpacked as the pipeline does."""
        width, height = self.output_size(job)
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)[0]

    def prepare_view(self, pipe, job) -> None:
        # ChromaInpaintPipeline reads transformer.config.guidance_embeds (a FLUX.1 key) and fails with an
        # AttributeError when the config lacks it, which ChromaTransformer2DModel's own config does. Chroma
        # has no guidance embedding, so False is the truth; registering it once is idempotent.
        if "guidance_embeds" not in pipe.transformer.config:
            pipe.transformer.register_to_config(guidance_embeds=False)
        # split by --parallel: refuse non-Ulysses splits, order the text padding mask (no-op unsplit)
        prepare_split(pipe.transformer)

    def parallel_problems(self, task: str, params, context) -> list[str]:
        problems = super().parallel_problems(task, params, context)
        layout = parse(getattr(getattr(context, "runtime", None), "parallel", "off"))
        if layout is None or cp_layout_problem(layout):
            return problems
        return problems + token_problems(params, layout)

    def config_problem(self, folder: Path, index: dict) -> str | None:
        in_channels = read_config(folder, "transformer/config.json").get("in_channels")
        expected = 4 * read_config(folder, "vae/config.json").get("latent_channels", 16)  # 2x2-packed latents
        if in_channels != expected:
            return (f"its transformer takes {in_channels} input channels, ChromaPipeline gives {expected} "
                    "(a Chroma model with extra conditioning channels needs its own pipeline)")
        return None

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
