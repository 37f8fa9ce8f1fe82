"""``progress``, ``interrupt`` and ``skip``."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter

from ..bodies import StrictJSONRoute
from ..dependencies import StateDep, StoreDep, WorkersDep

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


def _current_job(store) -> dict[str, Any] | None:
    """The job A1111's progress reports and its interrupt stops: the latest one running."""
    running = store.list("running", 1)
    return running[0] if running else None


@router.get("/progress")
def progress(store: StoreDep, workers: WorkersDep, skip_current_image: bool = False) -> dict[str, Any]:
    job = _current_job(store)
    queued = store.queued_count()
    step, steps = (job or {}).get("step") or 0, (job or {}).get("steps") or 0
    preview = workers.previews.get(job["id"]) if job and not skip_current_image else None
    return {"progress": round(step / steps, 4) if steps else 0.0,
            "eta_relative": (job or {}).get("eta_seconds") or 0.0,
            "state": {"skipped": False, "interrupted": bool((job or {}).get("interrupt_requested")),
                      "job": job["id"] if job else "", "job_count": queued + (1 if job else 0), "job_timestamp": "",
                      "job_no": 0, "sampling_step": step, "sampling_steps": steps},
            "current_image": base64.b64encode(preview["png"]).decode() if preview else None,
            "textinfo": job["stage"] if job else None}


@router.post("/interrupt")
def interrupt(state: StateDep, store: StoreDep, workers: WorkersDep) -> dict[str, Any]:
    """A1111's interrupt: the current job stops early and keeps its image (decoded at the step it reached), and the
    call it belongs to runs none of its later batches (``n_iter``)."""
    job = _current_job(store)
    if job and workers.interrupt(job["id"]) == "requested":
        state.a1111_interrupted.append(job["id"])
    return {}


@router.post("/skip")
def skip(store: StoreDep, workers: WorkersDep) -> dict[str, Any]:
    """A1111's skip: the current job stops early and keeps its image; the call's later batches still run."""
    job = _current_job(store)
    if job:
        workers.interrupt(job["id"])
    return {}
