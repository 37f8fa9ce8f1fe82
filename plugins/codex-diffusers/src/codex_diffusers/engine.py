"""``DiffusersEngine``: an engine that runs real diffusers pipelines, declared rather than written.

An engine on this base declares a pipeline class per task (by name, so declaring imports nothing)
and, where its pipelines take arguments beyond the canonical ones, which request field feeds which
argument. The base does the rest, the same way for every engine:

1. ``load``: ``from_pretrained`` the checkpoint (safetensors only, local files only), place it on
   the device (offload, tiling), derive the other tasks' pipelines with ``from_pipe``;
2. ``run``: take a per-run view of the task's pipeline with the request's scheduler, map the
   validated params to pipeline arguments (``pipeline_arguments``: the one mapping), call it with
   the seed's generator under timing and progress, and wrap the result as images or a video.

Optional methods refine it: ``component_dtypes`` (e.g. a float32 VAE), ``check_model`` (refuse a
checkpoint of another kind after loading), ``extra_arguments``, ``prepare_view``, ``run_context``
(e.g. a LoRA for one run), ``task_folders`` (tasks with their own checkpoints) and ``output``.

This module imports no torch: engines are declared in plugin modules that `codex engines` imports.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Mapping

from codex_core import CodexError, Engine, ImageOutput, Job, ModelSource, Runtime, UsageError, VideoOutput

from .configs import read_config

# Canonical request field -> diffusers pipeline argument. width/height, the images, the batch size
# and true CFG follow the rules in ``DiffusersEngine.pipeline_arguments``.
CANONICAL_ARGUMENTS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "strength": "strength",
    "num_frames": "num_frames",
}


class DiffusersModel:
    """What ``DiffusersEngine.load`` returns: the pipeline family of each checkpoint folder, loaded once.

    Engines whose tasks share one checkpoint load it at once; engines whose tasks have their own
    checkpoints (``task_folders``) load each folder on its task's first run.
    """

    def __init__(self, engine: "DiffusersEngine", source: ModelSource, runtime: Runtime):
        self.engine = engine
        self.source = source
        self.runtime = runtime
        self.folders = engine.task_folders(source)
        self.families: dict[Path, Any] = {}
        if len(set(self.folders.values())) == 1:
            self._load(next(iter(self.folders.values())))

    def _load(self, folder: Path):
        from .pipelines import PipelineFamily, load_pipeline, pipeline_class

        served = [task for task, path in self.folders.items() if path == folder]
        base = load_pipeline(pipeline_class(self.engine.pipelines[served[0]]), folder, self.source.label, self.runtime,
                             self.engine.component_dtypes(self.runtime), **self.engine.load_options)
        self.engine.check_model(base, self.source)
        self.families[folder] = PipelineFamily(base, self.runtime)
        return self.families[folder]

    def family(self, task: str, job: Job):
        """The pipeline family that serves ``task``, loading its checkpoint on first use."""
        if task not in self.folders:
            raise UsageError(*self.engine.missing_task_checkpoint(task, self.source, self.folders))
        folder = self.folders[task]
        if folder not in self.families:
            started = time.perf_counter()
            self._load(folder)
            job.timer.add("load", time.perf_counter() - started)  # the core timed only the lookup
        return self.families[folder]

    def nbytes(self) -> int:
        return sum(family.nbytes() for family in self.families.values())


class DiffusersEngine(Engine):
    """Base class of every engine that runs diffusers pipelines. See the module docstring."""

    # task -> diffusers pipeline class name; the first task's class loads the checkpoint
    pipelines: ClassVar[Mapping[str, str]] = {}
    # request field -> pipeline argument, for an engine's own fields (see CANONICAL_ARGUMENTS)
    arguments: ClassVar[Mapping[str, str]] = {}
    # pipeline attributes whose forward passes are the denoising stage (timed, progress)
    denoisers: ClassVar[tuple[str, ...]] = ("unet",)
    # the pipeline method that encodes the conditioning (timed as text_encode)
    encoder: ClassVar[str] = "encode_prompt"
    # extra from_pretrained keyword arguments (e.g. components not to load)
    load_options: ClassVar[Mapping[str, Any]] = {}

    # -- loading -----------------------------------------------------------------------------------
    def load(self, source: ModelSource, runtime: Runtime) -> DiffusersModel:
        return DiffusersModel(self, source, runtime)

    def task_folders(self, source: ModelSource) -> dict[str, Path]:
        """The checkpoint folder of each task a source serves. Default: one checkpoint for every task."""
        return {task: source.path for task in self.pipelines}

    def missing_task_checkpoint(self, task: str, source: ModelSource, folders: dict[str, Path]) -> tuple[str, str]:
        """(message, hint) when ``source`` serves other tasks than ``task``."""
        served = next(iter(folders))
        env = f"CODEX_MODEL_{self.key.upper()}_{task.upper()}"
        return (f"{source.label} is a {served} checkpoint ({self.pipelines[served]}); {task} needs a "
                f"{self.pipelines[task]} checkpoint" + (f" such as {self.task_default_repos[task]}"
                                                        if task in self.task_default_repos else ""),
                f"pass --model with a {self.pipelines[task]} folder, or leave --model out to use the {task} "
                f"checkpoint slot ({env})")

    recognises_checkpoints = True

    def checkpoint_problem(self, folder: Path) -> str | None:
        """A folder whose model_index.json names none of this engine's pipelines is another family's;
        ``config_problem`` refines it (variants of one pipeline class)."""
        index = read_config(folder, "model_index.json")
        class_name = index.get("_class_name")
        runs = " or ".join(dict.fromkeys(self.pipelines.values()))
        if not class_name:
            return f"its model_index.json names no pipeline class; {self.key} runs {runs}"
        if class_name not in self.pipelines.values():
            return f"it is a {class_name} checkpoint (its model_index.json); {self.key} runs {runs}"
        return self.config_problem(folder, index)

    def config_problem(self, folder: Path, index: dict[str, Any]) -> str | None:
        """Engine-specific checks of a checkpoint of the right pipeline class (e.g. another variant)."""
        return None

    def checkpoint_task(self, folder: Path, label: str) -> str:
        """Which task a checkpoint folder serves, from the pipeline class its model_index.json names."""
        class_name = read_config(folder, "model_index.json").get("_class_name")
        tasks = [task for task, name in self.pipelines.items() if name == class_name]
        if not tasks:
            raise UsageError(f"{label} is not a {self.key} checkpoint: its model_index.json names {class_name!r}, "
                             f"not {' or '.join(dict.fromkeys(self.pipelines.values()))}",
                             hint=f"point --model at a {self.key} folder in diffusers format")
        return tasks[0]

    def component_dtypes(self, runtime: Runtime) -> dict[str, str] | None:
        """Components to load in another dtype than the runtime's, e.g. ``{"vae": "float32"}``."""
        return None

    def check_model(self, pipe, source: ModelSource) -> None:
        """Refuse a loaded checkpoint that this engine would run with the wrong wiring (raise UsageError)."""

    def resolve_runtime(self, runtime: Runtime) -> Runtime:
        from .devices import resolve_runtime

        return resolve_runtime(runtime, self.gpu_dtype)

    def reset_peak_memory(self, device: str) -> None:
        from .devices import reset_peak_memory

        reset_peak_memory(device)

    def peak_memory_mb(self, device: str) -> float | None:
        from .devices import peak_memory_mb

        return peak_memory_mb(device)

    def ensure_tiny(self, dest: Path, progress) -> None:
        from . import pipelines  # noqa: F401  (quiets the libraries' progress bars while the tiny model is saved)

        super().ensure_tiny(dest, progress)

    def model_bytes(self, model: DiffusersModel) -> int:
        return model.nbytes()

    def unload(self, model: DiffusersModel) -> None:
        import torch

        model.families.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- running ---------------------------------------------------------------------------------------
    def run(self, model: DiffusersModel, job: Job) -> ImageOutput | VideoOutput:
        from .pipelines import call, pipeline_class

        family = model.family(job.task, job)
        pipe = family.view(pipeline_class(self.pipelines[job.task]), job.scheduler, job)
        self.prepare_view(pipe, job)
        arguments = self.pipeline_arguments(job, pipe)
        self.note_truncation(job, pipe, arguments)
        with self.run_context(pipe, job):
            result = call(pipe, job, denoisers=self.denoisers, encoder=self.encoder, **arguments)
        return self.output(result, job, arguments)

    def prepare_view(self, pipe, job: Job) -> None:
        """Set per-run state on the run's own view of the pipeline (e.g. ``register_to_config``)."""

    def run_context(self, pipe, job: Job) -> AbstractContextManager:
        """A context the pipeline call runs in (e.g. a LoRA loaded for this run only, then undone)."""
        return nullcontext()

    def pipeline_arguments(self, job: Job, pipe) -> dict[str, Any]:
        """The validated request as the pipeline's ``__call__`` arguments: the one mapping for every engine.

        - canonical fields by ``CANONICAL_ARGUMENTS``, the engine's own by ``arguments``; an empty
          negative prompt is left to the pipeline's own default (None for most, which some treat
          differently from "": SDXL then zeroes the negative embedding);
        - ``true_cfg`` (true classifier-free guidance against the negative prompt, for
          guidance-distilled models): ``true_cfg_scale``, and the negative prompt is passed only
          when true_cfg > 1 ("" is then the unconditional prompt, which diffusers needs to run it);
        - the output size: ``params.target_size()`` (init-image tasks) or width x height, passed as
          ``width``/``height`` when the pipeline takes them; ``init_image`` and ``mask_image`` are
          loaded at that size;
        - ``batch_size`` is ``num_images_per_prompt`` or ``num_videos_per_prompt``;
        - ``output_type="pil"`` where the pipeline takes it; then ``extra_arguments``.
        """
        from .pipelines import accepted_arguments

        params, fields = job.params, type(job.params).model_fields
        accepted = accepted_arguments(pipe)
        arguments = {argument: getattr(params, field)
                     for field, argument in {**CANONICAL_ARGUMENTS, **self.arguments}.items() if field in fields}
        if arguments.get("negative_prompt") == "":
            del arguments["negative_prompt"]
        if "true_cfg" in fields:
            arguments["true_cfg_scale"] = params.true_cfg
            arguments["negative_prompt"] = params.negative_prompt if params.true_cfg > 1.0 else None
        size = params.target_size() if hasattr(params, "target_size") else (
            (params.width, params.height) if "width" in fields else None)
        if size and "width" in accepted:
            arguments["width"], arguments["height"] = size
        if "init_image" in fields:
            arguments["image"] = job.input_image("init_image", size)
        if "mask_image" in fields:
            arguments["mask_image"] = job.input_image("mask_image", size, "L")
        batch = "num_videos_per_prompt" if "num_videos_per_prompt" in accepted else "num_images_per_prompt"
        if "batch_size" in fields:
            arguments[batch] = params.batch_size
        if "output_type" in accepted:
            arguments["output_type"] = "pil"
        arguments.update(self.extra_arguments(job, pipe))
        unknown = sorted(set(arguments) - accepted)
        if unknown:  # a wiring bug in the engine, not a user error: say exactly what
            raise CodexError(f"engine {self.key}: {type(pipe).__name__}.__call__ takes no {', '.join(unknown)}")
        return arguments

    def note_truncation(self, job: Job, pipe, arguments: dict[str, Any]) -> None:
        """Prompts longer than a text encoder's window are cut by diffusers with at most a log line: say so.

        Each tokenizer of the pipeline counts the prompt's tokens; the window is a CLIP tokenizer's own
        length (77) and, for the others (T5, UMT5, Llama), the ``max_sequence_length`` the call uses.
        A prompt over it gets a warning and ``info.notes.truncated[field][tokenizer] = {tokens, kept}``.
        """
        from .pipelines import accepted_arguments, argument_default

        window = arguments.get("max_sequence_length")
        if window is None and "max_sequence_length" in accepted_arguments(pipe):
            window = argument_default(pipe, "max_sequence_length")
        for field in ("prompt", "negative_prompt"):
            text = arguments.get(field)
            if not isinstance(text, str) or not text:
                continue
            for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
                tokenizer = getattr(pipe, name, None)
                if tokenizer is None or not callable(tokenizer):
                    continue
                limit = tokenizer.model_max_length if "CLIP" in type(tokenizer).__name__ else window
                if not limit or limit > 100_000:
                    continue
                tokens = len(tokenizer(text).input_ids)
                if tokens > limit:
                    job.notes.setdefault("truncated", {}).setdefault(field, {})[name] = {"tokens": tokens,
                                                                                       "kept": limit}
                    job.progress.message(f"warning: {field} has {tokens} tokens for {name} "
                                         f"({type(tokenizer).__name__}); the text encoder sees the first {limit}")

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        """Arguments beyond the field mapping (e.g. call settings a checkpoint needs)."""
        return {}

    def output(self, result, job: Job, arguments: dict[str, Any]) -> ImageOutput | VideoOutput:
        """Images, or one video's frames at the request's fps."""
        if self.output_kind(job.task) == "video":
            return VideoOutput(frames=list(result.frames[0]), fps=job.params.fps)
        return ImageOutput(list(result.images))
