"""The ltx_video engine: LTX-Video on the diffusers LTX pipelines (LTXPipeline, LTXImageToVideoPipeline)."""

from __future__ import annotations

from pathlib import Path

from codex_core import Job
from codex_core.parallel import parse
from codex_diffusers import ContextParallel, DiffusersEngine

from .context_parallel import TEXT_TOKENS, layout_problem as cp_layout_problem, prepare_split, split_tokens_problem
from .params import TASKS


class LTXVideo(DiffusersEngine):
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    lora_prefixes = ("transformer.", "diffusion_model.transformer_blocks")
    key = "ltx_video"
    family = "ltx-video"
    description = "LTX-Video (Lightricks): text- and image-to-video, one 2B transformer, 32x/8x VAE (diffusers format)"
    tasks = TASKS
    pipelines = {"txt2vid": "LTXPipeline", "img2vid": "LTXImageToVideoPipeline"}
    arguments = {"fps": "frame_rate", "decode_timestep": "decode_timestep", "decode_noise_scale": "decode_noise_scale"}
    denoisers = ("transformer",)
    # --parallel: diffusers' own cp plan, with the key mask processor prepare_view puts on the split transformer
    # (context_parallel.py says why diffusers' processor fails on the text mask under Ulysses)
    context_parallel = ContextParallel(denoisers=("transformer",), layouts=cp_layout_problem)
    sampler_family = "flow"
    # The pipelines pass their own sigma schedule and a resolution-dependent shift (mu) to the
    # scheduler: FlowMatchEuler (the checkpoint's) and flow UniPC take both; DPM++ 2M takes no
    # custom sigmas and fails inside diffusers (tests/test_ltx.py shows it). No flow_shift field:
    # the checkpoint's dynamic shifting decides the shift, as for FLUX.1-dev.
    samplers = ("Euler", "UniPC")
    default_repo = "Lightricks/LTX-Video"
    gpu_dtype = "bfloat16"
    tiny_version = "1"
    latent_format = "ltxv"

    def preview_latents(self, pipe, latents, job):
        """The LTX pipelines pack the latent video into a sequence ([B, F*h*w, C] with patch sizes 1): unpacked as
        the pipeline does before decoding, then the newest latent frame."""
        width, height = self.output_size(job)
        frames = (job.params.num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
        video = pipe._unpack_latents(latents, frames, height // pipe.vae_spatial_compression_ratio,
                                     width // pipe.vae_spatial_compression_ratio, pipe.transformer_spatial_patch_size,
                                     pipe.transformer_temporal_patch_size)
        return video[0, :, -1]

    def parallel_problems(self, task: str, params, context) -> list[str]:
        """The kit's checks, then whether diffusers' plan can cut this request's tokens into equal parts."""
        problems = super().parallel_problems(task, params, context)
        layout = parse(getattr(getattr(context, "runtime", None), "parallel", "off"))
        if layout is None:
            return problems
        # the latent video of the tiny and the real checkpoints alike: 32x in space, 8x in time, patch size 1
        size = self.output_size_of(params)  # img2vid: its target size (the init image's without width/height)
        if size is None:
            return problems
        width, height = size
        frames = (params.num_frames - 1) // 8 + 1
        problem = split_tokens_problem(frames, height // 32, width // 32, TEXT_TOKENS, layout.ulysses)
        if problem:
            problems.append(f"num_frames: --parallel {layout}: {problem}; choose num_frames, width and height whose "
                            f"latent frames x (height/32) x (width/32) is a multiple of {layout.ulysses}")
        return problems

    def prepare_view(self, pipe, job: Job) -> None:
        super().prepare_view(pipe, job)
        # split by --parallel: refuse what is not plain Ulysses, keep the text mask one head wide (no-op unsplit)
        prepare_split(pipe.transformer)

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
