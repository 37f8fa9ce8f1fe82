"""The ltx_video engine: LTX-Video on the diffusers LTX pipelines (LTXPipeline, LTXImageToVideoPipeline)."""

from __future__ import annotations

from pathlib import Path

from codex_diffusers import DiffusersEngine

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
    # No --parallel, though diffusers' LTXVideoTransformer3DModel has a _cp_plan: in diffusers 0.42 its Ulysses attention
    # fails on LTX's text attention mask (the mask keeps every head while each rank holds its share: "size of
    # tensor a (2) must match the size of tensor b (4)" with the tiny model on 2 CPU ranks)
    context_parallel = None
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

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
