"""The engine contract: one object per engine key, registered by its plugin, carrying its behaviour.

An engine class declares what it is as class attributes (key, tasks with their params models,
sampler family, model sources) and does its work in methods. Everything that runs before a model
loads (variant detection, the request plan, request checks) must be torch-free: the module that
defines an engine is imported by `codex engines`, `codex schema` and `codex presets`, so it may
import torch and the like only inside ``build_tiny``, ``load`` and ``run``.

The core calls, in this order: ``detect_variant`` (engines with variants), ``plan`` (preset layers
and adjustments that depend on the request), presets fill, params validation, ``check_request``;
then, for a run, ``load`` (once per model and runtime, cached) and ``run``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from .metrics import StageTimes
from .outputs import ImageOutput, VideoOutput
from .params import OUTPUT_KINDS, STEP_RULES, ParamsBase
from .progress import Progress

if TYPE_CHECKING:
    from .runtime import Runtime
    from .samplers import SchedulerChoice
    from .sources import ModelSource

BASELINE_MODE = "normal"  # the mode every engine runs; speed modes are the engine's own vocabulary
TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class Plan:
    """What an engine decides about a request before presets fill it (see ``Engine.plan``)."""

    # Preset layers to fill before the task's base preset, most specific first: the files
    # presets/<engine>/[<variant>/]<task>.<layer>.yaml (a missing file is skipped).
    layers: tuple[str, ...] = ()
    # Field values that replace the validated ones: what actually runs (e.g. a mode that cannot run).
    overrides: dict[str, Any] = field(default_factory=dict)
    # Extra top-level entries for info.json.
    info: dict[str, Any] = field(default_factory=dict)
    # Printed on stderr when the run starts ("codex: warning: ...").
    warnings: list[str] = field(default_factory=list)


@dataclass
class PlanContext:
    """What ``Engine.plan`` may consult. ``source()`` finds the checkpoint (reads no weights) once."""

    variant: str | None
    _resolve: Callable[[], "ModelSource"]
    _source: "ModelSource | None" = None
    # the run options (``Runtime``) the run will have: checks that weigh them against the checkpoint read them
    runtime: Any = None

    def source(self) -> "ModelSource":
        if self._source is None:
            self._source = self._resolve()
        return self._source

    @property
    def resolved(self) -> "ModelSource | None":
        """The source if something asked for it already (then a run reuses it), else None."""
        return self._source


@dataclass
class Job:
    """Everything one run needs, already validated and resolved."""

    task: str
    params: ParamsBase
    seed: int | None
    scheduler: "SchedulerChoice | None"
    runtime: "Runtime"
    progress: Progress
    timer: StageTimes
    steps_done: int = 0
    # Facts the engine wants in info.json (e.g. that the init image was resized).
    notes: dict[str, Any] = field(default_factory=dict)
    # The scheduler that ran: {"class": name, "config": its full config as applied} (JSON-safe).
    scheduler_applied: dict[str, Any] | None = None
    # Model files the run read besides the checkpoint (LoRAs, a VAE, embeddings): label -> record
    # (``codex_core.model_files.file_record``: path, bytes, sha256, A1111's short hash).
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (step, of steps) when the run was asked to stop early and did, keeping the latents of that step
    stopped_early: tuple[int, int] | None = None
    # The seed of each image of a batch (A1111's rule: seed + i, so image i equals a one-image run with that
    # seed); None: the whole batch is drawn from one generator of ``seed`` (one image, or the replay of a run
    # recorded before this rule, whose info has no ``seeds``).
    seeds: list[int] | None = None
    # Images the run made besides its output, written beside it as <name>.png and recorded in info.side_images
    # (e.g. a preprocessed control image: "control-0-canny"); names are file stems: [a-z0-9_-]
    side_images: dict[str, Any] = field(default_factory=dict)

    def input_image(self, name: str, size: tuple[int, int] | None, mode: str = "RGB", path: str | None = None):
        """The image of request field ``name`` as 8-bit RGB (``mode="L"``: a mask) at ``size`` (None: its own).

        Orientation, bit depth, palette and transparency are converted by their meaning
        (``codex_core.images``) and recorded in ``notes.converted``; a resize (Lanczos) in ``notes.resized``.
        ``path``: the file, for a field that is a list (``name`` is then e.g. ``images.1``).
        """
        from PIL import Image

        from .images import open_image, prepare

        with open_image(path or getattr(self.params, name)) as opened:
            image, converted = prepare(opened, mask=mode == "L")
        if converted:
            self.notes.setdefault("converted", {})[name] = converted
        if size is None or image.size == tuple(size):
            return image
        self.notes.setdefault("resized", {})[name] = {"from": list(image.size), "to": list(size), "resample": "lanczos"}
        return image.resize(tuple(size), Image.Resampling.LANCZOS)

    def input_video(self, name: str, size: tuple[int, int] | None = None, mode: str = "RGB",
                    path: str | None = None, fps: float | None = None) -> list:
        """The frames of video field ``name`` as 8-bit PIL images (``mode="L"``: a mask video) at ``size``
        (None: their own), at ``fps`` (None: the request's ``video_fps`` if it gives one, else every frame as
        the file holds it). A resize (Lanczos) is recorded in ``notes.resized``, a resampling (frames picked by
        time, ``resampled_indices``) in ``notes.resampled``: the same rule the params' checks counted with.

        ``path``: the file, for a field that is a list (``name`` is then e.g. ``videos.1``).
        """
        from PIL import Image

        from .errors import UsageError
        from .videos import probe_video, read_video, resampled_indices

        source = path or getattr(self.params, name)
        facts = probe_video(source)
        frames = read_video(source)
        if len(frames) != facts.frames:  # the probe counted packets; a damaged stream decodes to fewer frames
            raise UsageError(f"{name}: '{source}' decodes to {len(frames)} frames where the file lists "
                             f"{facts.frames}; the video is damaged (re-encode it)")
        if mode != "RGB":
            frames = [frame.convert(mode) for frame in frames]
        target = fps if fps is not None else getattr(self.params, "video_fps", None)
        if target is not None and not math.isclose(target, facts.fps):
            picked = resampled_indices(len(frames), facts.fps, target)
            self.notes.setdefault("resampled", {})[name] = {
                "from_fps": facts.fps, "to_fps": target, "from_frames": len(frames), "to_frames": len(picked)}
            frames = [frames[index] for index in picked]
        if size is None or frames[0].size == tuple(size):
            return frames
        self.notes.setdefault("resized", {})[name] = {"from": list(frames[0].size), "to": list(size),
                                                      "resample": "lanczos"}
        return [frame.resize(tuple(size), Image.Resampling.LANCZOS) for frame in frames]

def locate_presets(module_file: str, engine: str) -> Path | None:
    """Find an engine's presets folder for a plugin module.

    ``CODEX_PRESETS_DIR`` wins; a wheel carries them as ``<package>/presets/<engine>``; a source
    checkout (editable install) uses the repository's ``presets/<engine>``, the one place they are
    edited.
    """
    override = os.environ.get("CODEX_PRESETS_DIR")
    if override:
        return Path(override) / engine
    package_dir = Path(module_file).resolve().parent
    for base in (package_dir, *package_dir.parents):
        candidate = base / "presets" / engine
        if candidate.is_dir():
            return candidate
    return None


class Engine:
    """Base class of every engine. Subclasses set the class attributes and implement the methods."""

    # -- what the engine is ---------------------------------------------------------------------
    key: ClassVar[str] = ""
    family: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # task name (open vocabulary, e.g. "txt2img", "vid2vid") -> params model; the model's
    # ``output_kind`` ("image" or "video") says what the task produces.
    tasks: ClassVar[Mapping[str, type[ParamsBase]]] = {}
    sampler_family: ClassVar[str | None] = None  # "discrete", "flow" or None (no sampler fields)
    # Allow-lists within the sampler family, for checkpoints only some samplers suit; None: all.
    samplers: ClassVar[tuple[str, ...] | None] = None
    schedule_types: ClassVar[tuple[str, ...] | None] = None
    # A task whose pipeline runs fewer samplers than the engine's others: task -> its allow-list
    task_samplers: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Speed modes the engine honours besides "normal" (its params then have a ``mode`` field), and
    # modes it knows of but does not honour, with the reason (`codex presets --matrix` shows them).
    modes: ClassVar[tuple[str, ...]] = ()
    mode_unsupported: ClassVar[Mapping[str, str]] = {}
    # Where models come from (codex_core.sources): the default hub repo id, per-task repo ids for
    # tasks that need their own checkpoint, and the file that marks a loadable model folder.
    default_repo: ClassVar[str | None] = None
    task_default_repos: ClassVar[Mapping[str, str]] = {}
    model_marker: ClassVar[str | None] = None  # a file every model folder of the engine holds (None: any folder)
    # In the models folders: files that mark a folder as one model of the engine (whole, or a component), and
    # the format `codex models` names such a folder's
    folder_markers: ClassVar[tuple[str, ...]] = ()
    folder_format: ClassVar[str] = "folder"
    tiny_version: ClassVar[str | None] = None  # set when the engine can build a tiny random-weight model
    # Checkpoint variants with their own presets (presets/<engine>/<variant>/), told apart by
    # ``detect_variant``; the tiny model is ``tiny_variant``.
    variants: ClassVar[tuple[str, ...]] = ()
    tiny_variant: ClassVar[str | None] = None
    gpu_dtype: ClassVar[str] = "float16"  # dtype on a GPU when the user says --dtype auto
    # Python distributions whose versions info.json records (the libraries the engine runs on)
    libraries: ClassVar[tuple[str, ...]] = ()
    # Components a user may load from their own weight file (``--component NAME=FILE``), e.g. a
    # transformer-only or GGUF-quantised file combined with a base folder for the rest.
    replaceable_components: ClassVar[tuple[str, ...]] = ()

    # Filled in by the registry from the plugin that registered the engine.
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None

    @functools.cached_property
    def presets_dir(self) -> Path | None:
        """presets/<key>/ beside the engine's package (a wheel's copy) or in the source checkout.

        An instance may set its own (tests point it at a temporary folder)."""
        module = sys.modules.get(type(self).__module__)
        return locate_presets(module.__file__, self.key) if module and getattr(module, "__file__", None) else None

    @property
    def all_modes(self) -> tuple[str, ...]:
        return (BASELINE_MODE, *self.modes) if self.modes else ()

    def params_model(self, task: str) -> type[ParamsBase]:
        return self.tasks[task]

    def output_kind(self, task: str) -> str:
        return self.tasks[task].output_kind

    def unsupported_reason(self, mode: str) -> str | None:
        """None for a mode this engine honours; otherwise why it does not."""
        if mode == BASELINE_MODE or mode in self.modes:
            return None
        return self.mode_unsupported.get(mode) or f"engine {self.key} has no speed mode {mode!r}"

    def problems(self) -> list[str]:
        """What is wrong with this engine's declaration (the registry skips an engine that has any)."""
        found = []
        if not isinstance(self.key, str) or not TASK_NAME.match(self.key):
            found.append(f"key {self.key!r} is not a lower-case name")
        if not self.tasks:
            found.append("it declares no tasks")
        for task, model in dict(self.tasks).items():
            if not isinstance(task, str) or not TASK_NAME.match(task):
                found.append(f"task {task!r} is not a lower-case name")
            if not (isinstance(model, type) and issubclass(model, ParamsBase)):
                found.append(f"task {task!r}: its params model must subclass codex_core.ParamsBase")
            elif model.output_kind not in OUTPUT_KINDS:
                found.append(f"task {task!r}: output_kind {model.output_kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
            elif getattr(model, "steps_rule", "floor") not in STEP_RULES:
                found.append(f"task {task!r}: steps_rule {model.steps_rule!r} is not one of {', '.join(STEP_RULES)}")
        if self.sampler_family not in (None, "discrete", "flow"):
            found.append(f"sampler_family {self.sampler_family!r} is not 'discrete', 'flow' or None")
        return found

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.key,
            "family": self.family,
            "tasks": list(self.tasks),
            "outputs": {task: self.output_kind(task) for task in self.tasks},
            "modes": list(self.all_modes),
            "sampler_family": self.sampler_family,
            "default_repo": self.default_repo,
            "tiny_model": self.tiny_version is not None,
            "variants": list(self.variants),
            "task_default_repos": dict(self.task_default_repos),
            "replaceable_components": list(self.replaceable_components),
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
        }

    # -- before loading (torch-free) --------------------------------------------------------------
    def detect_variant(self, folder: Path) -> str | None:
        """Which of ``variants`` a checkpoint folder holds, read from its configs; None if unknown."""
        return None

    def plan(self, task: str, request: dict[str, Any], context: PlanContext) -> Plan:
        """Preset layers and adjustments that depend on the request (speed modes use this)."""
        return Plan()

    # Engines that can tell their checkpoints from others' by their configs (``checkpoint_problem``);
    # they are the ones named when a folder fits another engine.
    recognises_checkpoints: ClassVar[bool] = False

    def checkpoint_problem(self, path: Path) -> str | None:
        """Why the model folder or single file is not a checkpoint of this engine, read from its configs or
        the file's header (no weights loaded); None if it is."""
        return None

    def checkpoint_tasks(self, path: Path) -> tuple[str, ...]:
        """The tasks a checkpoint of this engine serves, from its configs (no weights loaded). Default: every
        task; engines whose tasks have their own checkpoints (an instruction-editing model) say which."""
        return tuple(self.tasks)

    def file_problem(self, kind: str, path: Path) -> str | None:
        """Why this engine cannot use the model file or folder ``path`` of ``kind`` (a models-folder kind:
        checkpoints, diffusion_models, loras, vae, embeddings), from its header; None if it can.
        `codex models` asks every engine, to say which engines run each file."""
        if kind == "checkpoints" and self.recognises_checkpoints:
            return self.checkpoint_problem(path)
        return f"engine {self.key} does not use {kind.replace('_', ' ')} files"

    def component_problem(self, name: str, path: Path, source: "ModelSource") -> str | None:
        """Why the weight file at ``path`` cannot replace component ``name`` of ``source``; None if it can."""
        return None

    def check_request(self, task: str, params: ParamsBase, variant: str | None) -> list[str]:
        """Problems only the checkpoint variant reveals, as "field: message" lines (empty: fine)."""
        return []

    def check_with_checkpoint(self, task: str, params: ParamsBase, context: PlanContext) -> list[str]:
        """Problems only the checkpoint's own configs reveal, as "field: message" lines (empty: fine), e.g. a
        ControlNet of another width than its transformer. ``context.source()`` finds the checkpoint (reading no
        weights): call it only when the request needs it, so other requests find their model when they run."""
        return []

    # -- loading and running ------------------------------------------------------------------------
    def build_tiny(self, dest: Path) -> None:
        """Write a tiny randomly initialised model of the real architecture into ``dest``."""
        raise NotImplementedError(f"engine {self.key} has no tiny model")

    def load(self, source: "ModelSource", runtime: "Runtime") -> Any:
        """Load the model once; the result is cached per (engine, model, runtime) and passed to ``run``."""
        raise NotImplementedError

    def run(self, model: Any, job: Job) -> ImageOutput | VideoOutput:
        raise NotImplementedError

    def resolve_runtime(self, runtime: "Runtime") -> "Runtime":
        """The runtime on a concrete device. This base runs on the CPU only; engines on torch find GPUs."""
        from .errors import UsageError

        if runtime.device not in ("auto", "cpu"):
            raise UsageError(f"--device {runtime.device}: engine {self.key} runs on the CPU only", hint="drop --device")
        return runtime.on_device("cpu", self.gpu_dtype)

    def before_load(self, download: bool) -> None:
        """Set what the engine's libraries read from the environment, before a model is resolved or loaded
        (the diffusers kit: the Hugging Face hub offline unless ``download``)."""

    def find_repo(self, repo_id: str, download: bool, allow_pickle: bool) -> Path | None:
        """The local folder of a hub repo id (``--model ORG/NAME`` or ``default_repo``), fetched first when
        ``download``; None when it is not there. Engines whose models come from a hub implement it."""
        return None

    def repo_cache(self) -> str:
        """Where ``find_repo`` looks, as messages name it."""
        return f"engine {self.key}'s model sources (it takes no hub repo ids)"

    def reset_peak_memory(self, device: str) -> None:
        """Start measuring peak device memory for a run (engines on a GPU library implement it)."""

    def peak_memory_mb(self, device: str) -> float | None:
        """Peak device memory since ``reset_peak_memory``, in MiB (None: not measured on this device)."""
        return None

    def model_bytes(self, model: Any) -> int | None:
        """Bytes of weights a loaded model holds, for the model cache's byte bound (None: unknown)."""
        return None

    def prompt_tokens(self, task: str, params: ParamsBase) -> int | None:
        """At most how many tokens the text encoders will see for this request, before anything loads (a served
        job's cost limit, ``--max-prompt-tokens``); None when the engine bounds it itself (a fixed window)."""
        return None

    def runtime_problems(self, runtime: "Runtime") -> list[str]:
        """Run options this engine cannot honour (e.g. an attention backend for a model without them), said
        before anything loads; each line names the option."""
        return []

    def model_info(self, model: Any) -> dict[str, Any]:
        """Top-level info.json entries about how the loaded model is placed and run (e.g. ``memory_plan``);
        after the run, so a model that loads parts lazily reports them."""
        return {}

    def unload(self, model: Any) -> None:
        """Release what a loaded model holds beyond Python references (e.g. device memory)."""

    def ensure_tiny(self, dest: Path, progress: Progress) -> None:
        """Build the tiny model when it is missing or stale, atomically (``codex_core.tiny_models``)."""
        from .tiny_models import ensure

        ensure(self, dest, progress)
