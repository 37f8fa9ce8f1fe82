"""``/v1``'s job routes: images sent ahead (``inputs``), jobs submitted, listed, followed (``events``, with
previews of the latents while they run), their files served, stopped early (``interrupt``: kept), and
cancelled or deleted.

A job is validated when it is submitted (the CLI's prepare: field-named problems, 422, nothing
queued), stored durably, and run by a worker, which writes its outputs exactly as `codex run` writes
them, under the state dir. ``submit_job`` is the one way in to the queue: the A1111 and OpenAI layers call it
too. It takes an ``Idempotency-Key`` (the same key and request: the same job; another request: 409) and
records where the job's end is to be POSTed (its ``callback_url`` and ``--webhook-url``: webhooks.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
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
from .store import TERMINAL, JobStore, KeyReused, StoreUnavailable
from .webhooks import Destinations

router = APIRouter(route_class=StrictJSONRoute)
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
# what POST /v1/inputs takes: an image's bytes as the body, with an image content type
_BINARY = {"schema": {"type": "string", "format": "binary"}}
FILE_BODY = {"requestBody": {"required": True, "content": {"image/*": _BINARY, "video/*": _BINARY}}}


class JobSpec(BaseModel):
    """``POST /v1/jobs``: what `codex run` takes, as JSON."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    task: str
    request: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    formats: list[str] | None = None
    preset: str | None = None
    callback_url: str | None = Field(None, description="POSTed (signed) when the job ends: done, failed or "
                                                       "cancelled; an http or https URL")
    # steps run on each image the job makes, in the same job (``follow_up``: A1111's hires fix is one)
    follow_up: list[FollowUp] | None = None


KEY_CHARS = 255


def idempotency_key(value: str | None) -> str | None:
    """An ``Idempotency-Key`` header's value: printable ASCII, at most 255 characters (a 422 otherwise)."""
    if value is None:
        return None
    if not 1 <= len(value) <= KEY_CHARS or not value.isascii() or not value.isprintable():
        raise UsageError(f"Idempotency-Key: {excerpt(value)}; 1 to {KEY_CHARS} printable ASCII characters")
    return value


def fingerprint(spec: JobSpec, extra: dict[str, Any] | None) -> str:
    """What "the same request" means for an Idempotency-Key: the spec as parsed (key order and spacing aside)."""
    return hashlib.sha256(json.dumps([spec.model_dump(), extra], sort_keys=True, default=str).encode()).hexdigest()


def submit_job(state: State, spec: JobSpec, key: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate (the CLI's prepare: nothing loads), settle the inputs, store: the job, queued. ``extra`` is kept in
    the job's spec (what a compatibility layer needs to answer for it). With ``key``: the job that key submitted
    when the request is the same (``replayed``: True, nothing validated again), a 409 when it is not."""
    from ..orchestrator import RunOptions, prepare
    from ..registry import get_engine

    store, settings, inputs = state.store, state.settings, state.inputs
    digest = fingerprint(spec, extra) if key is not None else None
    if key is not None and (found := store.keyed(key)) is not None:
        if found[0] != digest:
            raise _reused(key)
        job = store.get(found[1])
        if job is not None:
            return {**job, "idempotency_key": key, "replayed": True}
    if spec.callback_url is not None:
        problem = Destinations(tuple(settings.webhook_allow_hosts)).problem(spec.callback_url)
        if problem:
            raise UsageError(problem, hint="see --webhook-allow-host for where callbacks may go")
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
    callbacks = [url for url in (spec.callback_url, settings.webhook_url) if url]
    data = {**spec.model_dump(), "request": request, "follow_up": follow_up,
            "inputs_dir": str(staging) if staging.exists() else None,
            **({"callbacks": callbacks} if callbacks else {}), **(extra or {})}
    try:
        job, created = store.submit_once(data, key, digest)
    except (StoreUnavailable, KeyReused) as exc:  # refused (503, 409): nothing kept
        shutil.rmtree(staging, ignore_errors=True)
        raise _reused(key) if isinstance(exc, KeyReused) else exc from None
    if not created:  # the same key and request, submitted meanwhile: that job
        shutil.rmtree(staging, ignore_errors=True)
        return {**job, "idempotency_key": key, "replayed": True}
    state.workers.wake()
    # what the run will say before it starts (e.g. a speed mode the checkpoint does not support, and why)
    return {**job, "warnings": list(prepared.plan.warnings),
            **({"idempotency_key": key, "replayed": False} if key is not None else {})}


def _reused(key: str) -> HTTPException:
    return HTTPException(409, f"Idempotency-Key {excerpt(key)} was used for a different request; send the same "
                              "request to get its job, or a new key for a new job",
                         headers={"x-should-retry": "false"})


def _job(store: JobStore, job_id: str) -> dict[str, Any]:
    job = store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {excerpt(job_id)}")
    return job


@router.post("/v1/inputs", status_code=201, openapi_extra=FILE_BODY)
async def upload(request: Request, settings: SettingsDep, inputs: InputsDep) -> dict[str, Any]:
    """An image (content type ``image/*``) or a video (``video/*``) sent as the body, kept under the state dir by
    its content's sha256: its path can be a request's image or video field (a short value in place of an inline
    data URL; the same file twice is one file). An image is decoded in full first, as a job's input is: a truncated
    or oversized image is a 422 here; a video is probed by the bundled ffmpeg (a video stream with frames, within
    the frame and pixel limits)."""
    raw = await request.body()
    digest = hashlib.sha256(raw).hexdigest()
    problems: list[str] = []
    video = request.headers.get("content-type", "").lower().startswith("video/")
    if video:
        path = await run_in_threadpool(inputs.write_video, "body", raw, settings.inputs_dir / "uploads", digest[:32],
                                       problems)
    else:
        path = await run_in_threadpool(inputs.write_image, "body", raw, settings.inputs_dir / "uploads", digest[:32],
                                       problems, decode=True)
    if path is None:
        raise UsageError("; ".join(problems), hint="send the bytes of an MP4, WebM or GIF video (or another the "
                                                   "bundled ffmpeg reads)" if video else
                         "send the bytes of a PNG, JPEG, WebP, BMP, GIF or TIFF image")
    return {"path": str(path), "sha256": digest, "bytes": len(raw)}


@router.post("/v1/jobs", status_code=202)
def submit(spec: JobSpec, state: StateDep,
           key: Annotated[str | None, Header(alias="Idempotency-Key", description=(
               "The same key and request give the same job (200, Idempotent-Replayed: true; kept across restarts "
               "while the job exists); another request with the key is a 409"))] = None) -> Any:
    job = submit_job(state, spec, idempotency_key(key))
    if job.get("replayed"):
        return JSONResponse(job, 200, headers={"Idempotent-Replayed": "true"})
    return job


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


@router.post("/v1/jobs/{job_id}/interrupt", status_code=202)
def interrupt(job_id: str, store: StoreDep, workers: WorkersDep) -> dict[str, Any]:
    """Stop a running job early and keep what it has: it skips its remaining steps at its next one, decodes
    the latents of that step and ends ``done`` (info ``interrupted_at_step``). Unlike a cancel (DELETE), which
    discards the run. A job that has not started has nothing to keep (409: DELETE cancels it)."""
    found = _job(store, job_id)
    outcome = workers.interrupt(job_id) if found["state"] in ("queued", "running") else None
    if outcome == "requested":
        return {**(store.get(job_id) or found), "interrupt_requested": True}
    if outcome == "queued":
        raise HTTPException(409, f"job {job_id} has not started: nothing to keep yet (DELETE cancels it)")
    raise HTTPException(409, f"job {job_id} is {(store.get(job_id) or found)['state']}: it is not running")


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
    return StreamingResponse(_event_stream(store, workers.events, job_id, workers.previews),
                             media_type="text/event-stream")


def preview_data(event: dict[str, Any]) -> dict[str, Any]:
    """A preview as the API gives it: ``{step, steps, width, height, png}`` (png: the image's bytes, base64)."""
    return {"step": event["step"], "steps": event["total"], "width": event["width"], "height": event["height"],
            "png": base64.b64encode(event["png"]).decode()}


async def _event_stream(store: JobStore, logs: dict[str, list[dict[str, Any]]], job_id: str,
                        previews: dict[str, dict[str, Any]] | None = None):
    """The job's state when the stream opens, every step and stage the workers report, the latest preview
    whenever there is a newer one (previews are the latest only: a slow reader skips some), then its end."""
    def sse(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps({'id': job_id, **data})}\n\n"

    current = store.get(job_id)
    if current is None:  # deleted since the route looked
        yield sse("deleted", {})
        return
    yield sse("state", {key: current.get(key) for key in ("state", "stage", "step", "steps", "position")})
    sent, last_state, last_preview = 0, current["state"], None
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
        preview = (previews or {}).get(job_id)
        if preview is not None and preview is not last_preview:
            last_preview = preview
            yield sse("preview", preview_data(preview))
        if current["state"] != last_state:
            last_state = current["state"]
            yield sse("state", {"state": last_state, "error": current.get("error")})
        if current["state"] in TERMINAL:
            yield sse("end", {"state": current["state"]})
            return
        await asyncio.sleep(0.05)
