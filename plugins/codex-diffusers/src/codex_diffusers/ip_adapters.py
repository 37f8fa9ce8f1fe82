"""Image prompts through IP-Adapters (the request's ``reference_images``), declared per family (``IPAdapters``).

An engine whose UNet pipelines take ``ip_adapter_image`` (diffusers' ``IPAdapterMixin``) declares, on its class,
``ip_adapters = IPAdapters(context_dims=(...))`` and adds ``ReferenceImageFields`` to its tasks' params. The kit
does the rest the same way for every such family:

- before loading (``reference_problems``): each ``reference_images.N.model`` resolves (a path, or a name in the
  ``ipadapter`` models folders, then in the ``controlnet`` ones, where A1111 keeps them) to a .safetensors file
  whose header is an IP-Adapter's (``image_proj.*`` and ``ip_adapter.*`` tensors, diffusers' ``load_ip_adapter``
  layout) for this family's cross-attention width;
  the image encoder resolves to a ``CLIPVisionModelWithProjection`` folder of the width the adapter takes
  (``reference_images.N.encoder``, else the first such folder in the ``clip_vision`` models folders);
  all the run's adapters share that one encoder (the pipeline has one);
- loading: diffusers' own ``load_ip_adapter`` builds the adapters' attention processors and image projection
  once per set of adapter files; they are taken off the UNet at once and kept with the model
  (``DiffusersModel.ip_adapters``, counted in its bytes, evicted with it), as is the encoder;
- running (``references_for_run``): the UNet is a module every cached pipeline shares, so the adapters'
  processors and projection are put on it for the run only and the originals (the very same processor
  objects, the projection slot and the config flag) put back after it: a run without reference images then
  gives the no-adapter pixels. The encoder and its image processor go on the run's view only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from codex_core import UsageError, lookup_model_file, model_folders, read_safetensors_header, tensor_shapes, user_path

from .configs import read_config

if TYPE_CHECKING:
    from codex_core import Job

ADAPTER_KIND = "ipadapter"  # the models-folder kinds
CONTROLNET_KIND = "controlnet"
ENCODER_KIND = "clip_vision"
ENCODER_CLASS = "CLIPVisionModelWithProjection"


@dataclass(frozen=True)
class IPAdapters:
    """What an engine's family offers for image prompts: the cross-attention widths of its released UNets (an
    adapter's ``to_k_ip`` input width), e.g. SD 1.x 768, SD 2.x 1024, SDXL 2048."""

    context_dims: tuple[int, ...]


@dataclass(frozen=True)
class AdapterHeader:
    """What an IP-Adapter file's header says, read without loading a tensor."""

    context_dim: int  # the UNet cross-attention width it was trained for
    encoder_output: str  # "image_embeds" (the encoder's projection) or "hidden_states" (its penultimate layer)
    encoder_width: int  # projection_dim or hidden_size the encoder must have


def adapter_header(path: Path, field: str) -> AdapterHeader:
    """The adapter's needs from its safetensors header; a UsageError naming ``field`` when it is not a usable
    IP-Adapter (the layouts are the ones diffusers' ``_convert_ip_adapter_*`` read)."""
    shapes = tensor_shapes(read_safetensors_header(path, field))
    proj = {key.removeprefix("image_proj."): shape for key, shape in shapes.items() if key.startswith("image_proj.")}
    attn = {key.removeprefix("ip_adapter."): shape for key, shape in shapes.items() if key.startswith("ip_adapter.")}
    if not proj or not attn:
        raise UsageError(f"{field}: {path.name} is not an IP-Adapter file (no image_proj.* and ip_adapter.* tensors; "
                         f"found e.g. {', '.join(sorted(shapes)[:3]) or 'nothing'})",
                         hint="give an IP-Adapter .safetensors, e.g. h94/IP-Adapter's "
                              "models/ip-adapter_sd15.safetensors")
    if any("lora" in key for key in attn) or "perceiver_resampler.proj_in.weight" in proj or (
            "norm.weight" in proj and "proj.0.weight" in proj and "proj.3.weight" not in proj):
        raise UsageError(f"{field}: {path.name} is a FaceID IP-Adapter: it takes face embeddings (insightface), "
                         "not an image through a CLIP image encoder, which this field feeds",
                         hint="use a plain, plus or full-face IP-Adapter")
    key = "1.to_k_ip.weight"
    if key not in attn or len(attn[key]) != 2:
        raise UsageError(f"{field}: {path.name} has no ip_adapter.{key} (the first cross-attention's image key "
                         "projection); not an IP-Adapter diffusers can load")
    context_dim = attn[key][1]
    if "proj.weight" in proj:  # IP-Adapter: a linear map of the encoder's image embedding
        return AdapterHeader(context_dim, "image_embeds", proj["proj.weight"][-1])
    if "proj.3.weight" in proj:  # IP-Adapter Full (face): an MLP over the encoder's hidden states
        return AdapterHeader(context_dim, "hidden_states", proj["proj.0.weight"][-1])
    if "latents" in proj and "proj_in.weight" in proj:  # IP-Adapter Plus: a resampler over the hidden states
        return AdapterHeader(context_dim, "hidden_states", proj["proj_in.weight"][-1])
    raise UsageError(f"{field}: {path.name}: an image projection of an unknown kind (tensors "
                     f"{', '.join(sorted(proj)[:4])}); diffusers loads plain, plus and full IP-Adapters")


def adapter_path(value: str, field: str) -> Path:
    """A ``reference_images.N.model`` value as an IP-Adapter file: a path, else a name in the ipadapter folders."""
    path = user_path(value, field)
    if not path.exists():
        # A1111's and Forge's sd-webui-controlnet keep IP-Adapters with the ControlNets (models/ControlNet)
        found = lookup_model_file(ADAPTER_KIND, value, field) or lookup_model_file(CONTROLNET_KIND, value, field)
        if found is None:
            folders = ", ".join(str(f) for f in (*model_folders(ADAPTER_KIND), *model_folders(CONTROLNET_KIND)))
            raise UsageError(f"{field}: no such file '{value}', and no IP-Adapter of that name in the ipadapter "
                             f"or controlnet folders ({folders or 'none configured'})",
                             hint="`codex models --kind ipadapter`")
        path = found.path
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        raise UsageError(f"{field}: '{value}' is not a .safetensors file (IP-Adapters load from one .safetensors; "
                         "pickle .bin files are not loaded)")
    return path


def encoder_width(folder: Path, output: str) -> int | None:
    """The width an encoder folder gives for ``output`` (None: not a CLIPVisionModelWithProjection folder)."""
    config = read_config(folder, "config.json")
    if ENCODER_CLASS not in (config.get("architectures") or []):
        return None
    return config.get("projection_dim" if output == "image_embeds" else "hidden_size")


def _need(header: AdapterHeader) -> str:
    what = "projection_dim" if header.encoder_output == "image_embeds" else "hidden_size"
    return f"a {ENCODER_CLASS} folder with {what} {header.encoder_width}"


def encoder_folder(value: str | None, header: AdapterHeader, field: str, prefer: Path | None = None) -> Path:
    """The image encoder for an adapter: the named one (``field``), else ``prefer`` (the run's encoder so far)
    when it fits, else the first folder in the clip_vision folders whose width the adapter takes. A UsageError
    names ``field`` when there is none or it does not fit."""
    if value is not None:
        path = user_path(value, field)
        if not path.exists():
            found = lookup_model_file(ENCODER_KIND, value, field)
            if found is None:
                raise UsageError(f"{field}: no such folder '{value}', and no image encoder of that name in the "
                                 f"clip_vision folders ({', '.join(map(str, model_folders(ENCODER_KIND))) or 'none'})",
                                 hint="`codex models --kind clip_vision`")
            path = found.path
        folder = path.parent if path.is_file() else path
        if not (folder / "config.json").is_file():
            raise UsageError(f"{field}: '{value}' is not a transformers folder (config.json and model.safetensors); "
                             f"image encoders load from one, e.g. h94/IP-Adapter's models/image_encoder")
        width = encoder_width(folder, header.encoder_output)
        if width != header.encoder_width:
            what = "projection_dim" if header.encoder_output == "image_embeds" else "hidden_size"
            raise UsageError(f"{field}: {folder.name} does not fit the adapter: it needs {_need(header)}; "
                             f"{folder.name} is {read_config(folder, 'config.json').get('architectures')} with "
                             f"{what} {width}")
        return folder
    if prefer is not None and encoder_width(prefer, header.encoder_output) == header.encoder_width:
        return prefer
    from codex_core import scan_model_files

    for found in scan_model_files([ENCODER_KIND]):
        folder = found.path if found.path.is_dir() else found.path.parent
        if (folder / "config.json").is_file() and encoder_width(folder, header.encoder_output) == header.encoder_width:
            return folder
    where = ", ".join(str(f) for f in model_folders(ENCODER_KIND)) or "none configured"
    raise UsageError(f"{field}: no image encoder for this adapter in the clip_vision folders ({where}): it needs "
                     f"{_need(header)}", hint="put h94/IP-Adapter's image_encoder folder (models/image_encoder for "
                                              "ViT-H adapters, sdxl_models/image_encoder for ViT-bigG ones) there, "
                                              "or give encoder")


@dataclass(frozen=True)
class Resolved:
    adapters: tuple[Path, ...]
    encoder: Path | None


def _check(references, engine=None) -> tuple[list[str], Resolved]:
    """Each reference's adapter file and the run's one encoder folder, and every problem as "field: message"
    lines. With ``engine``, an adapter for another family's cross-attention width is one of them."""
    problems, adapters, encoder = [], [], None
    support: IPAdapters | None = getattr(engine, "ip_adapters", None)
    for index, ref in enumerate(references):
        where = f"reference_images.{index}"
        try:
            path = adapter_path(ref.model, f"{where}.model")
            header = adapter_header(path, f"{where}.model")
            problem = context_problem(engine, support, header.context_dim) if support else None
            if problem:
                raise UsageError(f"{where}.model: {path.name}: {problem}")
            folder = encoder_folder(ref.encoder, header, f"{where}.encoder", prefer=encoder)
        except UsageError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
            continue
        if encoder is not None and folder.resolve() != encoder.resolve():
            problems.append(f"{where}.encoder: {folder} differs from the first image's encoder {encoder}; the "
                            "pipeline has one image encoder, so every adapter of a run must take the same one")
        adapters.append(path)
        encoder = encoder or folder
    return problems, Resolved(tuple(adapters), encoder)


def resolve(references) -> Resolved:
    """Each reference's adapter file and the run's one encoder folder (a UsageError names the first problem)."""
    problems, resolved = _check(references)
    if problems:
        raise UsageError(problems[0])
    return resolved


def reference_problems(engine, task: str, params) -> list[str]:
    """Every ``reference_images`` problem as "field: message" lines, before anything loads (empty: fine)."""
    references = getattr(params, "reference_images", None) or []
    if not references or getattr(engine, "ip_adapters", None) is None:  # without IPAdapters: the engine's own field
        return []
    return _check(references, engine)[0]


def adapter_file_problem(engine, path: Path) -> str | None:
    """Why an IP-Adapter file is not for this engine (for `codex models`); None: a run can use it."""
    support: IPAdapters | None = getattr(engine, "ip_adapters", None)
    if support is None:
        return f"engine {engine.key} takes no IP-Adapters"
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return "not a .safetensors IP-Adapter"
    try:
        header = adapter_header(path, "ipadapter")
    except UsageError as exc:
        return exc.message.removeprefix("ipadapter: ")
    return context_problem(engine, support, header.context_dim)


def context_problem(engine, support: IPAdapters, width: int) -> str | None:
    """An adapter for another family's cross-attention width is refused before loading, naming the engines that
    take it. A width no released model has (a test model's) is checked against the loaded UNet instead."""
    if width in support.context_dims:
        return None
    from codex_core import installed_engines

    others = sorted(key for key, other in installed_engines().items()
                    if key != engine.key and width in getattr(getattr(other, "ip_adapters", None), "context_dims", ()))
    if not others:
        return None
    return (f"it is an IP-Adapter for cross-attention width {width} (engine {', '.join(others)}); engine "
            f"{engine.key} takes {' or '.join(map(str, support.context_dims))}")


# -- loading and running (torch from here on) --------------------------------------------------------------


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def load_encoder(model, folder: Path):
    """The image encoder, loaded once per model (keyed by its weights' path, size and mtime), in the run's dtype."""
    from transformers import CLIPVisionModelWithProjection

    from .devices import torch_dtype

    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise UsageError(f"{folder}: no .safetensors weights (pickle-based image encoders are not loaded)")
    key = ("encoder", *(_file_key(w) for w in weights))
    if key not in model.ip_adapters:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder), dtype=torch_dtype(model.runtime),
                                                                use_safetensors=True, local_files_only=True)
        encoder.to(model.runtime.device)
        encoder.eval()
        model.ip_adapters[key] = encoder
    return model.ip_adapters[key]


@dataclass
class LoadedAdapters:
    processors: dict[str, Any]  # the UNet's attention processors with the adapters' image keys/values
    projection: Any  # diffusers' MultiIPAdapterImageProjection


def load_adapters(model, pipe, paths: tuple[Path, ...], fields: list[str]) -> LoadedAdapters:
    """The adapters of ``paths`` (one per reference, in order), built once per model by diffusers' own
    ``load_ip_adapter`` on a throwaway copy of the pipeline, then taken off the shared UNet at once."""
    import copy

    key = ("adapters", *(_file_key(p) for p in paths))
    if key in model.ip_adapters:
        return model.ip_adapters[key]
    unet = pipe.unet
    with _unet_restored(unet):
        scratch = copy.copy(pipe)  # load_ip_adapter registers a feature extractor: not on the run's view
        try:
            scratch.load_ip_adapter([str(p.parent) for p in paths], subfolder=[""] * len(paths),
                                    weight_name=[p.name for p in paths], image_encoder_folder=None,
                                    local_files_only=True)
        except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as exc:
            which = fields[0] if len(fields) == 1 else "reference_images"
            raise UsageError(f"{which}: {', '.join(p.name for p in paths)} does not fit this model's UNet "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})",
                             hint="is it an IP-Adapter for another model family or size?") from None
        # a plus adapter's resampler has attention layers of its own: they stay inside the projection
        processors = {name: processor for name, processor in unet.attn_processors.items()
                      if not name.startswith("encoder_hid_proj.")}
        loaded = LoadedAdapters(processors, unet.encoder_hid_proj)
    model.ip_adapters[key] = loaded
    return loaded


@contextmanager
def _unet_restored(unet) -> Iterator[None]:
    """Whatever the block does to the UNet's attention processors, its image projection slot and the config flag
    the forward pass reads, they are the very same objects afterwards."""
    processors = dict(unet.attn_processors)
    hid_proj_in_modules = "encoder_hid_proj" in unet._modules
    hid_proj = unet.encoder_hid_proj
    dim_type = unet.config.encoder_hid_dim_type
    try:
        yield
    finally:
        # the projection first: set_attn_processor counts the attention layers under it too (a plus adapter's)
        if hid_proj_in_modules:
            unet.encoder_hid_proj = hid_proj
        else:  # UNet2DConditionModel keeps a None projection as a plain attribute: as it was, not a module slot
            unet._modules.pop("encoder_hid_proj", None)
            object.__setattr__(unet, "encoder_hid_proj", hid_proj)
        unet.set_attn_processor(dict(processors))  # set_attn_processor pops from the dict it is given
        # diffusers sets the flag as an attribute of the (frozen) config dict; the dict item never changes
        unet.config.encoder_hid_dim_type = dim_type


@contextmanager
def references_for_run(engine, model, pipe, job: "Job") -> Iterator[None]:
    """The run's IP-Adapters on the UNet, its encoder on the view, each adapter's scale set; afterwards the UNet
    is as before. Records the adapter and encoder files in ``job.files`` and the references in
    ``info.notes.reference_images``."""
    references = getattr(job.params, "reference_images", None) or []
    if not references or engine.ip_adapters is None:
        yield
        return
    from codex_core import file_record
    from transformers import CLIPImageProcessor

    resolved = resolve(references)
    fields = [f"reference_images.{i}.model" for i in range(len(references))]
    unet = pipe.unet
    for index, path in enumerate(resolved.adapters):
        job.files[f"ipadapter:{index}"] = {**file_record(path, job.progress.message), "scale": references[index].scale}
    weights = sorted(resolved.encoder.glob("*.safetensors"))
    job.files["image_encoder"] = {**(file_record(weights[0], job.progress.message) if len(weights) == 1 else {}),
                                  "folder": str(resolved.encoder)}
    context_dim = unet.config.cross_attention_dim
    for index, path in enumerate(resolved.adapters):
        width = adapter_header(path, fields[index]).context_dim
        if width != context_dim:  # a width no released model has (a test model's): the checks could not tell
            raise UsageError(f"{fields[index]}: {path.name} is an IP-Adapter for cross-attention width {width}; this "
                             f"model's UNet has {context_dim}")
    encoder = load_encoder(model, resolved.encoder)
    adapters = load_adapters(model, pipe, resolved.adapters, fields)
    state = job.notes.setdefault("reference_images", {"count": len(references), "unloaded_after_run": False})
    with _unet_restored(unet):
        unet.set_attn_processor(dict(adapters.processors))  # before the projection, whose own layers it would count
        unet.encoder_hid_proj = adapters.projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        pipe.image_encoder = encoder  # the run's view only, as diffusers' load_ip_adapter registers it
        if getattr(pipe, "feature_extractor", None) is None:  # as load_ip_adapter: a checkpoint's own one is kept
            size = encoder.config.image_size
            pipe.feature_extractor = CLIPImageProcessor(size=size, crop_size=size)
        pipe.set_ip_adapter_scale([ref.scale for ref in references])
        yield
    state["unloaded_after_run"] = True


def reference_arguments(job: "Job") -> dict[str, Any]:
    """``ip_adapter_image``: one image per adapter, each at its own size (the encoder's processor resizes it)."""
    references = job.params.reference_images
    images = [job.input_image(f"reference_images.{i}.image", None, path=ref.image) for i, ref in enumerate(references)]
    return {"ip_adapter_image": images}


def references_bytes(model) -> int:
    """The bytes of the adapters and encoders kept with the model."""
    modules = []
    for value in model.ip_adapters.values():
        if isinstance(value, LoadedAdapters):
            modules.append(value.projection)
            modules += [p for p in value.processors.values() if hasattr(p, "parameters")]
        else:
            modules.append(value)
    seen, total = set(), 0
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total
