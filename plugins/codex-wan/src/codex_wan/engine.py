"""Loading and running Wan 2.2 on the diffusers Wan pipelines (WanPipeline, WanImageToVideoPipeline)."""

from __future__ import annotations

from pathlib import Path

from diffusers import WanImageToVideoPipeline, WanPipeline

from codex_core.diffusers_support import PipelineFamily, call, load_pipeline
from codex_core.engine_api import Engine, Job
from codex_core.errors import UsageError
from codex_core.outputs import VideoOutput

from . import tiny

VAE_FP32_NOTE = ("the VAE runs in float32 while the transformers run in {dtype}, as the Wan authors and the "
                 "diffusers Wan docs advise for decoding quality")


class _WanEngine(Engine):
    """Wan engines differ in their pipeline classes, expert count and tiny model."""

    pipelines: dict[str, type]
    two_experts: bool = False
    model_name: str = ""

    def load(self, source, runtime) -> PipelineFamily:
        vae_fp32 = {"vae": "float32"} if runtime.dtype != "float32" else None
        base = load_pipeline(next(iter(self.pipelines.values())), source, runtime, component_dtypes=vae_fp32)
        self.check_model(base, source.label)
        return PipelineFamily(base, runtime)

    def check_model(self, pipe, label: str) -> None:
        """Refuse a folder of another Wan variant before running it with the wrong wiring."""
        problems = []
        if self.two_experts and pipe.transformer_2 is None:
            problems.append("it has no transformer_2 (low-noise expert)")
        if not self.two_experts and pipe.transformer_2 is not None:
            problems.append("it has two expert transformers (an A14B model)")
        if not self.two_experts and not pipe.config.expand_timesteps:
            problems.append("its model_index.json does not set expand_timesteps (a Wan 2.1 model?)")
        if problems:
            raise UsageError(f"{label} is not a {self.model_name} model: {'; '.join(problems)}",
                             hint=f"point --model at a {self.model_name} folder in diffusers format, "
                                  "or pick the engine that matches the model")

    def run(self, family: PipelineFamily, job: Job) -> VideoOutput:
        params, task = job.params, job.task
        pipe = family.scheduled(self.pipelines[task], job.scheduler)
        if family.runtime.dtype != "float32":
            job.notes["vae_dtype"] = str(pipe.vae.dtype).removeprefix("torch.")
            job.notes["vae_dtype_reason"] = VAE_FP32_NOTE.format(dtype=family.runtime.dtype)
        kwargs = dict(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            height=params.height,
            width=params.width,
            num_frames=params.num_frames,
            num_inference_steps=params.steps,
            guidance_scale=params.cfg,
            num_videos_per_prompt=params.batch_size,
            output_type="pil",
        )
        if task == "img2vid":
            kwargs["image"] = job.input_image("init_image", (params.width, params.height))
        elif task != "txt2vid":  # the spec lists only these tasks; reaching here is a bug, not a user error
            raise AssertionError(f"unexpected task {task}")
        if self.two_experts:
            # WanPipeline reads self.config.boundary_ratio on every call: the request's value, per run.
            pipe.register_to_config(boundary_ratio=params.boundary_ratio)
            kwargs["guidance_scale_2"] = params.cfg_2
        out = call(pipe, job, denoiser=("transformer", "transformer_2"), **kwargs)
        return VideoOutput(frames=out.frames[0], fps=params.fps)


class WanTI2V5BEngine(_WanEngine):
    pipelines = {"txt2vid": WanPipeline, "img2vid": WanImageToVideoPipeline}
    model_name = "Wan 2.2 TI2V-5B"

    def build_tiny(self, dest: Path) -> None:
        tiny.build_ti2v_5b(dest)


class WanT2VA14BEngine(_WanEngine):
    pipelines = {"txt2vid": WanPipeline}
    two_experts = True
    model_name = "Wan 2.2 T2V-A14B"

    def build_tiny(self, dest: Path) -> None:
        tiny.build_t2v_a14b(dest)


class WanI2VA14BEngine(_WanEngine):
    pipelines = {"img2vid": WanImageToVideoPipeline}
    two_experts = True
    model_name = "Wan 2.2 I2V-A14B"

    def build_tiny(self, dest: Path) -> None:
        tiny.build_i2v_a14b(dest)
