"""Single-file checkpoints and component files, through diffusers' own single-file loaders.

- A whole checkpoint in one file (A1111/Civitai SD 1.5 or SDXL): ``Pipeline.from_single_file(file,
  config=FOLDER)``, where FOLDER is a diffusers folder holding the configs and tokenizers the file
  lacks: the user's ``--config``, else the one the engine ships for the variant the file's keys
  reveal (``DiffusersEngine.single_file_variant``). Never the network: ``local_files_only``.
- One component from its own file (``--component transformer=FILE``): a transformer in diffusers
  or original key layout, or a GGUF-quantised one, loaded with the model class's
  ``from_single_file`` against the base folder's config for that component, then handed to
  ``from_pretrained`` so the base folder's own copy is never read.

diffusers' loaders report a file that does not fit as ValueError/KeyError/RuntimeError deep in a
converter; these are turned into usage errors that name the option and the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch

from codex_core import Runtime, UsageError

from .devices import torch_dtype
from .pipelines import place

LOAD_FAILURES = (ValueError, KeyError, RuntimeError, TypeError, IndexError, AttributeError, OSError)


def load_single_file(pipeline_cls, path: Path, config: Path, label: str, runtime: Runtime,
                     component_dtypes: dict[str, str] | None = None, **overrides) -> Any:
    """A pipeline from one checkpoint file, with the configs and tokenizers of the diffusers folder ``config``."""
    try:
        pipe = pipeline_cls.from_single_file(str(path), config=str(config), local_files_only=True,
                                             dtype=torch_dtype(runtime), **overrides)
    except LOAD_FAILURES as exc:
        raise UsageError(f"--model: {label} could not be loaded as a {pipeline_cls.__name__} checkpoint "
                         f"with the configs of {config}: {type(exc).__name__}: {exc}",
                         hint="pass --config with a diffusers folder of the same architecture") from None
    for name, dtype in (component_dtypes or {}).items():
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            module.to(dtype=getattr(torch, dtype))
    place(pipe, runtime)
    return pipe


def component_class(base_folder: Path, name: str) -> type:
    """The model class of component ``name`` as the base folder's model_index.json names it."""
    index = json.loads((base_folder / "model_index.json").read_text(encoding="utf-8"))
    entry = index.get(name)
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
        raise UsageError(f"--component {name}: the base model {base_folder} has no {name} component")
    return getattr(diffusers, entry[1])


def load_component(name: str, path: Path, base_folder: Path, runtime: Runtime) -> torch.nn.Module:
    """Component ``name`` from its own file (safetensors in diffusers or original layout, or GGUF)."""
    model_cls = component_class(base_folder, name)
    dtype = torch_dtype(runtime)
    options: dict[str, Any] = {}
    if path.suffix.lower() == ".gguf":
        from diffusers import GGUFQuantizationConfig

        options["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    try:
        return model_cls.from_single_file(str(path), config=str(base_folder), subfolder=name, local_files_only=True,
                                          torch_dtype=dtype, **options)
    except LOAD_FAILURES as exc:
        raise UsageError(f"--component {name}={path}: not loadable as the {model_cls.__name__} of {base_folder}: "
                         f"{type(exc).__name__}: {exc}",
                         hint=f"the file must hold a {model_cls.__name__} of the base model's architecture "
                              "(diffusers or original key layout, or GGUF)") from None
