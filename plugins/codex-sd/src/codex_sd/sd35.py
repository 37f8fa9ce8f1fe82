"""The sd35 engine: Stable Diffusion 3.5 (Large, Medium, Large Turbo) on diffusers' StableDiffusion3 pipelines.

The variant is read from the transformer's config before anything loads (``variant_from_config``):
Medium is an MMDiT-X, whose first blocks carry a second self-attention (``dual_attention_layers``
non-empty, 13 of its 24 blocks); Large has none. Large Turbo is Large distilled with ADD: its
published configs (transformer, scheduler, model_index) are the same as Large's, so no config tells
it apart. It is detected as ``large`` and runs with the Large presets unless the request gives the Turbo
model card's settings (``"steps": 4, "cfg": 0``; README). A ``turbo`` preset profile was left out: the
conformance check validates every preset over the cases, and Turbo's cfg 0 rightly refuses a negative prompt.

ControlNets (``controls``): SD3ControlNetModel (InstantX's SD3 ControlNets, Stability's SD 3.5 Large ones, which
share the transformer's position embedding) with StableDiffusion3ControlNetPipeline (txt2img), and inpainting
ControlNets (one extra conditioning channel: the mask) with StableDiffusion3ControlNetInpaintingPipeline;
SD3MultiControlNetModel stacks several. diffusers has no SD3 ControlNet img2img pipeline.

It shares the package with sd15/sdxl but not their CLIP/UNet machinery (A1111 prompt weighting
through compel, embeddings, speed modes): the SD3 pipelines encode with three text encoders that
compel does not drive.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from codex_core import Job, UsageError
from codex_diffusers import ControlNets, DiffusersEngine, controlnet_path, read_config

from .sd35_params import TASKS

# Joint transformer blocks per variant (transformer/config.json num_layers of the published checkpoints)
LAYERS = {"large": 38, "medium": 24}
SKIP_LAYER_ARGUMENTS = ("skip_guidance_layers", "skip_layer_guidance_scale", "skip_layer_guidance_start",
                        "skip_layer_guidance_stop")
# what each control pipeline gives a ControlNet besides the control image's latents: the inpainting one the mask
CONDITIONING_CHANNELS = {"txt2img": 0, "inpaint": 1}


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
    controlnets = ControlNets(
        model_classes=("SD3ControlNetModel",), multi_class="SD3MultiControlNetModel",
        pipelines={"txt2img": "StableDiffusion3ControlNetPipeline", "inpaint": "StableDiffusion3ControlNetInpaintingPipeline"})

    def detect_variant(self, folder: Path) -> str | None:
        return variant_from_config(read_config(folder, "transformer/config.json"))

    def check_request(self, task, params, variant) -> list[str]:
        problems = super().check_request(task, params, variant)
        layers = getattr(params, "skip_guidance_layers", None)
        if layers and variant in LAYERS and max(layers) >= LAYERS[variant]:
            problems.append(f"skip_guidance_layers: got {layers}: SD 3.5 {variant.title()} has {LAYERS[variant]} "
                            f"transformer blocks (allowed: 0 to {LAYERS[variant] - 1})")
        controls = getattr(params, "controls", None) or []
        if controls and layers:
            problems.append("skip_guidance_layers: diffusers' StableDiffusion3ControlNetPipeline has no skip-layer "
                            "guidance; leave it out with controls")
        for index, spec in enumerate(controls):
            problems += self._control_task_problems(task, index, spec, params)
        problems += _stacking_problems(controls)
        return problems

    def _control_task_problems(self, task: str, index: int, spec, params) -> list[str]:
        """An inpainting ControlNet (the mask as an extra channel) only for inpaint, and only it; its control image
        is the image to repaint, so the init image."""
        try:
            folder = controlnet_path(spec.model, f"controls.{index}.model")
        except UsageError:
            return []  # reported by the kit's checks
        config = read_config(folder, "config.json")
        if config.get("_class_name") not in self.controlnets.model_classes:
            return []  # another family's: the kit says so
        channels = config.get("extra_conditioning_channels", 0)
        problems = []
        if channels != CONDITIONING_CHANNELS[task]:
            problems.append(
                f"controls.{index}.model: {folder.name} " + (
                    "is an inpainting ControlNet (a mask channel): use it with the inpaint task" if channels == 1 else
                    f"takes {channels} extra conditioning channels" if task == "txt2img" else
                    "is not an inpainting ControlNet: StableDiffusion3ControlNetInpaintingPipeline gives a ControlNet "
                    "the masked image and the mask (extra_conditioning_channels 1); SD 3.5 inpaint takes no other"))
        if task == "inpaint" and not _same_file(spec.image, params.init_image):
            problems.append(f"controls.{index}.image: an SD3 inpainting ControlNet repaints its control image under "
                            "mask_image: give the init_image's file")
        return problems

    def controlnet_fit(self, config: dict, folder: Path) -> str | None:
        """An SD3ControlNetModel reads the transformer's latents and pooled text and adds its block outputs to the
        transformer's: those widths must be its (and its text width, where it embeds the text itself)."""
        transformer = read_config(folder, "transformer/config.json")
        width = lambda c: c.get("num_attention_heads", 18) * c.get("attention_head_dim", 64)  # noqa: E731
        pairs = [("in_channels", config.get("in_channels", 16), transformer.get("in_channels", 16)),
                 ("pooled_projection_dim", config.get("pooled_projection_dim", 2048),
                  transformer.get("pooled_projection_dim", 2048)),
                 ("num_attention_heads x attention_head_dim", width(config), width(transformer))]
        if config.get("joint_attention_dim", 4096) is not None:  # None: SD 3.5's own, which take no text states
            pairs.append(("joint_attention_dim", config.get("joint_attention_dim", 4096),
                          transformer.get("joint_attention_dim", 4096)))
        for name, ours, theirs in pairs:
            if ours != theirs:
                return (f"its {name} is {ours}, this SD 3.5 model's transformer has {theirs}: it is a ControlNet for "
                        "another model")
        return None

    def run_context(self, pipe, job: Job):
        """diffusers' SD3 ControlNet pipelines VAE-encode the control image with ``latent_dist.sample()`` and no
        generator, so from the global random state: seeded with the run's seed (and restored after), so that a
        run repeats and equals diffusers' call after ``torch.manual_seed(seed)``."""
        context = super().run_context(pipe, job)
        return _seeded(context, job.seed) if getattr(job.params, "controls", None) else context

    def prepare_view(self, pipe, job: Job) -> None:
        """SD 3.5 Large's ControlNets share the transformer's position embedding (``use_pos_embed`` false):
        diffusers gives it to them when a pipeline is built, which the control view's ControlNets were not
        part of; it is given once, as diffusers would."""
        controlnet = getattr(pipe, "controlnet", None)
        for net in getattr(controlnet, "nets", [controlnet] if controlnet is not None else []):
            if net.config.get("use_pos_embed", True) is False and net.pos_embed is None:
                net.pos_embed = net._get_pos_embed_from_transformer(pipe.transformer).to(net.device, net.dtype)

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
        if getattr(params, "controls", None):
            # the ControlNet pipelines take no skip-layer guidance (refused with controls before loading); None:
            # left out
            extra.update(dict.fromkeys(SKIP_LAYER_ARGUMENTS))
            if job.task == "inpaint":
                # the inpainting ControlNet pipeline masks the control image (the init image) itself and denoises
                # from noise: no image, mask_image or strength arguments
                extra.update(image=None, mask_image=None, strength=None,
                             control_mask=job.input_image("mask_image", self.output_size(job), "L"))
                job.notes["controls_inpaint"] = ("StableDiffusion3ControlNetInpaintingPipeline: the control image "
                                                 "masked by mask_image, denoised from noise (strength is not used)")
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


def _same_file(first: str, second: str) -> bool:
    a, b = Path(first), Path(second)
    return a.resolve() == b.resolve() or a.read_bytes() == b.read_bytes()


@contextmanager
def _seeded(inner, seed: int):
    import torch

    with inner, torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _stacking_problems(controls) -> list[str]:
    """diffusers' SD3 ControlNet pipelines treat every stacked ControlNet as the first one is (text states or not,
    zero or real pooled projection): stacked ones must agree."""
    kinds = []
    for index, spec in enumerate(controls):
        try:
            config = read_config(controlnet_path(spec.model, f"controls.{index}.model"), "config.json")
        except UsageError:
            return []
        kinds.append((config.get("joint_attention_dim", 4096) is None,
                      config.get("force_zeros_for_pooled_projection", True)))
    other = next((index for index, kind in enumerate(kinds) if kind != kinds[0]), None)
    if other is None:
        return []
    return [f"controls.{other}.model: diffusers' SD3 ControlNet pipelines give every stacked ControlNet what the first "
            "takes (text states, pooled projection); this one is of another kind (SD 3.5's own vs InstantX's): "
            "stack ControlNets of one kind"]
