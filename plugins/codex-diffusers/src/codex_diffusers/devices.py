"""Devices, dtypes and device memory through torch (imports torch)."""

from __future__ import annotations

import torch

from codex_core import Runtime, UsageError


def resolve_runtime(runtime: Runtime, gpu_dtype: str) -> Runtime:
    """Pick a concrete device (``auto``: cuda > mps > cpu) and the dtype (the engine's GPU dtype, fp32 on CPU)."""
    device = runtime.device
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available in this torch build ({torch.__version__})")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available on this machine")
    return runtime.on_device(device, gpu_dtype)


def torch_dtype(runtime: Runtime) -> torch.dtype:
    return getattr(torch, runtime.dtype)


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if device == "mps":
        return round(torch.mps.driver_allocated_memory() / 2**20, 1)
    return None
