"""The Wan 2.2 engines on the diffusers Wan pipelines (WanPipeline, WanImageToVideoPipeline).

- wan_ti2v_5b: text- and image-to-video with one 5B transformer and the Wan 2.2 VAE.
- wan_t2v_14b / wan_i2v_14b: two expert transformers (high noise ``transformer``, low noise
  ``transformer_2``) switched at ``boundary_ratio``; ``cfg`` guides the first, ``cfg_2`` the second.

On a GPU the transformers run in bf16 and the VAE in fp32, as the Wan authors and the diffusers
Wan docs advise for decoding quality. ``WAN_REPO_ID``, when set, replaces the default hub repo of
every Wan engine (e.g. a mirror or a fine-tune in the same layout); it is read when an engine is
created (once per process).
"""

from __future__ import annotations

import os
from pathlib import Path

from codex_core import Job, Runtime
from codex_diffusers import ContextParallel, DiffusersEngine

from .params import I2V_A14B_TASKS, T2V_A14B_TASKS, TI2V_5B_TASKS

REPO_ENV = "WAN_REPO_ID"
VAE_FP32_NOTE = ("the VAE runs in float32 while the transformers run in {dtype}, as the Wan authors and the "
                 "diffusers Wan docs advise for decoding quality")


class _Wan(DiffusersEngine):
    family = "wan2.2"
    sampler_family = "flow"
    denoisers = ("transformer", "transformer_2")
    # diffusers' WanTransformer3DModel has a _cp_plan: --parallel splits the attention of both A14B experts
    context_parallel = ContextParallel(denoisers=("transformer", "transformer_2"))
    gpu_dtype = "bfloat16"  # the VAE stays float32 (component_dtypes)
    tiny_version = "1"
    two_experts = False
    model_name = ""
    repo = ""
    # transformer-only files (diffusers or Wan-AI key layout, or GGUF) with --component
    replaceable_components = ("transformer",)
    lora_prefixes = ("transformer.", "diffusion_model.blocks.", "lora_unet_blocks_", "blocks.")
    component_markers = {name: ("blocks.0.self_attn.q.", "blocks.0.attn1.to_q.", "patch_embedding.")
                         for name in ("transformer", "transformer_2")}

    def __init__(self):
        self.default_repo = os.environ.get(REPO_ENV) or self.repo

    def component_dtypes(self, runtime: Runtime) -> dict[str, str] | None:
        return {"vae": "float32"} if runtime.dtype != "float32" else None

    def config_problem(self, folder: Path, index: dict) -> str | None:
        """Another Wan variant, told from model_index.json before anything loads."""
        problems = []
        has_expert_2 = (index.get("transformer_2") or [None])[0] is not None
        if self.two_experts and not has_expert_2:
            problems.append("it has no transformer_2 (low-noise expert)")
        if not self.two_experts and has_expert_2:
            problems.append("it has two expert transformers (an A14B model)")
        if not self.two_experts and not index.get("expand_timesteps"):
            problems.append("its model_index.json does not set expand_timesteps (a Wan 2.1 model?)")
        return f"it is not a {self.model_name} model: {'; '.join(problems)}" if problems else None

    def prepare_view(self, pipe, job: Job) -> None:
        if job.runtime.dtype != "float32":
            job.notes["vae_dtype"] = str(pipe.vae.dtype).removeprefix("torch.")
            job.notes["vae_dtype_reason"] = VAE_FP32_NOTE.format(dtype=job.runtime.dtype)


class _WanA14B(_Wan):
    two_experts = True
    replaceable_components = ("transformer", "transformer_2")  # high- and low-noise experts
    lora_targets = ("transformer", "transformer_2")  # Wan 2.2 LoRAs come in pairs, one per expert
    arguments = {"cfg_2": "guidance_scale_2"}
    latent_format = "wan21"  # the A14B models keep Wan 2.1's 16-channel VAE

    def prepare_view(self, pipe, job: Job) -> None:
        super().prepare_view(pipe, job)
        # WanPipeline reads self.config.boundary_ratio on every call: the request's value, on this run's view.
        pipe.register_to_config(boundary_ratio=job.params.boundary_ratio)


class WanTI2V5B(_Wan):
    key = "wan_ti2v_5b"
    description = "Wan 2.2 TI2V-5B: text- and image-to-video, one transformer, 48-channel VAE (diffusers format)"
    tasks = TI2V_5B_TASKS
    pipelines = {"txt2vid": "WanPipeline", "img2vid": "WanImageToVideoPipeline"}
    model_name = "Wan 2.2 TI2V-5B"
    repo = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    reference_configs = {"ti2v_5b": "reference_configs/ti2v_5b"}  # codex_diffusers.reference_config_dir
    latent_format = "wan22"  # its own 48-channel VAE

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build_ti2v_5b

        build_ti2v_5b(dest)


class WanT2VA14B(_WanA14B):
    key = "wan_t2v_14b"
    description = "Wan 2.2 T2V-A14B: text-to-video, high- and low-noise expert transformers (diffusers format)"
    tasks = T2V_A14B_TASKS
    pipelines = {"txt2vid": "WanPipeline"}
    model_name = "Wan 2.2 T2V-A14B"
    repo = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    reference_configs = {"t2v_a14b": "reference_configs/t2v_a14b"}

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build_t2v_a14b

        build_t2v_a14b(dest)


class WanI2VA14B(_WanA14B):
    key = "wan_i2v_14b"
    description = ("Wan 2.2 I2V-A14B: image-to-video and first/last-frame-to-video, high- and low-noise expert "
                   "transformers (diffusers format)")
    tasks = I2V_A14B_TASKS
    pipelines = {"img2vid": "WanImageToVideoPipeline", "flf2vid": "WanImageToVideoPipeline"}
    model_name = "Wan 2.2 I2V-A14B"
    repo = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    reference_configs = {"i2v_a14b": "reference_configs/i2v_a14b"}

    def extra_arguments(self, job: Job, pipe) -> dict:
        if job.task == "flf2vid":  # at the frame size, as the first frame (init_image) is
            return {"last_image": job.input_image("last_image", self.output_size(job))}
        return {}

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build_i2v_a14b

        build_i2v_a14b(dest)
