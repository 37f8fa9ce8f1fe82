"""The memory plan of a checkpoint before it loads: its components' sizes on the device, the device's free
memory, and ``codex_diffusers.memory_plan.plan`` to decide (imports torch only to ask the GPU).

Sizes come from what is on disk without reading weights: a diffusers folder's safetensors headers (or, for
a folder of configs only, the classes built on the meta device: ``sizes.component_sizes``), a single file's
header grouped by its components' key prefixes, a ``--component`` file's header (a GGUF file: its size).
Each is counted in the dtype it will have on the device: the run's dtype, an engine's ``component_dtypes``
(e.g. a float32 VAE), one byte per weight for float8 denoisers (``--weights fp8``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from codex_core import Runtime
from .configs import read_config
from .memory_plan import ComponentBytes, MemoryPlan, plan

if TYPE_CHECKING:
    from .engine import DiffusersEngine

BYTES_PER = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1}
# config keys that count a model's repeated blocks (transformer layers)
BLOCK_KEYS = ("num_layers", "num_single_layers", "num_hidden_layers", "num_refiner_layers")
# single-file (original/A1111 layout) key prefixes -> the diffusers component they hold
FILE_PREFIXES = {"model.diffusion_model.": "unet", "first_stage_model.": "vae", "cond_stage_model.": "text_encoder",
                 "conditioner.embedders.0.": "text_encoder", "conditioner.embedders.1.": "text_encoder_2"}
# a transformer-only file's block keys (Flux/Wan original layout, diffusers layout): the engine's denoiser
DENOISER_BLOCKS = ("double_blocks", "single_blocks", "blocks", "transformer_blocks")


def _file_component(key: str, engine: "DiffusersEngine") -> str:
    """The component a single-file tensor key belongs to: by prefix, else its first name."""
    for prefix, component in FILE_PREFIXES.items():
        if key.startswith(prefix):
            return component
    first = key.split(".")[0]
    return engine.denoisers[0] if first in DENOISER_BLOCKS and "." in key else first


def blocks_of(config: dict) -> int | None:
    count = sum(value for key in BLOCK_KEYS if isinstance(value := config.get(key), int))
    return count or None


def device_bytes(name: str, params: int, engine: "DiffusersEngine", runtime: Runtime) -> int:
    """``params`` weights of component ``name`` as they sit on the device in this run."""
    from .run_options import WEIGHTS

    dtype = (engine.component_dtypes(runtime) or {}).get(name) or runtime.dtype
    if name in engine.denoisers and WEIGHTS[runtime.weights]:
        dtype = WEIGHTS[runtime.weights]
    return params * BYTES_PER.get(dtype, 4)


def folder_components(folder: Path, engine: "DiffusersEngine", runtime: Runtime,
                      replaced: dict[str, Path] | None = None) -> list[ComponentBytes]:
    from .sizes import component_sizes

    replaced = replaced or {}
    found = []
    for name, size in component_sizes(folder).items():
        if name in replaced:
            continue
        found.append(ComponentBytes(name, device_bytes(name, size.parameters, engine, runtime),
                                    blocks_of(read_config(folder, f"{name}/config.json"))))
    for name, path in replaced.items():
        found.append(ComponentBytes(name, file_bytes(path, name, engine, runtime),
                                    blocks_of(read_config(folder, f"{name}/config.json"))))
    return found


def file_bytes(path: Path, name: str, engine: "DiffusersEngine", runtime: Runtime) -> int:
    """A component file on the device: a GGUF file stays quantised (its size); safetensors by its header."""
    if path.suffix.lower() != ".safetensors":
        return path.stat().st_size
    from codex_core import read_safetensors_header

    params = sum(math.prod(entry["shape"]) for key, entry in read_safetensors_header(path).items()
                 if key != "__metadata__")
    return device_bytes(name, params, engine, runtime)


def single_file_components(path: Path, config: Path, engine: "DiffusersEngine",
                           runtime: Runtime) -> list[ComponentBytes]:
    """A whole checkpoint in one file: its tensors grouped by component prefix (others by their first name)."""
    from codex_core import read_safetensors_header

    params: dict[str, int] = {}
    for key, entry in read_safetensors_header(path).items():
        if key == "__metadata__":
            continue
        name = _file_component(key, engine)
        params[name] = params.get(name, 0) + math.prod(entry["shape"])
    return [ComponentBytes(name, device_bytes(name, count, engine, runtime),
                           blocks_of(read_config(config, f"{name}/config.json")))
            for name, count in params.items()]


def device_memory(device: str) -> tuple[int | None, int | None]:
    """(free, total) bytes of a CUDA device; (None, None) elsewhere (the CPU's weights stay in host memory)."""
    if not device.startswith("cuda"):
        return None, None
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return int(free), int(total)


def placement(engine: "DiffusersEngine", folder: Path, config: Path, is_file: bool, runtime: Runtime,
              replaced: dict[str, Path] | None = None) -> tuple[Runtime, MemoryPlan | None]:
    """The runtime to place this checkpoint with (``auto`` offload and VAE decode decided) and the plan."""
    if runtime.offload != "auto" and runtime.vae != "auto":
        return runtime, None
    components = (single_file_components(folder, config, engine, runtime) if is_file
                  else folder_components(folder, engine, runtime, replaced))
    free, total = device_memory(runtime.device)
    decided = plan(components, runtime.device, free, total)
    decided.asked = f"offload {runtime.offload}, vae {runtime.vae}"
    placed = runtime.replace(offload=decided.offload if runtime.offload == "auto" else runtime.offload,
                            vae=decided.vae if runtime.vae == "auto" else runtime.vae)
    return placed, decided
