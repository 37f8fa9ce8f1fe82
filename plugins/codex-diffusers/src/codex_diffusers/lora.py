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
from typing import Iterator

import torch

ADAPTER = "codex_run_lora"


def _lora_modules(pipe) -> list[torch.nn.Module]:
    names = getattr(pipe, "_lora_loadable_modules", ())
    return [module for module in (getattr(pipe, name, None) for name in names) if isinstance(module, torch.nn.Module)]


@contextmanager
def lora_for_run(pipe, path: str, scale: float, notes: dict | None = None) -> Iterator[None]:
    """Load the LoRA at ``path`` with ``scale`` for the block; afterwards the modules are as before.

    ``notes["unloaded_after_run"]`` becomes True once the LoRA is gone and the modules restored."""
    requires_grad = [(param, param.requires_grad) for module in _lora_modules(pipe) for param in module.parameters()]
    try:
        pipe.load_lora_weights(path, adapter_name=ADAPTER)
        pipe.set_adapters([ADAPTER], adapter_weights=[scale])
        yield
    finally:
        pipe.unload_lora_weights()  # a no-op when loading failed before anything was injected
        for param, flag in requires_grad:
            param.requires_grad_(flag)
        if notes is not None:
            notes["unloaded_after_run"] = True
