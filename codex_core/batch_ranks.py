"""A batch split across processes: under torchrun or ``accelerate launch`` (``--processes N`` starts torchrun on
this command), accelerate's ``PartialState`` splits the items still to run between ranks, each on its own
GPU when there are GPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .batch_items import Item
from .errors import UsageError
from .runtime import Runtime

# set by `--processes` on the ranks it starts: a rank then leaves the exit status to the launcher
WORKER_ENV = "CODEX_BATCH_WORKER"


def distributed() -> bool:
    """Whether this process is one rank of several (torchrun or accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def partial_state():
    """accelerate's PartialState; cpu=True without CUDA (otherwise it would not form a CPU group at all)."""
    try:
        from datetime import timedelta

        from accelerate import PartialState
        from accelerate.utils import is_cuda_available
    except ImportError:
        raise UsageError("codex batch across processes needs accelerate",
                         hint="pip install 'codex-core[batch]'") from None
    # a long timeout: the start barrier waits for the slowest rank to import and validate
    return PartialState(cpu=not is_cuda_available(), timeout=timedelta(hours=2))


def rank_runtime(runtime: Runtime, state) -> Runtime:
    """Each rank on its own GPU (cuda:LOCAL_RANK) when the device is auto or cuda and there are GPUs."""
    device = str(state.device)
    if device.startswith("cuda") and runtime.device in ("auto", "cuda"):
        return runtime.replace(device=device)
    return runtime


def build_tiny_models(items: list[Item]) -> None:
    """Build the tiny models the items name, once, before the other ranks may load them (never in two at once)."""
    from . import registry, sources
    from .progress import Progress

    for key in dict.fromkeys(item.engine for item in items if item.model == "tiny"):
        engine = registry.get_engine(key)
        engine.ensure_tiny(sources.tiny_path(engine, engine.tiny_version), Progress(enabled=False))


def launch(processes: int, args: list[str]) -> int:
    """Run ``codex ARGS`` as ``processes`` ranks under torchrun (python -m torch.distributed.run); its status."""
    import importlib.util

    if distributed():
        raise UsageError("--processes: this command already runs under torchrun/accelerate launch "
                         f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')})", hint="drop --processes")
    missing = [name for name in ("torch", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--processes: needs {' and '.join(missing)} (torchrun starts the ranks, accelerate splits "
                         "the items)", hint="pip install 'codex-core[batch]' and an engine plugin")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "codex_core.cli", *args]
    env = {**os.environ, WORKER_ENV: "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return subprocess.run(command, env=env).returncode
