"""The hunyuan_video engine: HunyuanVideo text-to-video and HunyuanVideo-I2V image-to-video.

txt2vid runs ``HunyuanVideoPipeline`` (hunyuanvideo-community/HunyuanVideo) and img2vid
``HunyuanVideoImageToVideoPipeline`` (hunyuanvideo-community/HunyuanVideo-I2V, or the earlier -33ch
release): two checkpoints, not one pipeline family. A real folder serves the task its
model_index.json names; the tiny model serves both (``<tiny>/`` and ``<tiny>/i2v/``). Each
task's checkpoint loads on its first run and stays cached with the model.

Every component runs in the runtime dtype (bfloat16 on GPU). The diffusers docs recommend bf16 for
the transformer and fp16 for the VAE and text encoders; one dtype keeps the loader the shared one,
and bf16 has fp16's memory cost without its overflow risk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codex_core import CodexError, Job, ModelSource, UsageError, VideoOutput
from codex_diffusers import ContextParallel, DiffusersEngine

from .context_parallel import layout_problem as cp_layout_problem, plan as cp_plan, prepare_split
from .params import TASKS

# With latent_concat conditioning (HunyuanVideo-I2V-33ch) diffusers drops the first 4 decoded
# frames; see frames_to_ask.
LATENT_CONCAT_DROPPED_FRAMES = 4
# Pipeline call arguments a checkpoint folder asks for (only the tiny models have one: their short
# prompt templates, because the real templates need the real tokenizer).
CALL_FILE = "codex_tiny.json"
I2V_FOLDER = "i2v"


def frames_to_ask(pipe, num_frames: int) -> int:
    """How many frames to ask the pipeline for so that it returns ``num_frames``.

    With latent_concat conditioning the I2V pipeline decodes every latent frame and then drops the
    first 4 frames (``video[:, :, 4:]``: the conditioning image's frame and the next 3), so asking
    for 9 returns 5. Asking for num_frames + 4 (still 4k+1) returns exactly num_frames, at the cost
    of one more latent frame. token_replace checkpoints return what they are asked for. ``output``
    checks the count it gets back.
    """
    if getattr(pipe.transformer.config, "image_condition_type", None) == "latent_concat":
        return num_frames + LATENT_CONCAT_DROPPED_FRAMES
    return num_frames


class HunyuanVideo(DiffusersEngine):
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    lora_prefixes = ("transformer.", "diffusion_model.double_blocks", "lora_unet_double_blocks")
    key = "hunyuan_video"
    family = "hunyuan-video"
    description = "HunyuanVideo 13B: text-to-video and image-to-video (HunyuanVideo-I2V), diffusers format"
    tasks = TASKS
    pipelines = {"txt2vid": "HunyuanVideoPipeline", "img2vid": "HunyuanVideoImageToVideoPipeline"}
    denoisers = ("transformer",)
    latent_format = "hunyuan_video"
    sampler_family = "flow"
    # The pipelines always pass an explicit sigma schedule (scheduler.set_timesteps(sigmas=...));
    # DPMSolverMultistepScheduler accepts none, so the flow "DPM++ 2M" would fail inside diffusers.
    samplers = ("Euler", "UniPC")
    default_repo = "hunyuanvideo-community/HunyuanVideo"
    # the configs of hunyuanvideo-community/HunyuanVideo, shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"t2v": "reference_configs/t2v"}
    # image-to-video is another checkpoint (its own transformer and LLaVA text encoder): looked up
    # under CODEX_MODEL_HUNYUAN_VIDEO_IMG2VID / <models dir>/hunyuan_video_img2vid/
    task_default_repos = {"img2vid": "hunyuanvideo-community/HunyuanVideo-I2V"}
    gpu_dtype = "bfloat16"  # every component, the VAE and text encoders included
    tiny_version = "1"
    # --parallel: diffusers' HunyuanVideoTransformer3DModel has no cp plan; ours, with the mask hook
    # prepare_view adds (context_parallel.py says why the plan alone is not enough)
    context_parallel = ContextParallel(denoisers=("transformer",), plans={"transformer": cp_plan},
                                       layouts=cp_layout_problem)

    def task_folders(self, source: ModelSource) -> dict[str, Path]:
        if source.kind == "tiny":
            return {"txt2vid": source.path, "img2vid": source.path / I2V_FOLDER}
        return {self.checkpoint_task(source.path, source.label): source.path}

    def prepare_view(self, pipe, job: Job) -> None:
        super().prepare_view(pipe, job)
        # split by --parallel: refuse token_replace and non-Ulysses splits, order the joint mask (no-op unsplit)
        prepare_split(pipe.transformer)

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        params, folder = job.params, Path(pipe.name_or_path)
        call_file = folder / CALL_FILE
        extra = json.loads(call_file.read_text(encoding="utf-8")) if call_file.is_file() else {}
        config = pipe.transformer.config
        if not config.guidance_embeds:
            job.notes["cfg_ignored_reason"] = (
                "this checkpoint's transformer has no guidance embedding (e.g. HunyuanVideo-I2V-33ch): cfg has no "
                "effect; true_cfg above 1 is its guidance")
            if params.cfg != 1.0:
                job.progress.message(f"warning: {job.notes['cfg_ignored_reason']}")
        if job.task == "img2vid":
            condition = config.image_condition_type
            if condition not in ("latent_concat", "token_replace"):
                raise UsageError(f"{folder}: unknown image_condition_type {condition!r} in the transformer config; "
                                 "expected latent_concat or token_replace")
            job.notes["image_condition_type"] = condition
            extra["num_frames"] = frames_to_ask(pipe, params.num_frames)
            if extra["num_frames"] != params.num_frames:
                job.notes["pipeline_num_frames"] = extra["num_frames"]
        return extra

    def output(self, result, job: Job, arguments: dict[str, Any]) -> VideoOutput:
        video = super().output(result, job, arguments)
        if len(video.frames) != job.params.num_frames:  # frames_to_ask is wrong for this checkpoint: say so
            raise CodexError(f"the pipeline returned {len(video.frames)} frames for num_frames "
                             f"{job.params.num_frames} (asked it for {arguments['num_frames']}); nothing was written")
        return video

    def build_tiny(self, dest: Path) -> None:
        from .tiny import build

        build(dest)
