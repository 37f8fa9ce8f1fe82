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


LORA_KEY_MARKERS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", ".alpha", "lora_te", "lora_unet")


def is_lora(shapes: Mapping[str, Any]) -> bool:
    """Whether tensor names are a LoRA's (kohya/A1111, PEFT/diffusers and the community layouts)."""
    return bool(shapes) and sum(any(m in key for m in LORA_KEY_MARKERS) for key in shapes) >= len(shapes) / 2


def file_keys(path: Path) -> set[str] | None:
    """The tensor names of a safetensors or GGUF file (None for a pickle file: not opened to look)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from codex_core import read_safetensors_header

        return {key for key in read_safetensors_header(path) if key != "__metadata__"}
    if suffix == ".gguf":
        try:
            from gguf import GGUFReader

            return {tensor.name for tensor in GGUFReader(str(path)).tensors}
        except (ValueError, OSError, KeyError) as exc:
            raise UsageError(f"{path}: not a readable GGUF file ({exc})") from None
    return None


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
        self._vae: tuple[tuple, Any] | None = None  # the last request's own VAE: (path, mtime, size), module
        # per checkpoint folder: how it was placed and tuned (info.memory_plan, compile, attention)
        self.placed: dict[Path, dict[str, Any]] = {}
        self.last_folder: Path | None = None
        # ControlNets the runs asked for, kept with the model (controlnets.load_controlnet): counted in nbytes
        self.controlnets: dict[tuple, Any] = {}
        # IP-Adapters and image encoders the runs asked for (ip_adapters.load_adapters/load_encoder): counted too
        self.ip_adapters: dict[tuple, Any] = {}
        if len(set(self.folders.values())) == 1:
            self._load(next(iter(self.folders.values())))

    def _load(self, folder: Path):
        from .pipelines import PipelineFamily, load_pipeline, pipeline_class

        from .memory import placement

        if self.engine.context_parallel is not None:  # the tiny model is built only now: its configs, checked here
            from .context_parallel import heads_problems

            problems = heads_problems(self.engine, self.config_folder() if self.source.kind == "file" else folder,
                                      self.runtime)
            if problems:
                raise UsageError("; ".join(problems))
        served = [task for task, path in self.folders.items() if path == folder]
        cls, dtypes, options = (pipeline_class(self.engine.pipelines[served[0]]), self.engine.component_dtypes(self.runtime),
                                dict(self.engine.load_options))
        # --offload auto / --vae-decode auto: decided from the sizes on disk, before any weight is read
        runtime, memory_plan = placement(self.engine, folder, self.config_folder(), self.source.kind == "file",
                                         self.runtime, dict(self.source.components))
        if self.source.kind == "file":
            from .single_file import load_single_file

            base = load_single_file(cls, folder, self.config_folder(), self.source.label, runtime, dtypes,
                                    **options)
        else:
            if self.source.components:
                from .single_file import load_component

                options.update({name: load_component(name, path, folder, runtime)
                                for name, path in self.source.components})
            base = load_pipeline(cls, folder, self.source.label, runtime, dtypes, **options)
        self.engine.check_model(base, self.source)
        from .pipelines import store_weights, tune_denoisers

        self.families[folder] = PipelineFamily(base, runtime, store_weights(base, self.engine.denoisers, runtime))
        self.placed[folder] = {**({"memory_plan": memory_plan.as_info()} if memory_plan else {}),
                               **tune_denoisers(base, self.engine.denoisers, runtime)}
        if runtime.parallel != "off":  # after the attention backend: the split attention runs through it
            from .parallel_ranks import split_denoisers

            self.placed[folder]["parallel"] = split_denoisers(self.engine, base, runtime)
        self.last_folder = folder
        return self.families[folder]

    def family(self, task: str, job: Job):
        """The pipeline family that serves ``task``, loading its checkpoint on first use."""
        if task not in self.folders:
            raise UsageError(*self.engine.missing_task_checkpoint(task, self.source, self.folders))
        folder = self.last_folder = self.folders[task]
        if folder not in self.families:
            started = time.perf_counter()
            self._load(folder)
            job.timer.add("load", time.perf_counter() - started)  # the core timed only the lookup
        return self.families[folder]

    def config_folder(self) -> Path:
        """The diffusers folder whose configs describe this model: the folder itself, or for a single file
        ``--config`` or the folder the engine ships for the file's variant."""
        if self.source.kind != "file":
            return self.source.path
        return self.source.config or self.engine.single_file_config(self.engine.file_variant(self.source.path))

    def vae(self, job: Job):
        """The request's ``vae``, loaded once and kept for the next run that asks for it (one at a time).

        A file in A1111/original or diffusers layout loads with ``from_single_file`` against the
        checkpoint's own VAE config; a folder with ``from_pretrained``. Recorded in ``job.files``."""
        import torch
        from codex_core import file_record

        from .devices import torch_dtype
        from .params import vae_path
        from .single_file import LOAD_FAILURES

        path = vae_path(job.params.vae).resolve()
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        job.files["vae"] = file_record(path, job.progress.message)
        if self._vae is not None and self._vae[0] == key:
            return self._vae[1]
        base = next(iter(self.families.values())).base
        config = self.config_folder()
        dtypes = self.engine.component_dtypes(self.runtime) or {}
        dtype = getattr(torch, dtypes["vae"]) if "vae" in dtypes else torch_dtype(self.runtime)
        cls = type(base.vae)
        started = time.perf_counter()
        try:
            if path.is_dir():
                vae = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
            else:
                vae = cls.from_single_file(str(path), config=str(config), subfolder="vae", torch_dtype=dtype,
                                           local_files_only=True)
        except LOAD_FAILURES as exc:
            raise UsageError(f"vae: {path} is not a {cls.__name__} this model can use: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300]}") from None
        vae.to(self.runtime.device)
        placed = next(iter(self.families.values())).runtime  # the VAE decodes as the model's own does
        if "tiled" in placed.vae and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if "sliced" in placed.vae and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        job.timer.add("load", time.perf_counter() - started)
        self._vae = (key, vae)
        return vae

    def nbytes(self) -> int:
        from .controlnets import controls_bytes
        from .ip_adapters import references_bytes

        return (sum(family.nbytes() for family in self.families.values()) + controls_bytes(self)
                + references_bytes(self))


class DiffusersEngine(Engine):
    """Base class of every engine that runs diffusers pipelines. See the module docstring."""

    # task -> diffusers pipeline class name; the first task's class loads the checkpoint
    pipelines: ClassVar[Mapping[str, str]] = {}
    # request field -> pipeline argument, for an engine's own fields (see CANONICAL_ARGUMENTS); None: a field
    # the engine applies itself, not a call argument (e.g. a guidance scale that lives in a guider component)
    arguments: ClassVar[Mapping[str, str | None]] = {}
    # canonical fields the pipeline has no argument for, because its inputs decide them (field -> why), e.g.
    # wan_animate's num_frames: the pose video's length. Validated and recorded, never passed.
    unpassed_fields: ClassVar[Mapping[str, str]] = {}
    # pipeline attributes whose forward passes are the denoising stage (timed, progress)
    denoisers: ClassVar[tuple[str, ...]] = ("unet",)
    # the pipeline method that encodes the conditioning (timed as text_encode)
    encoder: ClassVar[str] = "encode_prompt"
    # extra from_pretrained keyword arguments (e.g. components not to load)
    load_options: ClassVar[Mapping[str, Any]] = {}
    # ControlNets of the family (``controlnets.ControlNets``): the tasks whose params carry ControlFields
    controlnets: ClassVar[Any] = None
    # IP-Adapters of the family (``ip_adapters.IPAdapters``): the tasks whose params carry ReferenceImageFields.
    # An engine whose params take reference_images without it handles them itself (e.g. another image-prompt path)
    ip_adapters: ClassVar[Any] = None
    # context parallelism (``context_parallel.ContextParallel``): which denoisers `--parallel` splits and the cp
    # plans the kit supplies where diffusers' model class has none; None: the engine refuses --parallel
    context_parallel: ClassVar[Any] = None
    # the latent-to-RGB coefficients of its VAE, for live previews (a name in latent_rgb.FORMATS; None: none)
    latent_format: ClassVar[str | None] = None

    # what a diffusers folder holds: model_index.json (a pipeline) or, for one component, config.json
    model_marker = "model_index.json"
    folder_markers = ("model_index.json", "config.json")
    folder_format = "diffusers"
    libraries = ("torch", "diffusers", "transformers")

    # -- loading -----------------------------------------------------------------------------------
    def before_load(self, download: bool) -> None:
        from .hub import set_environment

        set_environment(download)

    def find_repo(self, repo_id: str, download: bool, allow_pickle: bool) -> Path | None:
        from .hub import find_repo

        return find_repo(repo_id, download, allow_pickle)

    def repo_cache(self) -> str:
        from .hub import cache_dir

        return f"the local Hugging Face cache ({cache_dir()})"

    def load(self, source: ModelSource, runtime: Runtime) -> DiffusersModel:
        return DiffusersModel(self, source, runtime)

    def task_folders(self, source: ModelSource) -> dict[str, Path]:
        """The checkpoint folder (or single file) of each task a source serves. Default: one for every task;
        a single file serves the tasks of its variant (``single_file_tasks``)."""
        if source.kind == "file":
            return {task: source.path for task in self.single_file_tasks(self.file_variant(source.path))}
        return {task: source.path for task in self.pipelines}

    def checkpoint_tasks(self, path: Path) -> tuple[str, ...]:
        from codex_core import ModelSource

        kind = "file" if path.is_file() else "folder"
        try:
            return tuple(self.task_folders(ModelSource(kind, path, str(path))))
        except (CodexError, OSError, ValueError):  # configs that do not say: every task (a run will tell)
            return tuple(self.tasks)

    def missing_task_checkpoint(self, task: str, source: ModelSource, folders: dict[str, Path]) -> tuple[str, str]:
        """(message, hint) when ``source`` serves other tasks than ``task``."""
        served = next(iter(folders))
        slot = f"{self.key}_{task}" if task in self.task_default_repos else self.key  # as codex_core.sources looks
        env = f"CODEX_MODEL_{slot.upper()}"
        example = self.task_default_repos.get(task) or self.default_repo
        article = "an" if served[0] in "aeiou" else "a"
        return (f"{source.label} is {article} {served} checkpoint ({self.pipelines[served]}); {task} needs a "
                f"{self.pipelines[task]} checkpoint" + (f" such as {example}" if example else ""),
                f"pass --model with a {self.pipelines[task]} folder, or leave --model out to use the {task} "
                f"checkpoint slot ({env})")

    recognises_checkpoints = True

    # -- single files ----------------------------------------------------------------------------------
    # An engine that loads single-file checkpoints overrides ``single_file_variant`` (which checkpoint
    # kind a file's tensors are), ``single_file_config`` (the diffusers config folder it ships for
    # that variant) and, where a variant serves fewer tasks, ``single_file_tasks``.
    # ``component_markers``: for each replaceable component, key fragments that mark a file of it.
    component_markers: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    loads_single_files: ClassVar[bool] = False

    def single_file_variant(self, shapes: dict[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
        """(variant, None) when a single-file checkpoint with these tensors is this engine's; (None, why) if not."""
        hint = (f"; for a transformer-only file use --component {self.replaceable_components[0]}=FILE with "
                "--model BASE_FOLDER" if self.replaceable_components else "")
        return None, f"engine {self.key} loads diffusers-format folders, not single-file checkpoints{hint}"

    def single_file_config(self, variant: str) -> Path:
        raise NotImplementedError(f"engine {self.key} ships no single-file configs")

    def single_file_tasks(self, variant: str | None) -> tuple[str, ...]:
        return tuple(self.pipelines)

    def file_variant(self, path: Path) -> str | None:
        """The variant of a single-file checkpoint (None for a pickle file, which is not opened to look)."""
        from codex_core import read_safetensors_header, tensor_shapes

        if path.suffix.lower() != ".safetensors":
            return None
        return self.single_file_variant(tensor_shapes(read_safetensors_header(path)))[0]

    def _file_checkpoint_problem(self, path: Path) -> str | None:
        from codex_core import PICKLE_SUFFIXES, read_safetensors_header, tensor_shapes

        suffix = path.suffix.lower()
        if suffix == ".gguf" or suffix in PICKLE_SUFFIXES:
            if suffix in PICKLE_SUFFIXES and self.loads_single_files:
                return None  # a pickle checkpoint is not opened before --allow-pickle loads it
            return (f"a {suffix} file holds one component, not a whole checkpoint; "
                    + (f"pass it as --component {self.replaceable_components[0]}=FILE with --model BASE_FOLDER"
                       if self.replaceable_components else f"engine {self.key} takes no component files"))
        shapes = tensor_shapes(read_safetensors_header(path))
        if is_lora(shapes):
            return "it is a LoRA, not a checkpoint; pass it in the request's loras: [{\"path\": ...}]"
        return self.single_file_variant(shapes)[1]

    def file_problem(self, kind: str, path: Path) -> str | None:
        if kind == "checkpoints":
            return self.checkpoint_problem(path)
        if kind == "diffusion_models":
            for name in self.replaceable_components:
                if self.component_problem(name, path, None) is None:
                    return None
            return f"not a {' or '.join(self.replaceable_components) or 'component'} file of engine {self.key}"
        if kind == "loras" and path.is_file():
            return self.lora_problem(path)
        if kind == "ipadapter":
            from .ip_adapters import adapter_file_problem

            return adapter_file_problem(self, path)
        return super().file_problem(kind, path)

    def component_problem(self, name: str, path: Path, source: ModelSource | None) -> str | None:
        """A component file whose tensor names carry none of the component's markers is another model's."""
        keys = file_keys(path)
        if keys and is_lora(dict.fromkeys(keys)):
            return "it is a LoRA, not a component; pass it in the request's loras: [{\"path\": ...}]"
        markers = self.component_markers.get(name, ())
        if not markers or keys is None:
            return None
        # original files prefix their keys (model.diffusion_model., diffusion_model.); compare without it
        stripped = {key.removeprefix("model.").removeprefix("diffusion_model.") for key in keys}
        if any(key.startswith(marker) for key in stripped for marker in markers):
            return None
        return (f"its tensors are not a {self.key} {name} (none named like {markers[0]}...; found e.g. "
                f"{', '.join(sorted(keys)[:3])})")

    # LoRA files of this family: key prefixes (kohya, PEFT, community layouts) and, for UNet families,
    # the cross-attention context widths a LoRA's attn2 to_k input must have (SD 1.x 768, SDXL 2048).
    lora_prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "diffusion_model.", "lora_transformer_")
    lora_context_dims: ClassVar[tuple[int, ...]] = ()
    # where a request's LoRA may go besides the default (``loras[].into``): e.g. Wan A14B's two experts
    lora_targets: ClassVar[tuple[str, ...]] = ()
    # MagCache ratios of the engine's checkpoints, for a ``cache`` of type magcache that brings none: a
    # tuple, or "module:name" of one (imported when a run needs it, so declaring imports nothing)
    mag_ratios: ClassVar[tuple[float, ...] | str | None] = None

    def check_request(self, task: str, params, variant: str | None) -> list[str]:
        problems = list(super().check_request(task, params, variant))
        for index, ref in enumerate(getattr(params, "loras", None) or []):
            if ref.into is not None and ref.into not in self.lora_targets:
                allowed = (f"one of {', '.join(self.lora_targets)}" if self.lora_targets else
                           f"nothing: engine {self.key} has one denoiser; leave it out")
                problems.append(f"loras.{index}.into: got {ref.into!r}; allowed: {allowed}")
        from .caches import cache_problem
        from .controlnets import control_problems

        problems += control_problems(self, task, params)
        from .ip_adapters import reference_problems

        problems += reference_problems(self, task, params)
        problem = cache_problem(self, task, params)
        return problems + [problem] if problem else problems

    def controlnet_problem(self, config: dict[str, Any]) -> str | None:
        """Why a ControlNet of one of the family's classes (its config.json) does not fit this engine's models,
        e.g. an SD 1.5 ControlNet (cross-attention 768) for SDXL (2048); None: it fits."""
        return None

    def controlnet_file_problem(self, shapes: dict[str, tuple[int, ...]]) -> str | None:
        """Why a single ControlNet file (its tensors' names and shapes) does not fit this engine; None: it fits.
        Asked only where ``controlnets.single_file_class`` is set."""
        return None

    def controlnet_file_config(self, base, shapes: dict[str, tuple[int, ...]], field: str) -> dict[str, Any]:
        """The diffusers config a single ControlNet file loads with (``from_single_file``), from its tensors and
        the run's base pipeline; a UsageError naming ``field`` when it cannot fit that model."""
        raise NotImplementedError(f"engine {self.key} loads no single ControlNet files")
    def controlnet_fit(self, config: dict[str, Any], folder: Path) -> str | None:
        """Why a ControlNet (its config.json) does not fit the checkpoint in ``folder`` (a diffusers folder: its
        configs, no weights), e.g. another text width than its transformer's; None: it fits."""
        return None

    def check_with_checkpoint(self, task: str, params, context) -> list[str]:
        from .controlnets import control_fit_problems

        return control_fit_problems(self, params, context) + self.parallel_problems(task, params, context)

    def parallel_problems(self, task: str, params, context) -> list[str]:
        """--parallel against the request (fields it refuses) and the checkpoint's configs (head counts Ulysses
        cannot split: a UsageError naming --parallel), before anything loads."""
        runtime = getattr(context, "runtime", None)
        if runtime is None or runtime.parallel == "off" or self.context_parallel is None:
            return []
        from .context_parallel import heads_problems, request_problems

        source = context.source()
        if source.kind == "file":
            folder = source.config or self.single_file_config(self.file_variant(source.path))
        else:
            folder = self.task_folders(source).get(task, source.path)
        problems = heads_problems(self, folder, runtime)  # a tiny model not built yet: checked as it loads
        if problems:
            raise UsageError("; ".join(problems))
        return request_problems(self, params, runtime)

    def lora_problem(self, path: Path) -> str | None:
        """Why a LoRA file is not for this engine's family, from its tensor names and shapes (for listings:
        a run loads it and reports what does not fit)."""
        if not self.supports_loras():
            return f"engine {self.key} takes no LoRAs"
        if path.suffix.lower() != ".safetensors":
            return "not a .safetensors LoRA"
        from codex_core import read_safetensors_header, tensor_shapes

        shapes = tensor_shapes(read_safetensors_header(path, "lora"))
        if not is_lora(shapes):
            return "not a LoRA file"
        if not any(key.startswith(self.lora_prefixes) for key in shapes):
            return f"its keys are not a {self.family} LoRA's (e.g. {sorted(shapes)[0]})"
        widths = {shape[1] for key, shape in shapes.items() if len(shape) == 2 and "attn2" in key
                  and ("to_k" in key) and any(m in key for m in ("lora_down", "lora_A", "lora.down"))}
        if self.lora_context_dims and widths and not widths & set(self.lora_context_dims):
            return (f"its cross-attention inputs are {sorted(widths)} wide; {self.key} models take "
                    f"{', '.join(map(str, self.lora_context_dims))}")
        return None

    def supports_loras(self) -> bool:
        return any("loras" in model.model_fields for model in self.tasks.values())

    def checkpoint_problem(self, folder: Path) -> str | None:
        """A folder whose model_index.json names none of this engine's pipelines is another family's;
        ``config_problem`` refines it (variants of one pipeline class). A single file: its header."""
        if folder.is_file():
            return self._file_checkpoint_problem(folder)
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

        runtime = resolve_runtime(runtime, self.gpu_dtype)
        if runtime.parallel != "off":  # the ranks present checked, each rank on its own GPU
            from .parallel_ranks import rank_runtime

            runtime = rank_runtime(runtime)
        return runtime

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

    def runtime_problems(self, runtime: Runtime) -> list[str]:
        # diffusers' UNets (SD, SVD) keep their own attention processors: only the transformer models route
        # attention through the backends set_attention_backend chooses
        problems = []
        if runtime.attention != "default" and "unet" in self.denoisers:
            problems.append(f"--attention {runtime.attention}: engine {self.key}'s UNet does not take an attention "
                            "backend (only the transformer engines do); drop --attention")
        if runtime.parallel != "off" and self.context_parallel is None:
            from codex_core import installed_engines

            takers = sorted(key for key, engine in installed_engines().items()
                            if getattr(engine, "context_parallel", None) is not None)
            problems.append(f"--parallel {runtime.parallel}: engine {self.key} has no context-parallel plan (its "
                            f"denoiser cannot be split across ranks); engines that take --parallel: "
                            f"{', '.join(takers) or 'none installed'}; drop --parallel")
        if runtime.weights == "int8":
            import importlib.util

            if importlib.util.find_spec("torchao") is None:
                problems.append("--weights int8 needs torchao, which is not installed: "
                                "pip install 'codex-diffusers[int8]'")
        return problems

    def model_info(self, model: DiffusersModel) -> dict[str, Any]:
        """How the run's checkpoint folder was placed and tuned: ``memory_plan`` (with --offload/--vae-decode
        auto), ``compile`` and ``attention`` (what each reached)."""
        return dict(model.placed.get(model.last_folder, {}))

    def unload(self, model: DiffusersModel) -> None:
        import torch

        model.families.clear()
        model.controlnets.clear()
        model.ip_adapters.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- running ---------------------------------------------------------------------------------------
    def run(self, model: DiffusersModel, job: Job) -> ImageOutput | VideoOutput:
        from .pipelines import call, pipeline_class
        from .previews import previewer_for

        family = model.family(job.task, job)
        if family.runtime.parallel != "off":
            from .parallel_ranks import agree_on_seeds

            agree_on_seeds(job)
        if getattr(job.params, "controls", None):
            from .controlnets import control_view

            pipe = control_view(self, model, family, job)
        else:
            pipe = family.view(pipeline_class(self.pipelines[job.task]), job.scheduler, job)
        if getattr(job.params, "vae", None):  # on this run's view only: the cached pipeline keeps its own
            pipe.vae = model.vae(job)
        self.prepare_view(pipe, job)
        # LoRAs (text-encoder parts included) and embeddings are in place before the prompt is encoded,
        # which may happen in pipeline_arguments (A1111 prompts through compel)
        from .caches import step_cache
        from .ip_adapters import references_for_run

        with self.run_context(pipe, job), references_for_run(self, model, pipe, job), step_cache(self, pipe, job):
            arguments = self.pipeline_arguments(job, pipe)
            self.note_truncation(job, pipe, arguments)
            result = call(pipe, job, denoisers=self.denoisers, encoder=self.encoder,
                          previewer=previewer_for(self, pipe, job), **arguments)
        return self.output(result, job, arguments)

    def preview_latents(self, pipe, latents, job: Job):
        """The first image's latents as ``[C, h, w]`` for a preview, from what the pipeline's step callback holds:
        ``[B, C, h, w]`` (images) or ``[B, C, F, h, w]`` (videos: the newest frame). An engine whose pipeline packs
        its latents (or orders them otherwise) unpacks them here; None: no preview of these."""
        if latents.ndim == 4:
            return latents[0]
        if latents.ndim == 5:
            return latents[0, :, -1]
        return None

    def prepare_view(self, pipe, job: Job) -> None:
        """Set per-run state on the run's own view of the pipeline (e.g. ``register_to_config``)."""

    def run_context(self, pipe, job: Job) -> AbstractContextManager:
        """A context the pipeline call runs in: the run's LoRAs (``run_loras``) loaded, then undone exactly."""
        loras = self.run_loras(job)
        if not loras:
            return nullcontext()
        from .lora import loras_for_run

        # info.notes says the LoRAs were undone: on the speed mode's own note when its LoRA is among them
        state = job.notes["mode_lora"] if "mode_lora" in job.notes else job.notes.setdefault(
            "loras", {"count": len(loras), "unloaded_after_run": False})
        return loras_for_run(pipe, loras, state)

    def run_loras(self, job: Job) -> list:
        """The LoRAs of this run (``lora.RunLora``): the request's ``loras`` field, each recorded in
        ``job.files`` (path, sha256, A1111's hash) with its scale."""
        from codex_core import file_record

        from .lora import RunLora

        loras = []
        for index, ref in enumerate(getattr(job.params, "loras", None) or []):
            path = ref.file()
            loras.append(RunLora(f"loras[{index}]", path, ref.scale, ref.into))
            job.files[f"lora:{ref.label()}"] = {**file_record(path, job.progress.message), "scale": ref.scale}
        return loras

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
          loaded at that size; an edit's ``images`` go as ``image`` at their own sizes (``edit_images``),
          with width/height only when the request gave them;
        - ``batch_size`` is ``num_images_per_prompt`` or ``num_videos_per_prompt``;
        - ``output_type="pil"`` where the pipeline takes it; then ``extra_arguments``.
        """
        from .pipelines import accepted_arguments

        params, fields = job.params, type(job.params).model_fields
        accepted = accepted_arguments(pipe)
        arguments = {argument: getattr(params, field)
                     for field, argument in {**CANONICAL_ARGUMENTS, **self.arguments}.items()
                     if field in fields and field not in self.unpassed_fields and argument is not None}
        if arguments.get("negative_prompt") == "":
            del arguments["negative_prompt"]
        if "true_cfg" in fields:
            arguments["true_cfg_scale"] = params.true_cfg
            arguments["negative_prompt"] = params.negative_prompt if params.true_cfg > 1.0 else None
        size = self.output_size(job)
        if "images" in fields:  # edit: the size only when the request gave one (the pipeline's own rule otherwise)
            arguments["image"] = self.edit_images(job)
            size = (params.width, params.height) if params.width is not None else None
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
        if getattr(params, "controls", None):
            from .controlnets import call_arguments_for_control, control_arguments

            arguments.update(control_arguments(self, job, self.output_size(job)))
            arguments = call_arguments_for_control(self, job.task, arguments)
        if self.ip_adapters is not None and getattr(params, "reference_images", None):
            from .ip_adapters import reference_arguments

            arguments.update(reference_arguments(job))
        arguments.update(self.extra_arguments(job, pipe))
        # None for an argument the pipeline does not take: left out (e.g. an init image that a ControlNet
        # inpainting pipeline, which denoises from noise, has no argument for; extra_arguments says so)
        arguments = {name: value for name, value in arguments.items() if value is not None or name in accepted}
        unknown = sorted(set(arguments) - accepted)
        if unknown:  # a wiring bug in the engine, not a user error: say exactly what
            raise CodexError(f"engine {self.key}: {type(pipe).__name__}.__call__ takes no {', '.join(unknown)}")
        return arguments

    def edit_images(self, job: Job):
        """An edit's reference images at their own sizes (the pipeline resizes them by its rule): a list when the
        engine takes several, else the one image. Records ``notes.edit_size``: the output size and why."""
        params = job.params
        images = [job.input_image(f"images.{index}", None, path=path) for index, path in enumerate(params.images)]
        width, height, rule = params.edit_size(images[0].size)
        job.notes["edit_size"] = {"width": width, "height": height, "rule": rule}
        return images if params.max_images > 1 else images[0]

    def output_size(self, job: Job) -> tuple[int, int] | None:
        """(width, height) of the output: ``params.target_size()`` (init-image tasks) or width x height."""
        return self.output_size_of(job.params)

    def output_size_of(self, params) -> tuple[int, int] | None:
        """``output_size`` from the validated params alone (before loading: the control images' checks)."""
        if hasattr(params, "target_size"):
            return params.target_size()
        return (params.width, params.height) if "width" in type(params).model_fields else None

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
