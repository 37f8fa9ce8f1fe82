"""How big each component of a diffusers folder is, before anything loads.

``component_sizes(folder)`` reads ``model_index.json`` and, for each weight-bearing component
(a subfolder with a ``config.json`` or ``*.safetensors`` files: not the scheduler, tokenizers or
feature extractors), returns a ``ComponentSize``:

- when the component's ``*.safetensors`` files are there: from their headers only (the 8-byte
  little-endian header length and the JSON header: every tensor's dtype, shape and byte range);
  no tensor is read. Sharded files are counted once each (the ``*.index.json`` names them when
  present); when one folder holds several variants of the same weights (``model.safetensors`` and
  ``model.fp16.safetensors``) only the plain one is counted.
- when only the configs are there (the reference configs the plugins ship): by building the
  class from its config on the meta device (no memory) and counting its parameters and
  persistent buffers; ``dtype`` is the config's ``torch_dtype``/``dtype`` when it names one,
  else float32 (what the class builds), and ``bytes`` is the count at that dtype.

``reference_config_dir(engine, variant=None)`` finds the configs of an engine's reference model
shipped inside its plugin package: each engine class names them in ``reference_configs``
(``{variant: folder relative to the engine's package}``, the first one the default), e.g.
``codex_wan/reference_configs/ti2v_5b``.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codex_core import read_safetensors_header

# safetensors dtype names as torch names them (what ComponentSize.dtype reports)
TORCH_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
               "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "I64": "int64", "I32": "int32",
               "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
               "BOOL": "bool"}


@dataclass(frozen=True)
class ComponentSize:
    name: str  # the component's name in model_index.json, e.g. "transformer"
    class_name: str  # e.g. "WanTransformer3DModel"
    parameters: int  # number of elements of every stored tensor (parameters and persistent buffers)
    bytes: int  # bytes as stored (from the files) or at ``dtype`` (from the config)
    dtype: str  # the dtype holding most of the bytes, torch's name ("bfloat16"); "mixed" never: the largest wins
    source: str  # "safetensors" (file headers) or "config" (built on the meta device)
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding one copy of a component's weights."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    for index in indexes:
        if not any(part in index.name for part in (".fp16.", ".bf16.", ".fp32.")):
            break
    else:
        index = indexes[0] if indexes else None
    if index is not None:
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            return [folder / name for name in names if (folder / name).is_file()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    files = sorted(folder.glob("*.safetensors"))
    if len(files) <= 1:
        return files
    plain = [path for path in files if path.name.count(".") == 1]  # model.safetensors, not model.fp16.safetensors
    return plain[:1] or files[:1]


def _from_headers(name: str, class_name: str, files: list[Path]) -> ComponentSize:
    count, by_dtype = 0, {}
    for path in files:
        for key, entry in read_safetensors_header(path, "model folder").items():
            if key == "__metadata__":
                continue
            count += math.prod(entry["shape"])
            start, end = entry["data_offsets"]
            dtype = TORCH_NAMES.get(entry["dtype"], entry["dtype"].lower())
            by_dtype[dtype] = by_dtype.get(dtype, 0) + (end - start)
    total = sum(by_dtype.values())
    dtype = max(by_dtype, key=by_dtype.get) if by_dtype else "float32"
    return ComponentSize(name, class_name, count, total, dtype, "safetensors", by_dtype)


def _config_dtype(config: dict[str, Any]) -> str | None:
    value = config.get("torch_dtype") or config.get("dtype")
    return value if isinstance(value, str) and value not in ("auto", "float32") else None


def component_class(library: str, class_name: str):
    """The class a model_index.json entry names. ``library`` is a package, or (as diffusers writes it for a
    pipeline's own modules, e.g. LTX-2's ``["ltx2", "LTX2Vocoder"]``) a package under ``diffusers.pipelines``."""
    try:
        module = importlib.import_module(library)
    except ModuleNotFoundError:
        module = importlib.import_module(f"diffusers.pipelines.{library}")
    return getattr(module, class_name)


def build_empty(folder: Path, library: str, class_name: str):
    """The component's class built from its config on the meta device (no weights, no memory)."""
    import torch

    cls = component_class(library, class_name)
    if library == "transformers":
        config = cls.config_class.from_pretrained(folder)
        with torch.device("meta"):
            return cls(config)
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True):
        return cls.from_config(cls.load_config(folder))


def _from_config(name: str, library: str, class_name: str, folder: Path) -> ComponentSize:
    import torch

    model = build_empty(folder, library, class_name)
    stored = set(model.state_dict())  # parameters and persistent buffers (what a weight file holds)
    tensors = {id(tensor): tensor for name, tensor in [*model.named_parameters(), *model.named_buffers()]
               if name in stored}  # named_* list a tied weight once; ids guard against any alias left
    count = sum(tensor.numel() for tensor in tensors.values())
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    dtype = _config_dtype(config) or "float32"
    per_element = torch.empty((), dtype=getattr(torch, dtype, torch.float32)).element_size()
    return ComponentSize(name, class_name, count, count * per_element, dtype, "config", {dtype: count * per_element})


def component_sizes(folder: Path) -> dict[str, ComponentSize]:
    """Size of each weight-bearing component of the diffusers folder ``folder``, in model_index.json's order.

    From the safetensors headers when the component has weight files, else from its config built on
    the meta device. Components with neither (scheduler, tokenizers, feature extractors, null
    entries) are left out. Raises FileNotFoundError when there is no model_index.json.
    """
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    sizes = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or None in entry:
            continue
        library, class_name = entry
        sub = folder / name
        files = _weight_files(sub) if sub.is_dir() else []
        if files:
            sizes[name] = _from_headers(name, class_name, files)
        elif (sub / "config.json").is_file():
            sizes[name] = _from_config(name, library, class_name, sub)
    return sizes


def reference_config_dir(engine: str, variant: str | None = None) -> Path:
    """The shipped configs of ``engine``'s reference model (``variant``: one of its ``reference_configs``).

    Each engine class that ships them says where, relative to its package:
    ``reference_configs = {"ti2v_5b": "reference_configs/ti2v_5b"}`` (the first is the default).
    Raises LookupError when the engine ships none, or not that variant.
    """
    from codex_core import get_engine

    found = get_engine(engine)
    shipped: dict[str, str] = dict(getattr(found, "reference_configs", None) or {})
    if not shipped:
        raise LookupError(f"engine {engine!r} ships no reference configs")
    if variant is None:
        variant = next(iter(shipped))
    if variant not in shipped:
        raise LookupError(f"engine {engine!r} ships no reference configs for {variant!r}; it has: {', '.join(shipped)}")
    package = type(found).__module__.split(".")[0]
    path = Path(importlib.import_module(package).__file__).parent / shipped[variant]
    if not (path / "model_index.json").is_file():
        raise LookupError(f"engine {engine!r}: the reference configs {path} are missing (a broken install?)")
    return path
