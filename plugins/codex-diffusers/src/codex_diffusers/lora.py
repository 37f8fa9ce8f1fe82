"""A LoRA applied for one run and undone exactly afterwards (imports torch and diffusers).

The LoRA goes into modules that every cached task pipeline shares (the denoiser, the text
encoders), so it must not outlive the run: the next request, or a replay, must see the weights the
checkpoint has, bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

ADAPTER = "codex_run_lora"


@contextmanager
def lora_for_run(pipe, path: str, scale: float) -> Iterator[None]:
    pipe.load_lora_weights(path, adapter_name=ADAPTER)
    try:
        pipe.set_adapters([ADAPTER], adapter_weights=[scale])
        yield
    finally:
        pipe.unload_lora_weights()
