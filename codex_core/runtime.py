"""Device, dtype and memory options, as the user gives them and as a run resolves them.

Which devices exist is the engine's to say (``Engine.resolve_runtime``: an engine on torch asks
torch); the rules for dtype and offload are the same for every engine and live here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, "fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}
# none | model | group | sequential: diffusers' placements, fastest first; auto: the planner picks the
# fastest that fits the device (codex_core.memory_plan), recorded in info.memory_plan
OFFLOAD = ("none", "model", "group", "sequential", "auto")
# How the VAE decodes: whole, in tiles (large images and videos with less memory), in slices (a batch one
# item at a time), both, or auto (tiles and slices when the memory plan offloads or leaves little room)
VAE_DECODE = ("full", "tiled", "sliced", "tiled+sliced", "auto")
# --compile: off; regional (torch.compile of the repeated blocks, diffusers' compile_repeated_blocks,
# where the model declares them, else the whole module); full (the whole denoiser)
COMPILE = ("off", "regional", "full")
# --attention: diffusers' attention backends (set_attention_backend) that run without downloading a
# kernel; "default" leaves the model's own. The *_hub backends fetch kernels from the Hub: never here.
ATTENTION = ("default", "native", "_native_math", "_native_efficient", "_native_flash", "_native_cudnn", "flex",
             "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "sage", "sage_varlen", "xformers")
# How the denoiser's weights are stored: as the dtype (auto), or in float8 with each layer cast up to the
# run's dtype as it computes (diffusers' layerwise casting: about half the memory of bf16 weights), or int8
# weight-only (torchao's Int8WeightOnlyConfig on the Linear layers: an optional extra, codex-diffusers[int8])
WEIGHTS = {"auto": None, "fp8": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2", "int8": "int8"}


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"  # OFFLOAD
    vae: str = "full"  # VAE_DECODE
    allow_pickle: bool = False
    weights: str = "auto"  # WEIGHTS: the denoisers' storage
    compile: str = "off"  # COMPILE
    compile_backend: str = "inductor"  # torch.compile's backend (e.g. eager or aot_eager to debug a compile)
    attention: str = "default"  # ATTENTION

    @property
    def vae_tiling(self) -> bool:
        return "tiled" in self.vae

    def check(self) -> "Runtime":
        base = self.device.split(":")[0]
        if base not in DEVICES:
            raise UsageError(f"--device: unknown device {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype: unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.offload not in OFFLOAD:
            raise UsageError(f"--offload: unknown mode {self.offload!r}; allowed: {', '.join(OFFLOAD)}")
        if base == "cpu" and self.offload not in ("none", "auto"):
            raise UsageError(f"--offload {self.offload} needs a GPU; the device is cpu",
                             hint="drop --offload (or --offload auto: it offloads only on a GPU that needs it)")
        if self.weights not in WEIGHTS:
            raise UsageError(f"--weights: unknown storage {self.weights!r}; allowed: {', '.join(WEIGHTS)}")
        if self.vae not in VAE_DECODE:
            raise UsageError(f"--vae-decode: unknown mode {self.vae!r}; allowed: {', '.join(VAE_DECODE)}")
        if self.compile not in COMPILE:
            raise UsageError(f"--compile: unknown mode {self.compile!r}; allowed: {', '.join(COMPILE)}")
        if not self.compile_backend or not self.compile_backend.replace("_", "").isalnum():
            raise UsageError(f"--compile-backend: {self.compile_backend!r} is not a backend name; e.g. inductor, "
                             "aot_eager or eager")
        if self.attention not in ATTENTION:
            hub = " (the *_hub backends download kernels: not supported)" if self.attention.endswith("_hub") else ""
            raise UsageError(f"--attention: unknown backend {self.attention!r}{hub}; allowed: {', '.join(ATTENTION)}")
        return self

    def on_device(self, device: str, gpu_dtype: str) -> "Runtime":
        """This runtime on a concrete ``device``: dtype ``auto`` is the engine's GPU dtype off the CPU, fp32 on it."""
        dtype = DTYPES[self.dtype] or ("float32" if device == "cpu" else gpu_dtype)
        return replace(self, device=device, dtype=dtype).check()  # e.g. --offload group on a device that is the cpu
