"""The FLUX.2 engines on the diffusers FLUX.2 pipelines.

- ``flux2``: FLUX.2 [dev] (Flux2Pipeline: txt2img, and edit with up to 10 reference images), a
  guidance-distilled 32B transformer with a Mistral Small 3.1/3.2 text encoder.
- ``flux2_klein``: FLUX.2 [klein] 4B and 9B (Flux2KleinPipeline: txt2img, edit; Flux2KleinInpaintPipeline:
  inpaint) with a Qwen3 text encoder. The variant is read from the checkpoint before anything loads:
  the size from the transformer's text width (Qwen3-8B's 3 x 4096 = 12288 is the 9B; anything else reads as
  the 4B, whose presets are the same), step-distilled or Base from the pipeline's own ``is_distilled``.

Samplers: Euler (FlowMatchEulerDiscreteScheduler, the checkpoints' own) and the flow variants of UniPC and
DPM++ 2M run txt2img and edit: the pipelines pass their empirical ``mu`` to every scheduler, and give a
scheduler with ``use_flow_sigmas`` its own sigmas. Inpaint is Euler only: Flux2KleinInpaintPipeline calls
``scheduler.scale_noise``, which only FlowMatchEulerDiscreteScheduler has. tests/ check each of these.
"""

from __future__ import annotations

from pathlib import Path

from codex_diffusers import ContextParallel, DiffusersEngine, read_config

from .params import FLUX2_TASKS, KLEIN_TASKS

KLEIN_9B_TEXT_WIDTH = 3 * 4096  # the transformer reads 3 stacked hidden states of Qwen3-8B (4096 wide)
# Key fragments of a FLUX.2 transformer file: diffusers' layout and BFL's (ComfyUI's diffusion_models files)
# share the shared-modulation layers FLUX.1 does not have.
TRANSFORMER_MARKERS = ("double_stream_modulation_img.",)
# the guidance embedding only [dev] has: diffusers' and BFL's names
GUIDANCE_MARKERS = ("time_guidance_embed.guidance_embedder.", "guidance_in.")
LORA_PREFIXES = ("transformer.", "diffusion_model.double_blocks", "diffusion_model.single_blocks",
                 "lora_unet_double_blocks", "lora_unet_single_blocks")  # diffusers/PEFT, BFL, kohya


def _safetensors_keys(path: Path) -> set[str] | None:
    if path.suffix.lower() != ".safetensors":
        return None  # GGUF files: the shapes decide when it loads
    from codex_core import read_safetensors_header

    return {key.removeprefix("model.").removeprefix("diffusion_model.") for key in read_safetensors_header(path)}


class _Flux2Base(DiffusersEngine):
    denoisers = ("transformer",)
    # diffusers' Flux2Transformer2DModel (FLUX.2 and Klein) has a _cp_plan: --parallel splits its attention across ranks
    context_parallel = ContextParallel()
    sampler_family = "flow"
    samplers = ("Euler", "UniPC", "DPM++ 2M")
    arguments = {"max_sequence_length": "max_sequence_length"}
    replaceable_components = ("transformer",)
    component_markers = {"transformer": TRANSFORMER_MARKERS}
    lora_prefixes = LORA_PREFIXES
    gpu_dtype = "bfloat16"
    latent_format = None  # 32 latent channels: no latent-to-RGB table of the kit's fits FLUX.2's VAE
    guidance_embedding: bool = True  # [dev] has one, [klein] not

    def config_problem(self, folder: Path, index: dict) -> str | None:
        transformer = read_config(folder, "transformer/config.json")
        expected = 4 * read_config(folder, "vae/config.json").get("latent_channels", 32)  # 2x2 latent patches
        if transformer.get("in_channels") != expected:
            return (f"its transformer takes {transformer.get('in_channels')} input channels; the FLUX.2 pipelines give "
                    f"{expected}")
        if bool(transformer.get("guidance_embeds", True)) != self.guidance_embedding:
            other = "flux2_klein" if self.guidance_embedding else "flux2"
            return (f"its transformer {'has no' if self.guidance_embedding else 'has a'} guidance embedding: it is a "
                    f"{'FLUX.2 [klein]' if self.guidance_embedding else 'FLUX.2 [dev]'} model; run it with {other}")
        return None

    def component_problem(self, name, path, source):
        problem = super().component_problem(name, path, source)
        keys = _safetensors_keys(path) if problem is None else None
        if keys and any(key.startswith(GUIDANCE_MARKERS) for key in keys) != self.guidance_embedding:
            return ("its transformer " + ("has no guidance embedding (a FLUX.2 [klein] file: use flux2_klein)"
                                          if self.guidance_embedding else
                                          "has a guidance embedding (a FLUX.2 [dev] file: use flux2)"))
        return problem

    def note_truncation(self, job, pipe, arguments) -> None:
        """The text encoder reads the chat-templated prompt (with [dev]'s system message), cut at
        max_sequence_length: count that, not the bare prompt."""
        from .prompts import templated_length

        text, window = arguments.get("prompt"), arguments.get("max_sequence_length")
        if not isinstance(text, str) or not text or not window:
            return
        tokens = templated_length(pipe, text)
        if tokens > window:
            job.notes.setdefault("truncated", {}).setdefault("prompt", {})["tokenizer"] = {"tokens": tokens,
                                                                                          "kept": window}
            job.progress.message(f"warning: prompt has {tokens} tokens with its chat template; the text encoder "
                                 f"sees the first {window} (max_sequence_length)")


class Flux2(_Flux2Base):
    key = "flux2"
    family = "flux2"
    description = ("FLUX.2 [dev] (black-forest-labs/FLUX.2-dev) in diffusers format: text-to-image and editing with "
                   "up to 10 reference images")
    tasks = FLUX2_TASKS
    pipelines = {"txt2img": "Flux2Pipeline", "edit": "Flux2Pipeline"}
    default_repo = "black-forest-labs/FLUX.2-dev"
    # the configs of black-forest-labs/FLUX.2-dev, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"dev": "reference_configs/dev"}
    tiny_version = "1"

    def plan(self, task, request, context):
        """A real [dev] folder's tokenizer is a PixtralProcessor, which transformers builds only with torchvision:
        say so before anything loads (the load would fail with an import error)."""
        import importlib.util

        from codex_core import UsageError

        source = context.source()
        if source.kind != "tiny" and source.path.is_dir() and (read_config(source.path, "model_index.json").get(
                "tokenizer") or [None, None])[1] == "PixtralProcessor" and importlib.util.find_spec("torchvision") is None:
            raise UsageError(f"{source.label}: its tokenizer is a PixtralProcessor (FLUX.2 [dev]'s Mistral processor), "
                             "which transformers builds only with torchvision installed",
                             hint="pip install torchvision (the build that matches your torch), then run again")
        return super().plan(task, request, context)

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)


def klein_variant(index: dict, transformer: dict) -> str | None:
    """4b / 9b / base_4b / base_9b from model_index.json (``is_distilled``; diffusers' default False) and the
    transformer's config (its text width)."""
    if transformer.get("_class_name") != "Flux2Transformer2DModel":
        return None
    size = "9b" if transformer.get("joint_attention_dim") == KLEIN_9B_TEXT_WIDTH else "4b"
    return size if index.get("is_distilled", False) else f"base_{size}"


class Flux2Klein(_Flux2Base):
    key = "flux2_klein"
    family = "flux2"
    description = ("FLUX.2 [klein] 4B and 9B (black-forest-labs/FLUX.2-klein-4B, -9B, and the -base- models) in "
                   "diffusers format: text-to-image, editing with up to 4 reference images, inpainting; the size "
                   "and step-distilled vs Base are read from the checkpoint")
    tasks = KLEIN_TASKS
    pipelines = {"txt2img": "Flux2KleinPipeline", "edit": "Flux2KleinPipeline", "inpaint": "Flux2KleinInpaintPipeline"}
    task_samplers = {"inpaint": ("Euler",)}
    default_repo = "black-forest-labs/FLUX.2-klein-4B"
    variants = ("4b", "9b", "base_4b", "base_9b")
    tiny_variant = "4b"
    # the configs of black-forest-labs/FLUX.2-klein-4B and -9B, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"4b": "reference_configs/klein_4b", "9b": "reference_configs/klein_9b"}
    tiny_version = "1"
    guidance_embedding = False

    def detect_variant(self, folder: Path) -> str | None:
        return klein_variant(read_config(folder, "model_index.json"), read_config(folder, "transformer/config.json"))

    def check_request(self, task, params, variant) -> list[str]:
        """The step-distilled models ignore guidance (the pipeline only warns). First Block Cache fails on the FLUX.2
        transformer in diffusers 0.42 (its hook subtracts a block's list output from a tensor); tests pin it."""
        problems = super().check_request(task, params, variant)
        if getattr(params.cache, "type", None) == "first_block":
            problems.append("cache.type: 'first_block' fails on the FLUX.2 transformer (diffusers 0.42); allowed here: "
                            "taylorseer, magcache, pab")
        if variant in ("4b", "9b") and params.cfg > 1.0:
            problems.append(f"cfg: got {params.cfg!r}: the step-distilled FLUX.2 [klein] ignores guidance, so it would "
                            "have no effect; leave it out (the preset sets 1.0) or use a [klein] Base model")
        return problems

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build_klein

        build_klein(dest, distilled=True)
