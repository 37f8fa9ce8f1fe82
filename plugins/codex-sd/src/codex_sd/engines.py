"""The sd15 and sdxl engines: Stable Diffusion 1.x/2.x and SDXL on the diffusers SD pipelines.

Both honour speed modes: a checkpoint supports a mode by itself when its configs say so (read
before anything loads, see ``checkpoint_modes``), or the request brings an accelerator LoRA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from codex_diffusers import ControlNets, DiffusersEngine, IPAdapters, SpeedModes, read_config

from .a1111 import A1111Prompts
from .params import TASKS

MODE_HINTS = {
    "lcm": "pass mode_lora with an LCM-LoRA .safetensors (e.g. latent-consistency/lcm-lora-sdv1-5 or "
           "lcm-lora-sdxl), or use an LCM checkpoint (its unet/config.json sets time_cond_proj_dim)",
    "turbo": "use an SD-Turbo / SDXL-Turbo checkpoint (its scheduler config has timestep_spacing "
             "\"trailing\"), or pass mode_lora with a Turbo LoRA .safetensors",
    "lightning": "pass mode_lora with an SDXL-Lightning LoRA .safetensors (e.g. sdxl_lightning_4step_lora), "
                 "or use an SDXL-Lightning checkpoint folder (scheduler timestep_spacing \"trailing\")",
}


class _StableDiffusion(A1111Prompts, SpeedModes, DiffusersEngine):
    tasks = TASKS
    sampler_family = "discrete"
    gpu_dtype = "float16"
    tiny_version = "3"  # 3: SDXL's tiny text_encoder_2 uses gelu, as OpenCLIP bigG does
    mode_hints = MODE_HINTS

    loads_single_files = True
    lora_prefixes = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "unet.", "text_encoder.", "text_encoder_2.")

    def single_file_variant(self, shapes: dict[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
        """A1111/Civitai single files: the family from the text conditioner's keys, inpainting from the
        UNet's input channels (``detect.sd_checkpoint``)."""
        from .detect import ENGINE_OF, sd_checkpoint

        variant, what = sd_checkpoint(shapes)
        if variant is not None and variant.removesuffix("_inpaint") == self.key:
            return variant, None
        family = variant.removesuffix("_inpaint") if variant else None
        where = f"; engine {ENGINE_OF[family]} runs it" if family in ENGINE_OF else ""
        return None, f"it is {what}{where}"

    def single_file_config(self, variant: str) -> Path:
        from .single_file import config_folder

        return config_folder(variant)

    def single_file_tasks(self, variant: str | None) -> tuple[str, ...]:
        # an inpainting UNet (9 input channels) runs only the inpainting pipeline
        return ("inpaint",) if variant and variant.endswith("_inpaint") else tuple(self.pipelines)

    def checkpoint_modes(self, folder: Path) -> set[str]:
        """The modes an SD checkpoint folder supports by itself, from its configs (no torch).

        - ``lcm``: a latent-consistency-distilled UNet embeds the guidance scale, so its
          ``unet/config.json`` sets ``time_cond_proj_dim`` (e.g. 256 in SimianLuo/LCM_Dreamshaper_v7
          and latent-consistency/lcm-sdxl); an ordinary UNet has it null. A folder whose scheduler is
          already ``LCMScheduler`` counts too.
        - ``turbo`` and ``lightning``: adversarially distilled few-step checkpoints (SD-Turbo,
          SDXL-Turbo, SDXL-Lightning) are sampled with trailing timesteps, and their diffusers folders
          ship a scheduler config with ``timestep_spacing: "trailing"``; base checkpoints ship
          "leading" (or none). The distillation leaves the UNet architecture unchanged, so the
          scheduler config is the only hint a folder carries; it cannot tell Turbo from Lightning,
          so it enables both.
        """
        unet = read_config(folder, "unet/config.json")
        scheduler = read_config(folder, "scheduler/scheduler_config.json")
        found = set()
        if unet.get("time_cond_proj_dim") is not None or scheduler.get("_class_name") == "LCMScheduler":
            found.add("lcm")
        if scheduler.get("timestep_spacing") == "trailing":
            found.update({"turbo", "lightning"})
        return found & set(self.modes)

    # ControlNets of this engine's UNet: SDXL's condition on the pooled text and size embeddings as its UNet
    # does (addition_embed_type "text_time", cross-attention 2048 wide); SD 1.x/2.x ones have neither (768/1024)
    controlnet_text_time: ClassVar[bool] = False

    def controlnet_problem(self, config: dict[str, Any]) -> str | None:
        return self._controlnet_family_problem(config.get("addition_embed_type") == "text_time",
                                               config.get("cross_attention_dim"))

    def controlnet_file_problem(self, shapes: dict[str, tuple[int, ...]]) -> str | None:
        from .controlnet_files import family, original_layout

        text_time, width = family(shapes)
        if text_time is None:
            return ("not a ControlNet file (no input_hint_block or controlnet_cond_embedding tensors; a union or "
                    "LoRA-style control file is not loaded from a single file)")
        problem = self._controlnet_family_problem(text_time, width)
        if problem is None and text_time and original_layout(shapes):
            # diffusers' converter maps no label_emb of a ControlNet: its added embedding would stay unloaded
            return ("an SDXL ControlNet in the original layout, which diffusers' single-file converter does not "
                    "load (its label_emb); use its diffusers-layout file or folder")
        return problem

    def controlnet_file_config(self, base, shapes: dict[str, tuple[int, ...]], field: str) -> dict[str, Any]:
        from .controlnet_files import controlnet_config

        return controlnet_config(dict(base.unet.config), shapes, field)

    def _controlnet_family_problem(self, text_time: bool, width: int | None) -> str | None:
        if text_time == self.controlnet_text_time:
            return None
        if text_time:
            return (f"it is an SDXL ControlNet (cross_attention_dim {width}, addition_embed_type \"text_time\"); "
                    "engine sdxl runs it")
        return (f"it is an SD 1.x/2.x ControlNet (cross_attention_dim {width}, no addition_embed_type); "
                "engine sd15 runs it")


# The union ControlNet's modes (xinsir/controlnet-union-sdxl-1.0, "ControlNet++": the control_mode index each
# control type trains as; its ProMax model adds tile and repaint, num_control_type 8 instead of 6)
SDXL_UNION_MODES = {"openpose": 0, "depth": 1, "hed": 2, "pidi": 2, "scribble": 2, "ted": 2, "softedge": 2,
                    "canny": 3, "lineart": 3, "anime_lineart": 3, "mlsd": 3, "normal": 4, "segment": 5, "tile": 6,
                    "repaint": 7}


class StableDiffusion15(_StableDiffusion):
    key = "sd15"
    family = "stable-diffusion"
    description = "Stable Diffusion 1.x / 2.x checkpoints in diffusers format"
    default_repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # the reference repo's configs, shipped for single-file checkpoints (codex_diffusers.reference_config_dir)
    reference_configs = {"sd15": "single_file_configs/sd15"}
    latent_format = "sd15"  # SD 1.x and 2.x share the kl-f8 VAE
    modes = ("lcm", "turbo")
    lora_context_dims = (768, 1024)  # SD 1.x CLIP ViT-L, SD 2.x OpenCLIP ViT-H
    mode_unsupported = {"lightning": "SDXL-Lightning exists only for SDXL (ByteDance distilled the SDXL base); "
                                     "use engine sdxl"}
    pipelines = {"txt2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
                 "inpaint": "StableDiffusionInpaintPipeline", "upscale": "StableDiffusionImg2ImgPipeline"}
    # Like every local SD tool, no NSFW safety checker is loaded (it also costs ~1.2 GB).
    load_options = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    controlnets = ControlNets(
        model_classes=("ControlNetModel",), multi_class="MultiControlNetModel", single_file_class="ControlNetModel",
        pipelines={"txt2img": "StableDiffusionControlNetPipeline", "img2img": "StableDiffusionControlNetImg2ImgPipeline",
                   "inpaint": "StableDiffusionControlNetInpaintPipeline"},
        image_argument={"txt2img": "image", "img2img": "control_image", "inpaint": "control_image"})
    ip_adapters = IPAdapters(context_dims=(768, 1024))  # h94/IP-Adapter's models/ (SD 1.5); SD 2.x's width

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build_sd15

        build_sd15(dest)


class StableDiffusionXL(_StableDiffusion):
    key = "sdxl"
    family = "stable-diffusion-xl"
    description = "SDXL base checkpoints in diffusers format"
    default_repo = "stabilityai/stable-diffusion-xl-base-1.0"
    reference_configs = {"sdxl": "single_file_configs/sdxl"}  # codex_diffusers.reference_config_dir
    latent_format = "sdxl"
    modes = ("lcm", "turbo", "lightning")
    clip_skip_max = 1  # SDXL conditions on the penultimate CLIP layer by design
    lora_context_dims = (2048,)  # CLIP ViT-L + OpenCLIP ViT-bigG
    ip_adapters = IPAdapters(context_dims=(2048,))  # h94/IP-Adapter's sdxl_models/
    pipelines = {"txt2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
                 "inpaint": "StableDiffusionXLInpaintPipeline", "upscale": "StableDiffusionXLImg2ImgPipeline"}
    controlnet_text_time = True
    controlnets = ControlNets(
        model_classes=("ControlNetModel",), multi_class="MultiControlNetModel", single_file_class="ControlNetModel",
        pipelines={"txt2img": "StableDiffusionXLControlNetPipeline",
                   "img2img": "StableDiffusionXLControlNetImg2ImgPipeline",
                   "inpaint": "StableDiffusionXLControlNetInpaintPipeline"},
        image_argument={"txt2img": "image", "img2img": "control_image", "inpaint": "control_image"},
        union_classes=("ControlNetUnionModel",), multi_union_class="MultiControlNetUnionModel",
        union_pipelines={"txt2img": "StableDiffusionXLControlNetUnionPipeline",
                         "img2img": "StableDiffusionXLControlNetUnionImg2ImgPipeline",
                         "inpaint": "StableDiffusionXLControlNetUnionInpaintPipeline"},
        union_image_argument="control_image", union_modes=SDXL_UNION_MODES, union_mode_count="num_control_type")

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build_sdxl

        build_sdxl(dest)
