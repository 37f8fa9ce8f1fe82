"""``unload-checkpoint``, ``reload-checkpoint`` and ``memory``: the workers' loaded models and the memory they use.

``unload-checkpoint`` has every worker's process drop its loaded models (``controls``: between jobs, so a
running job finishes first), freeing their memory for another program, as A1111 frees the GPU;
``reload-checkpoint`` has them load the current checkpoint again, so that the next call does not wait
for it. Each answers A1111's ``{}`` once the workers are done, or after ``WAIT_SECONDS``, when a long job
holds a worker (it then does it after the job).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from ..bodies import StrictJSONRoute
from ..controls import send_to_all
from ..dependencies import StateDep, WorkersDep

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)
WAIT_SECONDS = 120.0  # how long an unload or reload waits for busy workers before it answers


@router.post("/unload-checkpoint")
def unload_checkpoint(workers: WorkersDep) -> dict[str, Any]:
    send_to_all(workers, {"control": "unload"}, WAIT_SECONDS)
    return {}


@router.post("/reload-checkpoint")
def reload_checkpoint(state: StateDep, workers: WorkersDep) -> dict[str, Any]:
    current = state.a1111.current()
    spec = {"engine": current["engine"], "task": "txt2img", "model": current["model"]}
    send_to_all(workers, {"control": "load", "spec": spec}, WAIT_SECONDS)
    return {}


@router.get("/memory")
def memory(workers: WorkersDep) -> dict[str, Any]:
    """A1111's shape: ``ram`` is this machine's memory, ``used`` what the service and its worker processes hold;
    ``cuda`` says it is not reported here (the core imports no torch; a job's ``info.memory`` has its peak)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        used = sum(_resident(pid) for pid in [os.getpid(), *workers.pids()])
        ram: dict[str, Any] = {"free": total - used, "used": used, "total": total}
    except (OSError, ValueError, AttributeError) as exc:  # no /proc or sysconf (not Linux)
        ram = {"error": f"{type(exc).__name__}: {exc}"}
    cuda = {"error": "unavailable: device memory is reported per job (info.memory.peak_device_memory_mb)"}
    return {"ram": ram, "cuda": cuda, "codex_workers": [{"device": row["device"], "models_loaded":
                                                         row.get("models_loaded")} for row in workers.health()["workers"]]}


def _resident(pid: int) -> int:
    """A process's resident memory in bytes (Linux: /proc/PID/statm); 0 for one that has just ended."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except FileNotFoundError:
        return 0
