"""The sd35 engine: Stable Diffusion 3.5 (Large, Medium, Large Turbo) on diffusers' StableDiffusion3 pipelines.

The variant is read from the transformer's config before anything loads (``variant_from_config``):
Medium is an MMDiT-X, whose first blocks carry a second self-attention (``dual_attention_layers``
non-empty, 13 of its 24 blocks); Large has none. Large Turbo is Large distilled with ADD: its
published configs (transformer, scheduler, model_index) are the same as Large's, so no config tells
it apart. It is detected as ``large`` and runs with the Large presets unless the request gives the Turbo
model card's settings (``"steps": 4, "cfg": 0``; README). A ``turbo`` preset profile was left out: the
conformance check validates every preset over the cases, and Turbo's cfg 0 rightly refuses a negative prompt.

It shares the package with sd15/sdxl but not their CLIP/UNet machinery (A1111 prompt weighting
through compel, embeddings, speed modes): the SD3 pipelines encode with three text encoders that
compel does not drive.
"""

from __future__ import annotations

from pathlib import Path

from codex_core import Job, UsageError
from codex_diffusers import DiffusersEngine, read_config

from .sd35_params import TASKS

# Joint transformer blocks per variant (transformer/config.json num_layers of the published checkpoints)
LAYERS = {"large": 38, "medium": 24}


def variant_from_config(config: dict) -> str | None:
    """medium: an MMDiT-X with dual-attention blocks; large: QK-normalised blocks without them. SD3 Medium
    (3.0, no QK norm) and other classes: None."""
    if config.get("_class_name") != "SD3Transformer2DModel":
        return None
    if config.get("dual_attention_layers"):
        return "medium"
    if config.get("qk_norm") == "rms_norm":
        return "large"
    return None


class StableDiffusion35(DiffusersEngine):
    key = "sd35"
    family = "stable-diffusion-3"
    description = ("Stable Diffusion 3.5 Large (stabilityai/stable-diffusion-3.5-large), Medium and Large Turbo "
                   "in diffusers format; Large vs Medium is read from the checkpoint")
    tasks = TASKS
    pipelines = {"txt2img": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline",
                 "inpaint": "StableDiffusion3InpaintPipeline"}
    arguments = {"max_sequence_length": "max_sequence_length", "skip_guidance_layers": "skip_guidance_layers",
                 "skip_layer_guidance_scale": "skip_layer_guidance_scale",
                 "skip_layer_guidance_start": "skip_layer_guidance_start",
                 "skip_layer_guidance_stop": "skip_layer_guidance_stop"}
    denoisers = ("transformer",)
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    # a file's SD3 transformer tensors: diffusers layout (the patch embedding) or SAI's original (MMDiT joint
    # blocks, also the ComfyUI layout under model.diffusion_model., which the kit strips before comparing)
    component_markers = {"transformer": ("pos_embed.proj.", "joint_blocks.")}
    sampler_family = "flow"
    # Euler (FlowMatchEulerDiscreteScheduler, shift 3.0) is the checkpoints' own. txt2img also runs UniPC and
    # DPM++ 2M with flow sigmas at the checkpoint's shift (no dynamic shifting: no mu is passed). img2img and
    # inpaint are Euler-only: StableDiffusion3Img2ImgPipeline and ...InpaintPipeline noise the init latents
    # with scheduler.scale_noise, which only FlowMatchEulerDiscreteScheduler has (tests/test_sd35.py checks it).
    samplers = ("Euler", "UniPC", "DPM++ 2M")
    task_samplers = {"img2img": ("Euler",), "inpaint": ("Euler",)}
    default_repo = "stabilityai/stable-diffusion-3.5-large"
    variants = ("large", "medium")
    # the configs of stabilityai/stable-diffusion-3.5-large and -medium, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"large": "reference_configs/sd35_large", "medium": "reference_configs/sd35_medium"}
    tiny_variant = "large"
    gpu_dtype = "bfloat16"
    tiny_version = "1"
    latent_format = "sd3"  # the SD3 VAE (16 channels, scaling 1.5305, shift 0.0609), unchanged in 3.5
    # Like every local tool, no IP-Adapter image encoder (SigLIP) is loaded: the base repos ship none.
    load_options = {"image_encoder": None, "feature_extractor": None}

    def detect_variant(self, folder: Path) -> str | None:
        return variant_from_config(read_config(folder, "transformer/config.json"))

    def check_request(self, task, params, variant) -> list[str]:
        problems = super().check_request(task, params, variant)
        layers = getattr(params, "skip_guidance_layers", None)
        if layers and variant in LAYERS and max(layers) >= LAYERS[variant]:
            problems.append(f"skip_guidance_layers: got {layers}: SD 3.5 {variant.title()} has {LAYERS[variant]} "
                            f"transformer blocks (allowed: 0 to {LAYERS[variant] - 1})")
        return problems

    def extra_arguments(self, job: Job, pipe) -> dict:
        params = job.params
        layers = getattr(params, "skip_guidance_layers", None)
        blocks = pipe.transformer.config.num_layers
        if layers and max(layers) >= blocks:  # the transformer would skip nothing, silently
            raise UsageError(f"skip_guidance_layers: got {layers}: this checkpoint's transformer has {blocks} blocks "
                             f"(allowed: 0 to {blocks - 1})")
        clip_layers = min(pipe.text_encoder.config.num_hidden_layers, pipe.text_encoder_2.config.num_hidden_layers)
        if params.clip_skip > clip_layers:  # diffusers would index past the first hidden state (IndexError)
            raise UsageError(f"clip_skip: got {params.clip_skip}: this checkpoint's CLIP text encoders have "
                             f"{clip_layers} layers (allowed: 1 to {clip_layers})")
        # A1111's count (1 = the layer the model was trained on) -> diffusers' (None = that layer, k = k before it)
        extra = {"clip_skip": params.clip_skip - 1 if params.clip_skip > 1 else None}
        if job.task != "txt2img" and params.batch_size > 1:
            # diffusers 0.42's SD3 img2img/inpaint encode image i of a batch with generator i (one per seed) but,
            # unlike SD 1.x's pipelines, never repeat one init image for the batch: image[1:2] is empty and the
            # call fails. One copy per image is what they take; image i then equals a one-image run of seed + i.
            extra["image"] = [job.input_image("init_image", self.output_size(job))] * params.batch_size
        return extra

    def config_problem(self, folder: Path, index: dict) -> str | None:
        config = read_config(folder, "transformer/config.json")
        if config.get("_class_name") == "SD3Transformer2DModel" and variant_from_config(config) is None:
            return ("it is a Stable Diffusion 3 (3.0) checkpoint: its transformer has no QK normalisation; sd35 runs "
                    "SD 3.5 Large, Large Turbo and Medium")
        return None

    def build_tiny(self, dest: Path) -> None:
        from .sd35_tiny import build

        build(dest, self.tiny_variant)
