"""``--offload auto``: the fastest placement of a model's weights that fits the device, decided before loading.

The inputs are what is known before any weight is read: each component's bytes as it will sit on the
device (parameter counts from file headers or configs, times the run's dtype; float8 denoisers with
``--weights fp8``) and how many repeated blocks it has, plus the device's free and total memory. The
modes, fastest first, and what each keeps on the device at once (diffusers' offload hooks):

- ``none``: every component (``pipe.to(device)``);
- ``model``: the component that is computing (``enable_model_cpu_offload``: the largest one bounds it);
- ``group``: a few blocks of it (``enable_group_offload``, block level, one block per group, the next one
  prefetched on a CUDA stream): about three of its largest blocks;
- ``sequential``: one layer (``enable_sequential_cpu_offload``): the slowest, fits almost anything.

Each mode also needs working memory for activations and the VAE decode (``reserve``: by default the
larger of 2 GiB and a tenth of the device). The plan is the first mode that fits; the VAE decodes in
tiles and slices whenever the weights are offloaded or the room left after them is under ``TILE_BELOW``.
Everything the decision used goes to ``info.memory_plan``, so a plan can be checked against the numbers.

Torch-free: ``codex_diffusers.memory`` measures the components, this module only decides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

GIB = 2**30
MODES = ("none", "model", "group", "sequential")  # fastest first
# Working memory kept free beside the weights: activations of the denoiser and the VAE decode.
MIN_RESERVE = 2 * GIB
RESERVE_SHARE = 0.10
# With less room than this left beside the weights, the VAE decodes in tiles (and slices a batch).
TILE_BELOW = 6 * GIB
# Blocks on the device at once under group offload: the one computing, the next one prefetched, and the
# module's other layers (embeddings, norms, projections) taken as one more block.
GROUP_BLOCKS_RESIDENT = 3
SEQUENTIAL_SHARE = 0.05  # sequential offload holds one layer: counted as 5% of the largest component


@dataclass(frozen=True)
class ComponentBytes:
    name: str
    nbytes: int  # its weights as they sit on the device in this run (dtype, float8 storage)
    blocks: int | None = None  # repeated blocks (transformer layers); None: not known, counted as 8


@dataclass
class MemoryPlan:
    offload: str  # one of MODES
    vae: str  # "full" or "tiled+sliced"
    fits: bool  # False: not even sequential offload fits by the estimate (the run may still run out)
    reason: str
    device: str
    free_bytes: int | None = None
    total_bytes: int | None = None
    reserve_bytes: int | None = None
    needed_bytes: dict[str, int] = field(default_factory=dict)  # per mode: weights on the device + reserve
    components: list[dict[str, Any]] = field(default_factory=list)
    asked: str = "auto"

    def as_info(self) -> dict[str, Any]:
        """The JSON record for info.memory_plan, sizes also in GiB for people reading it."""
        record = asdict(self)
        record["gib"] = {key: round(value / GIB, 2) for key, value in (
            ("free", self.free_bytes), ("total", self.total_bytes), ("reserve", self.reserve_bytes),
            *self.needed_bytes.items()) if value is not None}
        return record


def default_reserve(total_bytes: int) -> int:
    return max(MIN_RESERVE, int(total_bytes * RESERVE_SHARE))


def needed(mode: str, components: list[ComponentBytes], reserve: int) -> int:
    """Bytes on the device at once under ``mode``, the reserve included."""
    if not components:
        return reserve
    largest = max(c.nbytes for c in components)
    if mode == "none":
        return sum(c.nbytes for c in components) + reserve
    if mode == "model":
        return largest + reserve
    if mode == "group":
        return max(GROUP_BLOCKS_RESIDENT * c.nbytes // max(c.blocks or 8, 1) for c in components) + reserve
    if mode == "sequential":
        return int(largest * SEQUENTIAL_SHARE) + reserve
    raise ValueError(f"unknown offload mode {mode!r}")


def plan(components: list[ComponentBytes], device: str, free_bytes: int | None = None,
         total_bytes: int | None = None, reserve_bytes: int | None = None) -> MemoryPlan:
    """The fastest mode whose weights plus reserve fit ``free_bytes`` of ``device``.

    Off a GPU (``free_bytes`` None: the CPU, where weights already sit in host memory) nothing is offloaded."""
    listed = [asdict(c) for c in components]
    if free_bytes is None:
        return MemoryPlan("none", "full", True, f"device {device}: the weights stay where they are (offload "
                          "moves weights off a GPU)", device, components=listed)
    total = total_bytes or free_bytes
    reserve = default_reserve(total) if reserve_bytes is None else reserve_bytes
    needs = {mode: needed(mode, components, reserve) for mode in MODES}
    chosen = next((mode for mode in MODES if needs[mode] <= free_bytes), None)
    fits = chosen is not None
    chosen = chosen or "sequential"
    weights_on_device = needs[chosen] - reserve
    tiled = chosen != "none" or free_bytes - weights_on_device < TILE_BELOW
    if not fits:
        reason = (f"not even sequential offload fits by the estimate ({needs['sequential'] / GIB:.1f} GiB needed, "
                  f"{free_bytes / GIB:.1f} GiB free): it is used, and the run may run out of memory")
    elif chosen == "none":
        reason = f"everything fits: {needs['none'] / GIB:.1f} GiB needed of {free_bytes / GIB:.1f} GiB free"
    else:
        faster = MODES[MODES.index(chosen) - 1]
        reason = (f"{faster} needs {needs[faster] / GIB:.1f} GiB, {free_bytes / GIB:.1f} GiB free; {chosen} needs "
                  f"{needs[chosen] / GIB:.1f} GiB")
    return MemoryPlan(chosen, "tiled+sliced" if tiled else "full", fits, reason, device, free_bytes, total, reserve,
                      needs, listed)
