"""Device, dtype and memory options, as the user gives them and as a run resolves them.

Which devices exist is the engine's to say (``Engine.resolve_runtime``: an engine on torch asks
torch); the rules for dtype and offload are the same for every engine and live here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, "fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}
OFFLOAD = ("none", "model", "sequential")
# How the denoiser's weights are stored: as the dtype (auto), or in float8 with each layer cast up to the
# run's dtype as it computes (diffusers' layerwise casting: about half the memory of bf16 weights)
WEIGHTS = {"auto": None, "fp8": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"  # diffusers enable_model_cpu_offload / enable_sequential_cpu_offload
    vae_tiling: bool = False
    allow_pickle: bool = False
    weights: str = "auto"  # WEIGHTS: the denoisers' storage

    def check(self) -> "Runtime":
        base = self.device.split(":")[0]
        if base not in DEVICES:
            raise UsageError(f"--device: unknown device {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype: unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.offload not in OFFLOAD:
            raise UsageError(f"--offload: unknown mode {self.offload!r}; allowed: {', '.join(OFFLOAD)}")
        if self.weights not in WEIGHTS:
            raise UsageError(f"--weights: unknown storage {self.weights!r}; allowed: {', '.join(WEIGHTS)}")
        return self

    def on_device(self, device: str, gpu_dtype: str) -> "Runtime":
        """This runtime on a concrete ``device``: dtype ``auto`` is the engine's GPU dtype off the CPU, fp32 on it."""
        dtype = DTYPES[self.dtype] or ("float32" if device == "cpu" else gpu_dtype)
        if self.offload != "none" and device == "cpu":
            raise UsageError(f"--offload {self.offload} needs a GPU; the device is cpu", hint="drop --offload")
        return Runtime(device, dtype, self.offload, self.vae_tiling, self.allow_pickle, self.weights)
