"""ControlNets for the engines whose families have them in diffusers, declared as data (``ControlNets``).

An engine declares, on its class, ``controlnets = ControlNets(...)``: the ControlNet classes of its family,
the control pipeline of each task, the argument the control image goes in, the class that stacks several.
Its params carry ``codex_core.ControlFields`` for those tasks. The kit does the rest the same way for every
family:

- before loading (``control_problems``): each ``controls.N.model`` resolves (a path, or a name in the
  ``controlnet`` models folders) to a diffusers ControlNet folder whose config names one of the family's
  classes and fits the engine (``DiffusersEngine.controlnet_problem``), or, where the family loads them
  (``single_file_class``), to a single .safetensors file whose tensors fit (``controlnet_file_problem``);
  ``type`` only with a union model and one of its modes; start < end where the pipeline takes them (none
  elsewhere); union and single-mode models not mixed; the control image's size equals the output's unless
  the control says ``resize``;
- loading: each ControlNet is loaded once (safetensors, local files; a single file against the config the
  engine derives, ``controlnet_file_config``) onto the device and kept with the model
  (``DiffusersModel.controlnets``: the model cache counts its bytes, evicts it with the model);
- running (``control_view``): the task's control pipeline (a union model's, for union models) is derived
  from the base once with ``from_pipe``; each run takes a view of it (a shallow copy) and sets the run's
  ControlNet on the view only (``stacked``: one model, the family's multi-ControlNet of several, or one
  union model that takes several controls itself), so the cached pipelines never change and a run without
  controls is the plain pipeline's, pixel for pixel;
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
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # the file from_pretrained reads (sharded: its index)


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
    # the union pipelines' control image argument where it differs from ``image_argument`` (SDXL's union
    # txt2img pipeline calls it "control_image", its single-mode one "image")
    union_image_argument: str | Mapping[str, str] | None = None
    # the class that stacks several union models of different folders (controls on one union model go to that
    # one model as lists: its modes fuse inside it); None: controls must share one union model
    multi_union_class: str | None = None
    # the union model's config key that counts its modes (a model trained on fewer modes than ``union_modes``
    # lists, e.g. xinsir's union model (6) against its ProMax (8, with tile and repaint))
    union_mode_count: str | None = None
    # the class single ControlNet files (A1111's models/ControlNet) load as, with ``from_single_file`` and a config
    # the engine derives from the file's tensors and its base model (``DiffusersEngine.controlnet_file_config``);
    # None: only diffusers folders
    single_file_class: str | None = None
    # a config key that marks a union model of one of ``model_classes`` when it is set (not None): Flux's union
    # ControlNets are FluxControlNetModel with ``num_mode``, the same class as its single-mode ones
    union_config_key: str | None = None
    # whether the pipelines take control_guidance_start/end (Z-Image's do not)
    guidance_window: bool = True
    # the multi class runs ONE ControlNet on several control images (Qwen-Image's multi-ControlNet refuses
    # two different ControlNets): several controls must then name the same ControlNet
    stacks_one_model: bool = False
    # the ControlNet class's classmethod that joins a loaded ControlNet to the base transformer, for
    # ControlNets that borrow the transformer's embedders and refiners (Z-Image's: from_transformer(cn, tf));
    # applied before each run, since the derived pipeline joins only the ControlNet it was built with
    attach: str | None = None
    # task -> {base call argument: its name in the control pipeline, or None where that pipeline takes none};
    # e.g. Qwen-Image's ControlNet inpainting takes the mask as control_mask and no init image or strength
    call_arguments: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    # task -> {field: the only value allowed}: fields whose argument the control pipeline does not take, so
    # it behaves as at that value (an inpainting ControlNet pipeline that repaints from noise: strength 1.0)
    fixed_fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def image_argument_for(self, task: str, union: bool = False) -> str:
        argument = self.union_image_argument if union and self.union_image_argument is not None else self.image_argument
        return argument if isinstance(argument, str) else argument[task]

    @property
    def fuses_union(self) -> bool:
        """Whether union models run on pipelines of their own that fuse several modes inside one model (SDXL's:
        one run takes union models only, several controls on one union model go to it as lists); else (Flux) a
        union model stacks in the multi class like any other, each control with its mode or None."""
        return bool(self.union_pipelines)

    def is_union(self, class_name: str | None, config: Mapping[str, Any]) -> bool:
        """Whether a ControlNet (its class and config.json) is a union model: by class, or by the config key."""
        if class_name in self.union_classes:
            return True
        return self.union_config_key is not None and config.get(self.union_config_key) is not None


def controlnet_path(value: str, field_name: str, single_files: bool = False) -> Path:
    """A ``controls.N.model`` value as a diffusers ControlNet folder (``single_files``: or a .safetensors file of
    its own): a path, else a name in the controlnet folders. A UsageError names the field."""
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
        if single_files and path.suffix.lower() == ".safetensors":
            return path
        if single_files:
            raise UsageError(f"{field_name}: '{value}' is not a .safetensors file (pickle ControlNets, .pth/.ckpt, "
                             "are not loaded)", hint="use its .safetensors release, or the diffusers folder")
        raise UsageError(f"{field_name}: '{value}' is a single file; ControlNets load from a diffusers folder "
                         "(config.json and diffusion_pytorch_model.safetensors)",
                         hint="download the ControlNet's diffusers repository into the controlnet folder")
    if not (path / "config.json").is_file():
        raise UsageError(f"{field_name}: '{value}' is a folder without config.json (not a diffusers ControlNet)")
    return path


def weights_file(folder: Path) -> Path | None:
    """The weights ``from_pretrained`` reads in a diffusers ControlNet folder (sharded: their index), or None. A
    folder may hold others beside it (xinsir's union repository: its ProMax weights), which it does not read."""
    return next((folder / name for name in (WEIGHTS_NAME, f"{WEIGHTS_NAME}.index.json") if (folder / name).is_file()),
                None)


def controlnet_class(config: dict[str, Any], support: ControlNets) -> str | None:
    """The class of a ControlNet folder: the one its config names, except that a config which counts union modes
    is a union model whatever class it names (a union model saved under the single-mode class's name)."""
    name = config.get("_class_name")
    if (name in support.model_classes and support.union_classes and support.union_mode_count
            and support.union_mode_count in config):
        return support.union_classes[0]
    return name


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
    for name, allowed_value in support.fixed_fields.get(task, {}).items():
        value = getattr(params, name, allowed_value)
        if value != allowed_value:
            problems.append(f"{name}: got {value!r}; with controls, {task} runs {support.pipelines[task]}, which "
                            f"takes no {name} (it runs as at {allowed_value!r}): set {name} to {allowed_value!r}")
    first_folder = None
    size = engine.output_size_of(params)
    kinds: dict[bool, list[str]] = {True: [], False: []}  # the controls on union / single-mode models
    union_folders = set()
    for index, spec in enumerate(controls):
        where = f"controls.{index}"
        try:
            found = controlnet_path(spec.model, f"{where}.model", support.single_file_class is not None)
            if found.is_file():  # a single file: a single-mode ControlNet, checked by its tensors
                kinds[False].append(where)
                problem = file_problem(engine, found, spec, where)
                problems += [problem] if problem else []
            else:
                problems += folder_problems(engine, support, found, spec, where, kinds, union_folders)
        except UsageError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
            continue
        if support.stacks_one_model and len(controls) > 1:
            first_folder = first_folder or found.resolve()
            if found.resolve() != first_folder:
                problems.append(f"{where}.model: {found.name} differs from controls.0's; engine {engine.key} "
                                f"stacks several control images on one ControlNet ({support.multi_class} runs a "
                                "single, union ControlNet): name the same model in every control")
                continue
        if not support.guidance_window and (spec.start, spec.end) != (0.0, 1.0):
            problems.append(f"{where}.start: engine {engine.key}'s ControlNet pipeline runs the control on every "
                            "step (it takes no start/end); leave start and end out")
        elif support.guidance_window and spec.start == spec.end:
            # diffusers' pipelines refuse start >= end (the control would steer no step)
            problems.append(f"{where}.end: {spec.end:g} equals start; the control would steer no step: give an end "
                            "after start, or leave the control out")
        if size is not None and not spec.resize:
            from codex_core import image_size

            control_size = image_size(spec.image)
            if control_size is not None and tuple(control_size) != tuple(size):
                problems.append(f"{where}.image: it is {control_size[0]}x{control_size[1]}, the output "
                                f"{size[0]}x{size[1]}; give a control image of the output's size or set "
                                f"\"resize\": true")
    fuses = support.fuses_union
    if fuses and kinds[True] and kinds[False]:
        problems.append(f"controls: {', '.join(kinds[True])} on union ControlNets, {', '.join(kinds[False])} on "
                        "single-mode ones; one run takes one kind (a union model's pipeline runs only union models)")
    elif len(kinds[False] if fuses else controls) > 1 and support.multi_class is None:
        problems.append(f"controls: {len(controls)} given; engine {engine.key}'s pipelines take one ControlNet")
    elif fuses and len(union_folders) > 1 and support.multi_union_class is None:
        problems.append(f"controls: {len(union_folders)} union ControlNets given; engine {engine.key}'s pipelines "
                        "take one (several controls on one union model are fine)")
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
            control = controlnet_path(spec.model, f"controls.{index}.model", support.single_file_class is not None)
        except UsageError:
            continue  # reported by control_problems
        if control.is_file():
            continue  # a single file: its tensors were checked (controlnet_file_problem)
        config = read_config(control, "config.json")
        if controlnet_class(config, support) not in (*support.model_classes, *support.union_classes):
            continue
        problem = engine.controlnet_fit(config, folder)
        if problem:
            problems.append(f"controls.{index}.model: {control.name}: {problem}")
    return problems


def folder_problems(engine, support: ControlNets, folder: Path, spec, where: str, kinds: dict[bool, list[str]],
                    union_folders: set) -> list[str]:
    """What does not fit in a ControlNet folder (its config's class, weights, family, union modes); records
    whether it is a union model in ``kinds`` and ``union_folders``."""
    config = read_config(folder, "config.json")
    class_name = controlnet_class(config, support)
    allowed = (*support.model_classes, *support.union_classes)
    if class_name not in allowed:
        return [f"{where}.model: {folder.name} is a {class_name or 'model of no named class'} ControlNet; engine "
                f"{engine.key} takes {' or '.join(allowed)}"]
    problems = []
    if weights_file(folder) is None:
        problems.append(f"{where}.model: {folder.name} has no {WEIGHTS_NAME} (the weights diffusers loads; "
                        "pickle .bin ControlNets are not loaded)")
    problem = engine.controlnet_problem(config)
    if problem:
        problems.append(f"{where}.model: {folder.name}: {problem}")
    union = support.is_union(class_name, config)
    kinds[union].append(where)
    if union:
        union_folders.add(folder.resolve())
    # a union model trained on fewer modes than the family knows (its config counts them)
    count_key = support.union_mode_count or support.union_config_key
    count = config.get(count_key) if union and count_key else None
    modes = [name for name, mode in support.union_modes.items() if count is None or mode < count]
    if union and spec.type is None:
        problems.append(f"{where}.type: {folder.name} is a union ControlNet; say which mode: {', '.join(modes)}")
    elif union and spec.type not in modes:
        problems.append(f"{where}.type: got {spec.type!r}; {folder.name} has modes {', '.join(modes)}")
    elif not union and spec.type is not None:
        problems.append(f"{where}.type: {folder.name} is a single-mode ControlNet; leave type out")
    return problems


def file_problem(engine, path: Path, spec, where: str) -> str | None:
    """Why a single ControlNet file does not fit the engine (its header's tensors; nothing loaded), or None."""
    from codex_core import read_safetensors_header, tensor_shapes

    if spec.type is not None:
        return f"{where}.type: {path.name} is a single-mode ControlNet; leave type out"
    problem = engine.controlnet_file_problem(tensor_shapes(read_safetensors_header(path, f"{where}.model")))
    return f"{where}.model: {path.name}: {problem}" if problem else None


def load_controlnet_file(model, path: Path, support: ControlNets, base, field_name: str):
    """A single ControlNet file, loaded with ``from_single_file`` against the config the engine derives from it
    and the base model (written to a folder of its own: diffusers reads a config from a folder)."""
    import json
    import tempfile

    from codex_core import read_safetensors_header, tensor_shapes

    from .devices import torch_dtype
    from .single_file import LOAD_FAILURES

    shapes = tensor_shapes(read_safetensors_header(path, field_name))
    config = model.engine.controlnet_file_config(base, shapes, field_name)
    with tempfile.TemporaryDirectory(prefix="codex-controlnet-") as folder:
        (Path(folder) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            module = model_class(support.single_file_class).from_single_file(
                str(path), config=folder, torch_dtype=torch_dtype(model.runtime), local_files_only=True)
        except (*LOAD_FAILURES, NotImplementedError) as exc:  # NotImplementedError: tensors left on "meta"
            raise UsageError(f"{field_name}: {path.name} does not load as a ControlNet of this checkpoint: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                             hint="give the ControlNet's diffusers folder") from None
    return module


def load_controlnet(model, folder: Path, support: ControlNets, base=None, field_name: str = "controls"):
    """The ControlNet in ``folder``, loaded once per model (keyed by the folder's weights' path, size and
    mtime) onto the run's device in the run's dtype; safetensors only, local files only."""
    from .devices import torch_dtype

    weights = [folder] if folder.is_file() else sorted(folder.glob("*.safetensors"))
    if folder.is_dir() and weights_file(folder) is None:
        raise UsageError(f"{folder}: no {WEIGHTS_NAME} (pickle-based ControlNets are not loaded)")
    key = (str(folder.resolve()), tuple((w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights))
    if key not in model.controlnets:
        if folder.is_file():
            module = load_controlnet_file(model, folder, support, base, field_name)
        else:
            cls = model_class(controlnet_class(read_config(folder, "config.json"), support))
            module = cls.from_pretrained(str(folder), torch_dtype=torch_dtype(model.runtime), use_safetensors=True,
                                         local_files_only=True)
        module.to(model.runtime.device)
        module.eval()
        model.controlnets[key] = module
    return model.controlnets[key]


def control_view(engine, model, family, job: "Job"):
    """The run's view of the task's control pipeline, with the run's ControlNet(s) on the view only."""
    import copy

    from .pipelines import build_scheduler, pipeline_class, scheduler_record

    support: ControlNets = engine.controlnets
    controls = job.params.controls
    single_files = support.single_file_class is not None
    folders = [controlnet_path(spec.model, f"controls.{i}.model", single_files) for i, spec in enumerate(controls)]
    modules = [load_controlnet(model, folder, support, family.base, f"controls.{index}.model")
               for index, folder in enumerate(folders)]
    for index, (spec, folder) in enumerate(zip(controls, folders)):
        from codex_core import file_record

        # what the run read: by its sha256 replay finds a moved file or folder again
        weights = folder if folder.is_file() else weights_file(folder)
        record = (file_record(weights, job.progress.message) if weights.name.endswith(".safetensors")
                  else {"path": str(folder)})
        where = {"folder": str(folder)} if folder.is_dir() else {}
        job.files[f"controlnet:{index}"] = {**record, **where, "class": type(modules[index]).__name__}
    union = support.is_union(type(modules[0]).__name__, modules[0].config)
    name = support.union_pipelines.get(job.task) if union else None
    cls = pipeline_class(name or support.pipelines[job.task])
    cached = family.for_class(cls, controlnet=modules[0])
    view = copy.copy(cached)
    view.scheduler = build_scheduler(view.scheduler, job.scheduler, family.scheduler_config)
    job.scheduler_applied = scheduler_record(view.scheduler)
    if support.attach:
        for module in modules:
            getattr(type(module), support.attach)(module, view.transformer)
    view.controlnet = stacked(support, modules, union)
    return view


def stacked(support: ControlNets, modules: list, union: bool):
    """The run's ControlNet: the one model; controls that all use one union model: that model (its modes fuse
    inside it, the arguments go to it as lists); else the family's multi-ControlNet, one model per control."""
    fused = union and support.fuses_union
    if len(modules) == 1 or (fused and all(module is modules[0] for module in modules)):
        return modules[0]
    if support.stacks_one_model:  # a multi class that runs one ControlNet on several images gets it once
        modules = list({id(module): module for module in modules}.values())
    return model_class(support.multi_union_class if fused else support.multi_class)(modules)


def model_class(name: str) -> type:
    """A diffusers model class by name: exported at the top, or only from ``diffusers.models`` (e.g.
    MultiControlNetUnionModel in diffusers 0.42)."""
    import diffusers
    import diffusers.models

    found = getattr(diffusers, name, None) or getattr(diffusers.models, name, None)
    if found is None:
        raise AttributeError(f"diffusers {diffusers.__version__} has no model class {name}")
    return found


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

    union = any(spec.type is not None for spec in controls)  # the checks allow no mix of union and single-mode
    arguments = {support.image_argument_for(job.task, union): each(images),
                 "controlnet_conditioning_scale": each([spec.scale for spec in controls])}
    if support.guidance_window:
        arguments["control_guidance_start"] = each([spec.start for spec in controls])
        arguments["control_guidance_end"] = each([spec.end for spec in controls])
    if any(spec.type is not None for spec in controls):  # None for a single-mode ControlNet stacked with a union one
        arguments["control_mode"] = each([None if spec.type is None else support.union_modes[spec.type]
                                          for spec in controls])
    return arguments


def call_arguments_for_control(engine, task: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The base call's arguments renamed (or dropped) for the task's control pipeline (``call_arguments``)."""
    renames = engine.controlnets.call_arguments.get(task, {})
    renamed = {}
    for name, value in arguments.items():
        target = renames.get(name, name)
        if target is not None:
            renamed[target] = value
    return renamed


def controls_bytes(model) -> int:
    """The ControlNets' own bytes: each tensor once, none the base pipelines hold (an attached ControlNet,
    e.g. Z-Image's, holds the transformer's embedders, which the model's pipelines count already)."""
    from .pipelines import modules_of

    base = {id(t) for family in model.families.values() for module in modules_of(family.base).values()
            for t in (*module.parameters(), *module.buffers())}
    tensors = {id(t): t for module in model.controlnets.values() for t in (*module.parameters(), *module.buffers())
               if id(t) not in base}
    return sum(t.numel() * t.element_size() for t in tensors.values())
