"""A LoRA applied for one run and undone exactly afterwards (imports torch and diffusers).

The LoRA goes into modules that every cached task pipeline shares (the denoiser, the text
encoders), so it must not outlive the run: the next request, or a replay, must see the pipeline the
checkpoint loaded, bit for bit. ``unload_lora_weights`` puts the original layers (the very same
weight tensors) back, but PEFT froze every base parameter when it injected the adapter
(``requires_grad=False``) and nothing unfreezes them. That is not cosmetic: torch's matmul picks
its kernel path by the weight's ``requires_grad`` even under inference mode, so a frozen SDXL UNet
(linear projections fed non-contiguous inputs) gives outputs ~1e-6 apart, which flips 8-bit pixels
on some CPUs. So the flags are recorded before and restored after.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from codex_core import UsageError

ADAPTER = "codex_run_lora"
# what diffusers/PEFT raise for a LoRA whose keys or shapes do not fit the model
LOAD_FAILURES = (ValueError, KeyError, RuntimeError, TypeError, IndexError, AttributeError)


@dataclass(frozen=True)
class RunLora:
    field: str  # the request field it came from, for errors: "loras[0]", "prompt <lora:x:0.8>", "mode_lora"
    path: Path
    scale: float
    into: str | None = None  # a second denoiser (Wan A14B's transformer_2) instead of the first


def _lora_modules(pipe) -> list[torch.nn.Module]:
    names = getattr(pipe, "_lora_loadable_modules", ())
    return [module for module in (getattr(pipe, name, None) for name in names) if isinstance(module, torch.nn.Module)]


def _injected(pipe, adapter: str) -> bool:
    return any(adapter in (getattr(module, "peft_config", None) or {}) for module in _lora_modules(pipe))


@contextmanager
def loras_for_run(pipe, loras: list[RunLora], notes: dict | None = None) -> Iterator[None]:
    """Load every LoRA with its scale for the block (stacked, as ``set_adapters`` does); afterwards the
    modules are as before, bit for bit.

    A LoRA whose keys fit none of the pipeline's modules (another family's) or whose shapes do not
    fit is a UsageError naming its field, raised before the pipeline runs.
    ``notes["unloaded_after_run"]`` becomes True once the LoRAs are gone and the modules restored."""
    requires_grad = [(param, param.requires_grad) for module in _lora_modules(pipe) for param in module.parameters()]
    names = []
    try:
        for index, lora in enumerate(loras):
            adapter = f"{ADAPTER}_{index}"
            try:
                options = {"load_into_transformer_2": True} if lora.into == "transformer_2" else {}
                pipe.load_lora_weights(str(lora.path), adapter_name=adapter, **options)
            except LOAD_FAILURES as exc:
                raise UsageError(f"{lora.field}: {lora.path} does not fit this model ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:300]})",
                                 hint="is it a LoRA for another model family or size?") from None
            if not _injected(pipe, adapter):
                raise UsageError(f"{lora.field}: {lora.path} has no weights for any layer of this model "
                                 f"({type(pipe).__name__})", hint="is it a LoRA for another model family?")
            names.append(adapter)
        if names:
            pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
        yield
    finally:
        if names or loras:
            pipe.unload_lora_weights()  # a no-op when loading failed before anything was injected
        for param, flag in requires_grad:
            param.requires_grad_(flag)
        if notes is not None:
            notes["unloaded_after_run"] = True


@contextmanager
def lora_for_run(pipe, path: str, scale: float, notes: dict | None = None) -> Iterator[None]:
    """One LoRA for the block (see ``loras_for_run``)."""
    with loras_for_run(pipe, [RunLora("lora", Path(path), scale)], notes):
        yield
