"""ControlNets for the engines whose families have them in diffusers, declared as data (``ControlNets``).

An engine declares, on its class, ``controlnets = ControlNets(...)``: the ControlNet classes of its family,
the control pipeline of each task, the argument the control image goes in, the class that stacks several.
Its params carry ``codex_core.ControlFields`` for those tasks. The kit does the rest the same way for every
family:

- before loading (``control_problems``): each ``controls.N.model`` resolves (a path, or a name in the
  ``controlnet`` models folders) to a diffusers ControlNet folder whose config names one of the family's
  classes and fits the engine (``DiffusersEngine.controlnet_problem``); ``type`` only with a union model
  and one of its modes; start/end only where the pipeline takes them; the control image's size equals the
  output's unless the control says ``resize``;
- loading: each ControlNet is loaded once (safetensors, local files) onto the device and kept with the
  model (``DiffusersModel.controlnets``: the model cache counts its bytes, evicts it with the model);
- running (``control_view``): the task's control pipeline is derived from the base once with
  ``from_pipe``; each run takes a view of it (a shallow copy) and sets the run's ControlNet (or the
  family's multi-ControlNet of several) on the view only, so the cached pipelines never change and a
  run without controls is the plain pipeline's, pixel for pixel;
- arguments (``control_arguments``): images (preprocessed first where asked, saved beside the output),
  scales, start/end and union modes, a list when several stack.

This module's top imports no torch: engines declare ``ControlNets`` in modules `codex engines` imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from codex_core import UsageError, lookup_model_file, model_folders, user_path

from .configs import read_config

if TYPE_CHECKING:
    from codex_core import Job

CONTROLNET_KIND = "controlnet"  # the models-folder kind


@dataclass(frozen=True)
class ControlNets:
    """What an engine's family offers for ControlNets. Class names are diffusers', by name (nothing imported)."""

    # ControlNet model classes of this family, as a folder's config.json names them
    model_classes: tuple[str, ...]
    # task -> the control pipeline that runs it
    pipelines: Mapping[str, str]
    # the call argument of the control image: one name, or per task (SD's txt2img pipeline calls it "image")
    image_argument: str | Mapping[str, str] = "control_image"
    # the class that stacks several ControlNets (None: the family cannot stack them)
    multi_class: str | None = None
    # union models: their classes, the pipeline per task where a union model needs another one (SDXL), and
    # the mode index of each ``type`` (the model's control_mode argument)
    union_classes: tuple[str, ...] = ()
    union_pipelines: Mapping[str, str] = field(default_factory=dict)
    union_modes: Mapping[str, int] = field(default_factory=dict)
    # a config key that marks a union model of one of ``model_classes`` when it is set (not None): Flux's union
    # ControlNets are FluxControlNetModel with ``num_mode``, the same class as its single-mode ones
    union_config_key: str | None = None
    # whether the pipelines take control_guidance_start/end (Z-Image's do not)
    guidance_window: bool = True

    def image_argument_for(self, task: str) -> str:
        return self.image_argument if isinstance(self.image_argument, str) else self.image_argument[task]

    def is_union(self, class_name: str | None, config: Mapping[str, Any]) -> bool:
        """Whether a ControlNet (its class and config.json) is a union model: by class, or by the config key."""
        if class_name in self.union_classes:
            return True
        return self.union_config_key is not None and config.get(self.union_config_key) is not None


def controlnet_path(value: str, field_name: str) -> Path:
    """A ``controls.N.model`` value as a diffusers ControlNet folder: a path, else a name in the controlnet
    folders. A UsageError names the field."""
    path = user_path(value, field_name)
    if not path.exists():
        found = lookup_model_file(CONTROLNET_KIND, value, field_name)
        if found is None:
            folders = ", ".join(str(f) for f in model_folders(CONTROLNET_KIND)) or "none configured"
            raise UsageError(f"{field_name}: no such file or folder '{value}', and no ControlNet of that name in "
                             f"the controlnet folders ({folders})", hint="`codex models --kind controlnet`")
        path = found.path
    if path.is_file():
        folder = path.parent
        if path.suffix.lower() == ".safetensors" and (folder / "config.json").is_file():
            return folder  # diffusion_pytorch_model.safetensors of a diffusers folder
        raise UsageError(f"{field_name}: '{value}' is a single file; ControlNets load from a diffusers folder "
                         "(config.json and diffusion_pytorch_model.safetensors)",
                         hint="download the ControlNet's diffusers repository into the controlnet folder")
    if not (path / "config.json").is_file():
        raise UsageError(f"{field_name}: '{value}' is a folder without config.json (not a diffusers ControlNet)")
    return path


def control_problems(engine, task: str, params) -> list[str]:
    """Every ``controls`` problem as "field: message" lines, before anything loads (empty: fine)."""
    controls = getattr(params, "controls", None) or []
    if not controls:
        return []
    support = engine.controlnets
    if support is None or task not in support.pipelines:
        return [f"controls: engine {engine.key} has no ControlNet pipeline for {task}"
                + (f"; tasks with controls: {', '.join(support.pipelines)}" if support else "")]
    problems = []
    if len(controls) > 1 and support.multi_class is None:
        problems.append(f"controls: {len(controls)} given; engine {engine.key}'s pipelines take one ControlNet")
    size = engine.output_size_of(params)
    for index, spec in enumerate(controls):
        where = f"controls.{index}"
        try:
            folder = controlnet_path(spec.model, f"{where}.model")
        except UsageError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
            continue
        config = read_config(folder, "config.json")
        class_name = config.get("_class_name")
        allowed = (*support.model_classes, *support.union_classes)
        if class_name not in allowed:
            problems.append(f"{where}.model: {folder.name} is a {class_name or 'model of no named class'} "
                            f"ControlNet; engine {engine.key} takes {' or '.join(allowed)}")
            continue
        problem = engine.controlnet_problem(config)
        if problem:
            problems.append(f"{where}.model: {folder.name}: {problem}")
        union = support.is_union(class_name, config)
        # how many modes the model has, where its config says (Flux's num_mode)
        modes = config.get(support.union_config_key) if support.union_config_key else None
        if union and spec.type is None:
            problems.append(f"{where}.type: {folder.name} is a union ControlNet; say which mode: "
                            f"{', '.join(support.union_modes)}")
        elif union and spec.type not in support.union_modes:
            problems.append(f"{where}.type: got {spec.type!r}; {folder.name} has modes {', '.join(support.union_modes)}")
        elif union and modes is not None and support.union_modes[spec.type] >= modes:
            problems.append(f"{where}.type: {spec.type!r} is mode {support.union_modes[spec.type]}; {folder.name} has "
                            f"{modes} modes ({support.union_config_key})")
        elif not union and spec.type is not None:
            problems.append(f"{where}.type: {folder.name} is a single-mode ControlNet; leave type out")
        if not support.guidance_window and (spec.start, spec.end) != (0.0, 1.0):
            problems.append(f"{where}.start: engine {engine.key}'s ControlNet pipeline runs the control on every "
                            "step (it takes no start/end); leave start and end out")
        if size is not None and not spec.resize:
            from codex_core import image_size

            control_size = image_size(spec.image)
            if control_size is not None and tuple(control_size) != tuple(size):
                problems.append(f"{where}.image: it is {control_size[0]}x{control_size[1]}, the output "
                                f"{size[0]}x{size[1]}; give a control image of the output's size or set "
                                f"\"resize\": true")
    return problems


def control_fit_problems(engine, params, context) -> list[str]:
    """The ``controls`` that do not fit the run's checkpoint (``engine.controlnet_fit``: its configs against the
    ControlNet's, e.g. another text width), as "field: message" lines; configs only, nothing loads. The
    checkpoint is looked up (``context.source()``) only when the request has controls, and only a diffusers
    folder is compared (a single file's components are known when it loads)."""
    controls = getattr(params, "controls", None) or []
    support = engine.controlnets
    if not controls or support is None:
        return []
    folder = context.source().path
    if not folder.is_dir():
        return []
    problems = []
    for index, spec in enumerate(controls):
        try:
            control = controlnet_path(spec.model, f"controls.{index}.model")
        except UsageError:
            continue  # reported by control_problems
        config = read_config(control, "config.json")
        if config.get("_class_name") not in (*support.model_classes, *support.union_classes):
            continue
        problem = engine.controlnet_fit(config, folder)
        if problem:
            problems.append(f"controls.{index}.model: {control.name}: {problem}")
    return problems


def load_controlnet(model, folder: Path, support: ControlNets):
    """The ControlNet in ``folder``, loaded once per model (keyed by the folder's weights' path, size and
    mtime) onto the run's device in the run's dtype; safetensors only, local files only."""
    import diffusers

    from .devices import torch_dtype

    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise UsageError(f"{folder}: no .safetensors weights (pickle-based ControlNets are not loaded)")
    key = (str(folder.resolve()), tuple((w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights))
    if key not in model.controlnets:
        class_name = read_config(folder, "config.json")["_class_name"]
        cls = getattr(diffusers, class_name)
        module = cls.from_pretrained(str(folder), torch_dtype=torch_dtype(model.runtime), use_safetensors=True,
                                     local_files_only=True)
        module.to(model.runtime.device)
        module.eval()
        model.controlnets[key] = module
    return model.controlnets[key]


def control_view(engine, model, family, job: "Job"):
    """The run's view of the task's control pipeline, with the run's ControlNet(s) on the view only."""
    import copy

    import diffusers

    from .pipelines import build_scheduler, pipeline_class, scheduler_record

    support: ControlNets = engine.controlnets
    controls = job.params.controls
    folders = [controlnet_path(spec.model, f"controls.{i}.model") for i, spec in enumerate(controls)]
    modules = [load_controlnet(model, folder, support) for folder in folders]
    for index, (spec, folder) in enumerate(zip(controls, folders)):
        from codex_core import file_record

        weights = sorted(folder.glob("*.safetensors"))
        record = file_record(weights[0], job.progress.message) if len(weights) == 1 else {"path": str(folder)}
        job.files[f"controlnet:{index}"] = {**record, "folder": str(folder), "class": type(modules[index]).__name__}
    union = support.is_union(type(modules[0]).__name__, modules[0].config)
    name = support.union_pipelines.get(job.task) if union else None
    cls = pipeline_class(name or support.pipelines[job.task])
    cached = family.for_class(cls, controlnet=modules[0])
    view = copy.copy(cached)
    view.scheduler = build_scheduler(view.scheduler, job.scheduler, family.scheduler_config)
    job.scheduler_applied = scheduler_record(view.scheduler)
    if len(modules) > 1:
        view.controlnet = getattr(diffusers, support.multi_class)(modules)
    else:
        view.controlnet = modules[0]
    return view


def control_arguments(engine, job: "Job", size: tuple[int, int] | None) -> dict[str, Any]:
    """The control pipeline's arguments for the run's controls (a list per argument when several stack).

    Each control image is read at the output size (resized, and recorded, only where the control says
    ``resize``; the checks refused other sizes), preprocessed where asked (the result saved beside the
    output as ``control-N-<preprocessor>.png``), and recorded in ``info.notes.controls``."""
    from codex_core import run_preprocessor

    support: ControlNets = engine.controlnets
    controls = job.params.controls
    images, records = [], []
    for index, spec in enumerate(controls):
        image = job.input_image(f"controls.{index}.image", size if spec.resize else None, path=spec.image)
        record: dict[str, Any] = {"model": spec.model, "type": spec.type, "scale": spec.scale, "start": spec.start,
                                  "end": spec.end}
        if spec.preprocess is not None:
            settings = spec.preprocess_settings()
            image = run_preprocessor(spec.preprocess, image, settings, field=f"controls.{index}.preprocess")
            side = f"control-{index}-{spec.preprocess}".lower()
            job.side_images[side] = image
            record.update(preprocess=spec.preprocess, preprocess_params=settings, preprocessed_image=f"{side}.png")
        images.append(image)
        records.append(record)
    job.notes["controls"] = records
    several = len(controls) > 1

    def each(values):
        return list(values) if several else values[0]

    arguments = {support.image_argument_for(job.task): each(images),
                 "controlnet_conditioning_scale": each([spec.scale for spec in controls])}
    if support.guidance_window:
        arguments["control_guidance_start"] = each([spec.start for spec in controls])
        arguments["control_guidance_end"] = each([spec.end for spec in controls])
    if any(spec.type is not None for spec in controls):  # None for a single-mode ControlNet stacked with a union one
        arguments["control_mode"] = each([None if spec.type is None else support.union_modes[spec.type]
                                          for spec in controls])
    return arguments


def controls_bytes(model) -> int:
    tensors = [t for module in model.controlnets.values() for t in (*module.parameters(), *module.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors)
