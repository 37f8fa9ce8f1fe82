"""``progress``, ``interrupt`` and ``skip``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..bodies import StrictJSONRoute
from ..dependencies import StoreDep, WorkersDep

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


@router.get("/progress")
def progress(store: StoreDep, skip_current_image: bool = False) -> dict[str, Any]:
    running = store.list("running", 1)
    queued = store.queued_count()
    job = running[0] if running else None
    step, steps = (job or {}).get("step") or 0, (job or {}).get("steps") or 0
    return {"progress": round(step / steps, 4) if steps else 0.0,
            "eta_relative": (job or {}).get("eta_seconds") or 0.0,
            "state": {"skipped": False, "interrupted": False, "job": job["id"] if job else "",
                      "job_count": queued + (1 if job else 0), "job_timestamp": "", "job_no": 0,
                      "sampling_step": step, "sampling_steps": steps},
            "current_image": None, "textinfo": job["stage"] if job else None}


@router.post("/interrupt")
def interrupt(workers: WorkersDep) -> dict[str, Any]:
    current_job = workers.current
    if current_job:
        workers.cancel(current_job)
    return {}


@router.post("/skip")
def skip(workers: WorkersDep) -> dict[str, Any]:
    return interrupt(workers)
