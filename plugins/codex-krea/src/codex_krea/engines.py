"""The krea2 engine: Krea 2 Turbo and Raw on diffusers' Krea2Pipeline (txt2img).

The variant is read from the pipeline's own config before anything loads (``detect_variant``):
model_index.json's ``is_distilled`` is true for Turbo, the few-step (TDM) distillation, which the
pipeline then samples with a fixed timestep shift (mu 1.15); Raw, the undistilled base, shifts by the
image size. Their presets differ (presets/krea2/distilled/, .../base/).
"""

from __future__ import annotations

from pathlib import Path

from codex_core import Job
from codex_diffusers import DiffusersEngine, read_config

from .params import TASKS, TEMPLATE_SUFFIX_TOKENS


def is_distilled(folder: Path) -> bool | None:
    """Whether a Krea2Pipeline folder holds the distilled checkpoint; None for another pipeline.

    model_index.json's ``is_distilled`` is what Krea2Pipeline reads. Some conversions (the
    CalamitousFelicitousness Krea-2 repos' model cards say so) carry the flag in transformer/config.json
    instead, where diffusers 0.42 ignores it: then the transformer's is taken (``Krea2.check_model`` hands it
    to the pipeline), else the pipeline's default (False)."""
    index = read_config(folder, "model_index.json")
    if index.get("_class_name") != "Krea2Pipeline":
        return None
    if "is_distilled" in index:
        return bool(index["is_distilled"])
    return bool(read_config(folder, "transformer/config.json").get("is_distilled", False))


class Krea2(DiffusersEngine):
    key = "krea2"
    family = "krea2"
    description = ("Krea 2 Turbo (distilled, 8 steps) and Raw (base, CFG) in diffusers format "
                   "(CalamitousFelicitousness/Krea-2-Turbo-Diffusers); the variant is read from the checkpoint")
    tasks = TASKS
    pipelines = {"txt2img": "Krea2Pipeline"}
    arguments = {"max_sequence_length": "max_sequence_length"}
    denoisers = ("transformer",)
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    # a file's Krea 2 transformer tensors: diffusers layout (text_fusion.*) or Krea's original (txtfusion.*, also
    # ComfyUI's files under model.diffusion_model., which the kit strips), which diffusers' loader converts
    component_markers = {"transformer": ("text_fusion.", "txtfusion.")}
    sampler_family = "flow"
    # Krea2Pipeline always passes its own sigmas and mu to scheduler.set_timesteps. Euler
    # (FlowMatchEulerDiscreteScheduler) is the checkpoints' own; UniPC with flow sigmas takes both and, with the
    # checkpoint's dynamic shifting, shifts them by the same mu, so it runs the model's schedule. DPM++ 2M is
    # left out: DPMSolverMultistepScheduler takes no custom sigmas (diffusers raises). tests/test_krea.py checks both.
    samplers = ("Euler", "UniPC")
    # The only diffusers-layout repo found (a conversion of krea/Krea-2-Turbo, whose own files are in Krea's
    # original layout); the README says where this comes from.
    default_repo = "CalamitousFelicitousness/Krea-2-Turbo-Diffusers"
    variants = ("distilled", "base")
    reference_configs = {"distilled": "reference_configs/distilled"}  # codex_diffusers.reference_config_dir
    tiny_variant = "distilled"
    gpu_dtype = "bfloat16"
    tiny_version = "1"
    # The Qwen-Image VAE is Wan 2.1's latent space: the same 16 channels and per-channel statistics (its
    # config's latents_mean/latents_std equal Wan 2.1's), the ones the wan21 coefficients were fitted in.
    latent_format = "wan21"

    def preview_latents(self, pipe, latents, job):
        """Krea2Pipeline packs 2x2 latent patches into a sequence ([B, h/2 * w/2, 4C]): unpacked as it does,
        to [B, C, 1, h, w]."""
        width, height = self.output_size(job)
        return pipe._unpack_latents(latents, height, width)[0, :, 0]

    def detect_variant(self, folder: Path) -> str | None:
        distilled = is_distilled(folder)
        return None if distilled is None else ("distilled" if distilled else "base")

    def check_model(self, pipe, source) -> None:
        """A conversion that marks Turbo only in its transformer config would run with Raw's resolution-dependent
        shift instead of the fixed mu 1.15 Turbo was distilled with: the pipeline is told (its config, which every
        run's view copies)."""
        if source.kind != "file" and is_distilled(source.path) and not pipe.config.is_distilled:
            pipe.register_to_config(is_distilled=True)

    def note_truncation(self, job: Job, pipe, arguments: dict) -> None:
        """The prompt's window is max_sequence_length less the template's 5 assistant-suffix tokens."""
        window = {**arguments, "max_sequence_length": arguments["max_sequence_length"] - TEMPLATE_SUFFIX_TOKENS}
        super().note_truncation(job, pipe, window)

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest, self.tiny_variant)
