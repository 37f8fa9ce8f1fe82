"""``/v1``'s job routes: images sent ahead (``inputs``), jobs submitted, listed, followed (``events``),
their files served, and cancelled or deleted.

A job is validated when it is submitted (the CLI's prepare: field-named problems, 422, nothing
queued), stored durably, and run by a worker, which writes its outputs exactly as `codex run` writes
them, under the state dir. ``submit_job`` is the one way in to the queue: the A1111 layer calls it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from fastapi.datastructures import State
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from .bodies import StrictJSONRoute, excerpt
from .dependencies import InputsDep, SettingsDep, StateDep, StoreDep, WorkersDep
from .follow_up import FollowUp, check_steps
from .inputs import check_name
from .limits import check_prepared, check_raw
from .store import TERMINAL, JobStore, StoreUnavailable

router = APIRouter(route_class=StrictJSONRoute)
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
# what POST /v1/inputs takes: an image's bytes as the body, with an image content type
IMAGE_BODY = {"requestBody": {"required": True, "content": {"image/*": {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}}


class JobSpec(BaseModel):
    """``POST /v1/jobs``: what `codex run` takes, as JSON."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    task: str
    request: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    formats: list[str] | None = None
    preset: str | None = None
    # steps run on each image the job makes, in the same job (``follow_up``: A1111's hires fix is one)
    follow_up: list[FollowUp] | None = None


def submit_job(state: State, spec: JobSpec) -> dict[str, Any]:
    """Validate (the CLI's prepare: nothing loads), settle the inputs, store: the job, queued."""
    from ..orchestrator import RunOptions, prepare
    from ..registry import get_engine

    store, settings, inputs = state.store, state.settings, state.inputs
    if store.queued_count() >= settings.max_queue:
        raise HTTPException(429, f"the queue is full ({settings.max_queue} jobs waiting, --max-queue)")
    engine = get_engine(spec.engine)
    if spec.task not in engine.tasks:
        raise UsageError(f"engine {excerpt(spec.engine)} has no task {excerpt(spec.task)}; its tasks: "
                         f"{', '.join(engine.tasks)}")
    for field, value in (("model", spec.model), ("preset", spec.preset),
                         *((f"formats.{index}", name) for index, name in enumerate(spec.formats or ()))):
        if value is not None:
            check_name(field, value)
    if spec.model and spec.model != "tiny" and inputs.names_a_file(spec.model) and not inputs.allowed(spec.model):
        raise UsageError(f"model: {excerpt(spec.model)} is outside the folders this service may read")
    # what is only large is refused before it costs a validation
    check_raw(settings.limits, spec.request, engine.params_model(spec.task))
    staging = settings.inputs_dir / secrets.token_hex(8)
    try:
        request = inputs.settle(engine.params_model(spec.task), spec.request, staging)
        # the CLI's validation: field-named problems, nothing queued (prepare loads nothing)
        prepared = prepare(spec.engine, spec.task, request, RunOptions(
            model=spec.model, out=settings.outputs, quiet=True,
            formats=tuple(spec.formats) if spec.formats else None, preset=spec.preset))
        check_prepared(settings.limits, engine, spec.task, prepared.params)  # what the job will cost, in full
        follow_up = check_steps(state, spec, prepared, staging) if spec.follow_up else None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a refused request leaves nothing behind
        raise
    data = {**spec.model_dump(), "request": request, "follow_up": follow_up,
            "inputs_dir": str(staging) if staging.exists() else None}
    try:
        job = store.submit(data)
    except StoreUnavailable:  # refused (503): nothing kept
        shutil.rmtree(staging, ignore_errors=True)
        raise
    state.workers.wake()
    # what the run will say before it starts (e.g. a speed mode the checkpoint does not support, and why)
    return {**job, "warnings": list(prepared.plan.warnings)}


def _job(store: JobStore, job_id: str) -> dict[str, Any]:
    job = store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {excerpt(job_id)}")
    return job


@router.post("/v1/inputs", status_code=201, openapi_extra=IMAGE_BODY)
async def upload(request: Request, settings: SettingsDep, inputs: InputsDep) -> dict[str, Any]:
    """An image sent as the body (content type ``image/*``), kept under the state dir by its content's sha256:
    its path can be a request's image field (a short value in place of an inline data URL; the same image twice
    is one file). It is decoded in full first, as a job's input is: a truncated or oversized image is a 422 here."""
    raw = await request.body()
    digest = hashlib.sha256(raw).hexdigest()
    problems: list[str] = []
    path = await run_in_threadpool(inputs.write_image, "body", raw, settings.inputs_dir / "uploads", digest[:32],
                                   problems, decode=True)
    if path is None:
        raise UsageError("; ".join(problems), hint="send the bytes of a PNG, JPEG, WebP, BMP, GIF or TIFF image")
    return {"path": str(path), "sha256": digest, "bytes": len(raw)}


@router.post("/v1/jobs", status_code=202)
def submit(spec: JobSpec, state: StateDep) -> dict[str, Any]:
    return submit_job(state, spec)


@router.get("/v1/jobs")
def jobs(store: StoreDep, state: JobState | None = None,
         limit: Annotated[int, Query(ge=0, le=10_000)] = 100) -> list[dict[str, Any]]:
    return store.list(state, limit)


@router.get("/v1/jobs/{job_id}")
def job(job_id: str, store: StoreDep) -> dict[str, Any]:
    return _job(store, job_id)


@router.delete("/v1/jobs/{job_id}")
def delete(job_id: str, store: StoreDep, workers: WorkersDep, settings: SettingsDep) -> JSONResponse:
    found = _job(store, job_id)
    if found["state"] == "queued" and store.cancel_queued(job_id):
        return JSONResponse(store.get(job_id), 200)
    if found["state"] in ("queued", "running"):  # it started meanwhile: stop it (stored first; see Workers.cancel)
        workers.cancel(job_id)
        return JSONResponse({**store.get(job_id), "cancel_requested": True}, 202)
    run_dir = (found.get("result") or {}).get("run_dir")
    for folder in (run_dir, found["spec"].get("inputs_dir")):  # its outputs and the images it was sent
        if folder and Path(folder).resolve().is_relative_to(settings.state_dir.resolve()):
            shutil.rmtree(folder, ignore_errors=True)
    store.delete(job_id)
    return JSONResponse({"id": job_id, "deleted": True}, 200)


@router.get("/v1/jobs/{job_id}/files/{name}")
def file(job_id: str, name: str, store: StoreDep) -> FileResponse:
    found = _job(store, job_id)
    files = {Path(path).name: Path(path) for path in (found.get("result") or {}).get("files", [])}
    if name not in files:
        raise HTTPException(404, f"job {job_id} has no file {excerpt(name)}; its files: "
                                 f"{', '.join(files) or 'none yet'}")
    if not files[name].is_file():
        raise HTTPException(404, f"job {job_id}'s file {name} is gone (the job is being deleted)")
    return FileResponse(files[name])


@router.get("/v1/jobs/{job_id}/events")
async def events(job_id: str, store: StoreDep, workers: WorkersDep) -> StreamingResponse:
    _job(store, job_id)
    return StreamingResponse(_event_stream(store, workers.events, job_id), media_type="text/event-stream")


async def _event_stream(store: JobStore, logs: dict[str, list[dict[str, Any]]], job_id: str):
    """The job's state when the stream opens, every step and stage the workers report, then its end."""
    def sse(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps({'id': job_id, **data})}\n\n"

    current = store.get(job_id)
    if current is None:  # deleted since the route looked
        yield sse("deleted", {})
        return
    yield sse("state", {key: current.get(key) for key in ("state", "stage", "step", "steps", "position")})
    sent, last_state = 0, current["state"]
    while True:
        current = store.get(job_id)
        if current is None:
            yield sse("deleted", {})
            return
        log = logs.get(job_id, [])
        fresh = log[sent:]  # events a worker appends while this generator waits at a yield go out next round
        sent += len(fresh)
        for event in fresh:
            kind = event["event"]
            yield sse(kind, {key: value for key, value in event.items() if key != "event"})
        if current["state"] != last_state:
            last_state = current["state"]
            yield sse("state", {"state": last_state, "error": current.get("error")})
        if current["state"] in TERMINAL:
            yield sse("end", {"state": current["state"]})
            return
        await asyncio.sleep(0.05)
