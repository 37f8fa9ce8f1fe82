"""Loading and running HunyuanVideo on the diffusers pipelines.

txt2vid runs ``HunyuanVideoPipeline`` (hunyuanvideo-community/HunyuanVideo) and img2vid
``HunyuanVideoImageToVideoPipeline`` (hunyuanvideo-community/HunyuanVideo-I2V, or the earlier
-33ch release): two checkpoints, not one pipeline family. ``load`` therefore only finds which
checkpoint folder serves which task; each task's pipeline loads from its folder on first use and
stays cached with the model. A real folder serves the task its model_index.json names; the tiny
model serves both (``<tiny>/`` and ``<tiny>/i2v/``).

Every component runs in the runtime dtype (bfloat16 on GPU). The diffusers docs recommend bf16 for
the transformer and fp16 for the VAE and text encoders; one dtype keeps the loader the shared one,
and bf16 has fp16's memory cost without its overflow risk.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from diffusers import HunyuanVideoImageToVideoPipeline, HunyuanVideoPipeline

from codex_core.diffusers_support import PipelineFamily, call, load_pipeline
from codex_core.engine_api import Engine, Job
from codex_core.errors import CodexError, UsageError
from codex_core.outputs import VideoOutput
from codex_core.runtime import Runtime
from codex_core.sources import ModelSource

from . import tiny

PIPELINES = {"txt2vid": HunyuanVideoPipeline, "img2vid": HunyuanVideoImageToVideoPipeline}
TASK_OF_PIPELINE = {cls.__name__: task for task, cls in PIPELINES.items()}
REPOS = {"txt2vid": "hunyuanvideo-community/HunyuanVideo", "img2vid": "hunyuanvideo-community/HunyuanVideo-I2V"}
# With latent_concat conditioning (HunyuanVideo-I2V-33ch) diffusers drops the first 4 decoded
# frames; see HunyuanVideoModel.frames_to_ask.
LATENT_CONCAT_DROPPED_FRAMES = 4


def checkpoint_task(folder: Path, label: str) -> str:
    """Which task a diffusers folder serves, from its model_index.json (no weights read)."""
    class_name = json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    if class_name not in TASK_OF_PIPELINE:
        raise UsageError(f"{label} is not a HunyuanVideo checkpoint: its model_index.json names {class_name!r}, "
                         f"not {' or '.join(TASK_OF_PIPELINE)}",
                         hint="point --model at a HunyuanVideo folder in diffusers format")
    return TASK_OF_PIPELINE[class_name]


class HunyuanVideoModel:
    """The checkpoint folder of each task a source serves, and their pipelines once loaded."""

    def __init__(self, source: ModelSource, folders: dict[str, Path], runtime: Runtime):
        self.source = source
        self.folders = folders
        self.runtime = runtime
        self._loaded: dict[str, tuple[PipelineFamily, dict[str, Any]]] = {}

    def for_task(self, task: str, job: Job) -> tuple[PipelineFamily, dict[str, Any]]:
        """The task's pipeline family and its extra call arguments, loaded on first use."""
        if task not in self.folders:
            served = next(iter(self.folders))
            raise UsageError(
                f"{self.source.label} is a HunyuanVideo {served} checkpoint ({PIPELINES[served].__name__}); "
                f"{task} needs a {PIPELINES[task].__name__} checkpoint such as {REPOS[task]}",
                hint=f"pass --model with a {PIPELINES[task].__name__} folder, or leave --model out to use the {task} "
                     f"checkpoint slot (CODEX_MODEL_HUNYUAN_VIDEO{'_IMG2VID' if task == 'img2vid' else ''})")
        if task not in self._loaded:
            folder = self.folders[task]
            started = time.perf_counter()
            base = load_pipeline(PIPELINES[task], dataclasses.replace(self.source, path=folder), self.runtime)
            job.timer.add("load", time.perf_counter() - started)  # the core timed only the lookup
            call_file = folder / tiny.CALL_FILE  # only tiny models have one (their short prompt templates)
            extra = json.loads(call_file.read_text(encoding="utf-8")) if call_file.is_file() else {}
            self._loaded[task] = (PipelineFamily(base, self.runtime), extra)
        return self._loaded[task]

    @staticmethod
    def frames_to_ask(pipe, num_frames: int) -> int:
        """How many frames to ask the pipeline for so that it returns ``num_frames``.

        With latent_concat conditioning the I2V pipeline decodes every latent frame and then drops
        the first 4 frames (``video[:, :, 4:]``: the conditioning image's frame and the next 3), so
        asking for 9 returns 5. Asking for num_frames + 4 (still 4k+1) returns exactly num_frames, at
        the cost of one more latent frame. token_replace checkpoints return what they are asked for.
        ``run`` checks the count it gets back.
        """
        if getattr(pipe.transformer.config, "image_condition_type", None) == "latent_concat":
            return num_frames + LATENT_CONCAT_DROPPED_FRAMES
        return num_frames


class HunyuanVideoEngine(Engine):
    def build_tiny(self, dest: Path) -> None:
        tiny.build(dest)

    def load(self, source: ModelSource, runtime: Runtime) -> HunyuanVideoModel:
        if source.kind == "tiny":
            folders = {"txt2vid": source.path, "img2vid": source.path / tiny.I2V_FOLDER}
        else:
            folders = {checkpoint_task(source.path, source.label): source.path}
        return HunyuanVideoModel(source, folders, runtime)

    def run(self, model: HunyuanVideoModel, job: Job) -> VideoOutput:
        params, task = job.params, job.task
        family, extra = model.for_task(task, job)
        pipe = family.scheduled(PIPELINES[task], job.scheduler)
        config = pipe.transformer.config
        kwargs = dict(
            prompt=params.prompt,
            # diffusers runs true CFG only when a negative prompt is passed: "" means unconditional
            negative_prompt=params.negative_prompt if params.true_cfg > 1.0 else None,
            true_cfg_scale=params.true_cfg,
            guidance_scale=params.cfg,
            height=params.height,
            width=params.width,
            num_frames=params.num_frames,
            num_inference_steps=params.steps,
            num_videos_per_prompt=params.batch_size,
            output_type="pil",
            **extra,
        )
        if not config.guidance_embeds:
            job.notes["cfg_ignored_reason"] = (
                "this checkpoint's transformer has no guidance embedding (e.g. HunyuanVideo-I2V-33ch): cfg has no "
                "effect; true_cfg above 1 is its guidance")
            if params.cfg != 1.0:
                job.progress.message(f"warning: {job.notes['cfg_ignored_reason']}")
        if task == "img2vid":
            condition = config.image_condition_type
            if condition not in ("latent_concat", "token_replace"):
                raise UsageError(f"{model.source.label}: unknown image_condition_type {condition!r} in the "
                                 "transformer config; expected latent_concat or token_replace")
            kwargs["image"] = job.input_image("init_image", (params.width, params.height))
            kwargs["num_frames"] = model.frames_to_ask(pipe, params.num_frames)
            job.notes["image_condition_type"] = condition
            if kwargs["num_frames"] != params.num_frames:
                job.notes["pipeline_num_frames"] = kwargs["num_frames"]
        elif task != "txt2vid":  # the spec lists only these tasks; reaching here is a bug, not a user error
            raise AssertionError(f"unexpected task {task}")
        frames = call(pipe, job, denoiser="transformer", **kwargs).frames[0]
        if len(frames) != params.num_frames:  # the mapping above is wrong for this checkpoint: say so
            raise CodexError(f"the pipeline returned {len(frames)} frames for num_frames {params.num_frames} "
                             f"(asked it for {kwargs['num_frames']}); nothing was written")
        return VideoOutput(frames=list(frames), fps=params.fps)
