"""Device, dtype and memory options. Resolving ``auto`` imports torch, so it happens at run time only."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, "fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}
OFFLOAD = ("none", "model", "sequential")


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"  # diffusers enable_model_cpu_offload / enable_sequential_cpu_offload
    vae_tiling: bool = False
    allow_pickle: bool = False

    def check(self) -> "Runtime":
        base = self.device.split(":")[0]
        if base not in DEVICES:
            raise UsageError(f"--device: unknown device {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype: unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.offload not in OFFLOAD:
            raise UsageError(f"--offload: unknown mode {self.offload!r}; allowed: {', '.join(OFFLOAD)}")
        return self

    def resolve(self, gpu_dtype: str) -> "Runtime":
        """Pick a concrete device (cuda > mps > cpu) and dtype (the engine's GPU dtype, fp32 on CPU).

        Without torch installed (an engine that does not use it) the only device is the CPU.
        """
        try:
            import torch
        except ImportError:
            torch = None
        device = self.device
        if torch is None and device.split(":")[0] in ("cuda", "mps"):
            raise UsageError(f"--device {device}: torch is not installed", hint="pip install torch, or drop --device")
        if torch is None:
            device = "cpu"
        elif device == "auto":
            if torch.cuda.is_available():
                device = "cuda"
            elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available in this torch build ({torch.__version__})")
        dtype = DTYPES[self.dtype] or ("float32" if device == "cpu" else gpu_dtype)
        if self.offload != "none" and device == "cpu":
            raise UsageError(f"--offload {self.offload} needs a GPU; the device is cpu", hint="drop --offload")
        return Runtime(device, dtype, self.offload, self.vae_tiling, self.allow_pickle)

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)
