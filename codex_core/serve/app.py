"""The native HTTP API (``/v1``) on FastAPI: engines, schemas, presets, samplers and jobs.

A job is validated when it is submitted (the CLI's prepare: field-named problems, 422, nothing
queued), stored durably, run by the worker, and its outputs are written exactly as `codex run`
writes them, under the state dir. OpenAPI is served at ``/docs``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import OrderedDict
from contextlib import asynccontextmanager
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..errors import CodexError, ParamError, UsageError
from ..runtime import Runtime
from .inputs import Inputs
from .store import TERMINAL, JobStore
from .worker import Worker


@dataclass
class Settings:
    state_dir: Path
    token: str | None = None
    input_roots: list[Path] = field(default_factory=list)
    max_body_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 16384 * 16384
    max_batch_size: int = 8
    max_queue: int = 100
    devices: list[str] = field(default_factory=lambda: ["auto"])  # one worker each
    runtime: Runtime = field(default_factory=Runtime)  # how the workers run models (device: each its own)


class JobSpec(BaseModel):
    """``POST /v1/jobs``: what `codex run` takes, as JSON."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    task: str
    request: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    formats: list[str] | None = None
    preset: str | None = None


def _problem(status: int, exc: CodexError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message, "hint": exc.hint}
    if isinstance(exc, ParamError):
        body["problems"] = exc.problems
    return JSONResponse(body, status_code=status)


class Workers:
    """The service's workers, one per device, as one: wake, cancel and event logs span them all."""

    def __init__(self, workers: list[Worker], events):
        self.workers, self.events = workers, events

    @property
    def current(self) -> str | None:
        return next((w.current for w in self.workers if w.current), None)

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def wake(self) -> None:
        """A job was queued: idle workers look now rather than at their next poll."""
        for w in self.workers:
            w.wake.set()

    def stop(self) -> None:
        for w in self.workers:
            w.stopping = True
            w.wake.set()

    def cancel(self, job_id: str) -> None:
        for w in self.workers:
            w.cancel(job_id)


def _lock_state_dir(state_dir: Path):
    """An exclusive lock on the state dir for the life of the process: one service per queue."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "serve.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise UsageError(f"--state-dir {state_dir}: another codex serve is using it",
                         hint="stop it, or give this one its own --state-dir") from None
    return handle


def create_app(settings: Settings) -> FastAPI:
    from ..model_files import roots as model_roots

    lock = _lock_state_dir(settings.state_dir)
    store = JobStore(settings.state_dir / "jobs.sqlite3")
    recovered = store.recover()
    outputs = settings.state_dir / "outputs"
    for stale in outputs.glob(".*.partial") if outputs.is_dir() else ():  # a run the last process died in
        shutil.rmtree(stale, ignore_errors=True)
    events: "OrderedDict[str, list[dict[str, Any]]]" = OrderedDict()
    workers = [Worker(store, outputs, device, events, settings.runtime) for device in settings.devices]
    if len(workers) > 1 and not os.environ.get("CODEX_MODEL_CACHE_MODELS"):
        from ..model_cache import cache

        cache.configure(max_models=len(workers))  # each worker keeps its model loaded
    worker = Workers(workers, events)
    inputs = Inputs([*settings.input_roots, settings.state_dir / "inputs", *(r.path for r in model_roots())],
                    settings.max_image_pixels)
    @asynccontextmanager
    async def lifespan(_app):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="Codex", version=__version__, summary="Image and video diffusion jobs", lifespan=lifespan)
    app.state.store, app.state.worker, app.state.recovered, app.state.lock = store, worker, recovered, lock
    app.state.settings = settings

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method in ("POST", "PUT") and length is None and request.headers.get("transfer-encoding"):
            return JSONResponse({"detail": "send a Content-Length (chunked bodies are not accepted)"}, 411)
        if length is not None and int(length) > settings.max_body_bytes:
            return JSONResponse({"detail": f"the body is {length} bytes; this service takes at most "
                                           f"{settings.max_body_bytes} (--max-body-bytes)"}, 413)
        return await call_next(request)

    def authorised(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise HTTPException(401, "a valid `Authorization: Bearer TOKEN` header is required",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorised)]

    @app.exception_handler(UsageError)
    async def _usage(_request, exc: UsageError):
        return _problem(422, exc)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "queued": store.queued_count(),
                "workers": [{"device": w.device, "running": w.current} for w in worker.workers]}

    @app.get("/v1/engines", dependencies=auth)
    def engines() -> list[dict[str, Any]]:
        from ..registry import engines as installed

        return [engine.describe() for engine in installed().values()]

    @app.get("/v1/engines/{engine}/{task}/schema", dependencies=auth)
    def schema(engine: str, task: str) -> dict[str, Any]:
        from ..schema import request_schema

        return request_schema(engine, task)

    @app.get("/v1/presets/{engine}/{task}", dependencies=auth)
    def presets(engine: str, task: str, variant: str | None = None, preset: str | None = None) -> dict[str, Any]:
        from .. import presets as presets_module
        from ..registry import get_engine

        found = get_engine(engine)
        if task not in found.tasks:
            raise UsageError(f"engine {engine!r} has no task {task!r}; its tasks: {', '.join(found.tasks)}")
        fill = presets_module.fill(found, task, {}, variant, preset)
        return {"engine": engine, "task": task, "values": fill.patch, "files": fill.files}

    @app.get("/v1/samplers/{engine}", dependencies=auth)
    def samplers(engine: str) -> dict[str, Any]:
        from .. import samplers as samplers_module
        from ..registry import get_engine, samplers_for

        found = get_engine(engine)
        if not found.sampler_family:
            return {"sampler_family": None, "samplers": []}
        return samplers_module.describe(found.sampler_family, *samplers_for(found))

    @app.get("/v1/models", dependencies=auth)
    def models(engine: str | None = None, kind: str = "checkpoints") -> list[dict[str, Any]]:
        """The model files of the models folders (`codex models`), of one kind, optionally those an engine runs."""
        from ..model_files import KINDS, describe
        from ..registry import get_engine

        if kind not in KINDS:
            raise UsageError(f"kind: {kind!r} is not a kind of model file; the kinds: {', '.join(KINDS)}")
        if engine is not None:
            get_engine(engine)
        return describe([kind], engine, hashes=False)

    @app.post("/v1/inputs", status_code=201, dependencies=auth)
    async def upload(request: Request) -> dict[str, Any]:
        """An image sent as the body, kept under the state dir by its content's sha256: its path can be a
        request's image field (a short value in place of an inline data URL; the same image twice is one file)."""
        raw = await request.body()
        digest = hashlib.sha256(raw).hexdigest()
        problems: list[str] = []
        path = inputs.write_image("body", raw, settings.state_dir / "inputs" / "uploads", digest[:32], problems)
        if path is None:
            raise UsageError("; ".join(problems), hint="send the bytes of a PNG, JPEG, WebP, BMP, GIF or TIFF image")
        return {"path": str(path), "sha256": digest, "bytes": len(raw)}

    @app.post("/v1/jobs", status_code=202, dependencies=auth)
    def submit(spec: JobSpec) -> dict[str, Any]:
        return submit_spec(spec)

    def submit_spec(spec: JobSpec) -> dict[str, Any]:
        """Validate (the CLI's prepare: nothing loads), settle the inputs, store: the job, queued."""
        from ..orchestrator import RunOptions, prepare
        from ..registry import get_engine

        if store.queued_count() >= settings.max_queue:
            raise HTTPException(429, f"the queue is full ({settings.max_queue} jobs waiting, --max-queue)")
        engine = get_engine(spec.engine)
        if spec.task not in engine.tasks:
            raise UsageError(f"engine {spec.engine!r} has no task {spec.task!r}; its tasks: {', '.join(engine.tasks)}")
        if spec.model and spec.model != "tiny" and Path(spec.model).expanduser().exists() \
                and not inputs.allowed(spec.model):
            raise UsageError(f"model: {spec.model!r} is outside the folders this service may read")
        batch = spec.request.get("batch_size")
        if isinstance(batch, int) and batch > settings.max_batch_size:
            raise UsageError(f"batch_size: got {batch}; this service takes at most {settings.max_batch_size} "
                             "(--max-batch-size)")
        staging = settings.state_dir / "inputs" / secrets.token_hex(8)
        try:
            request = inputs.settle(engine.params_model(spec.task), spec.request, staging)
            # the CLI's validation: field-named problems, nothing queued (prepare loads nothing)
            prepared = prepare(spec.engine, spec.task, request, RunOptions(model=spec.model, out=outputs, quiet=True,
                                                                formats=tuple(spec.formats) if spec.formats else None,
                                                                preset=spec.preset))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a refused request leaves nothing behind
            raise
        data = {**spec.model_dump(), "request": request, "inputs_dir": str(staging) if staging.exists() else None}
        job = store.submit(data)
        worker.wake()
        # what the run will say before it starts (e.g. a speed mode the checkpoint does not support, and why)
        return {**job, "warnings": list(prepared.plan.warnings)}

    app.state.submit = lambda data: submit_spec(JobSpec(**data))
    from .a1111 import router as a1111_router

    app.include_router(a1111_router(app.state, auth))

    @app.get("/v1/jobs", dependencies=auth)
    def jobs(state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return store.list(state, limit)

    def _job(job_id: str) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/v1/jobs/{job_id}", dependencies=auth)
    def job(job_id: str) -> dict[str, Any]:
        return _job(job_id)

    @app.delete("/v1/jobs/{job_id}", dependencies=auth)
    def delete(job_id: str) -> JSONResponse:
        found = _job(job_id)
        if found["state"] == "queued" and store.cancel_queued(job_id):
            return JSONResponse(store.get(job_id), 200)
        if found["state"] in ("queued", "running"):  # it started meanwhile: stop it at the next step
            worker.cancel(job_id)
            return JSONResponse({**store.get(job_id), "cancel_requested": True}, 202)
        run_dir = (found.get("result") or {}).get("run_dir")
        for folder in (run_dir, found["spec"].get("inputs_dir")):  # its outputs and the images it was sent
            if folder and Path(folder).resolve().is_relative_to(settings.state_dir.resolve()):
                shutil.rmtree(folder, ignore_errors=True)
        store.delete(job_id)
        return JSONResponse({"id": job_id, "deleted": True}, 200)

    @app.get("/v1/jobs/{job_id}/files/{name}", dependencies=auth)
    def file(job_id: str, name: str) -> FileResponse:
        found = _job(job_id)
        files = {Path(path).name: Path(path) for path in (found.get("result") or {}).get("files", [])}
        if name not in files:
            raise HTTPException(404, f"job {job_id} has no file {name!r}; its files: {', '.join(files) or 'none yet'}")
        return FileResponse(files[name])

    @app.get("/v1/jobs/{job_id}/events", dependencies=auth)
    async def events(job_id: str) -> StreamingResponse:
        _job(job_id)

        async def stream():
            """The job's state when the stream opens, every step and stage the worker reports, then its end."""
            def sse(name: str, data: dict[str, Any]) -> str:
                return f"event: {name}\ndata: {json.dumps({'id': job_id, **data})}\n\n"

            current = store.get(job_id)
            yield sse("state", {key: current.get(key) for key in ("state", "stage", "step", "steps", "position")})
            sent, last_state = 0, current["state"]
            while True:
                current = store.get(job_id)
                if current is None:
                    yield sse("deleted", {})
                    return
                log = worker.events.get(job_id, [])
                for event in log[sent:]:
                    kind = event["event"]
                    yield sse(kind, {key: value for key, value in event.items() if key != "event"})
                sent = len(log)
                if current["state"] != last_state:
                    last_state = current["state"]
                    yield sse("state", {"state": last_state, "error": current.get("error")})
                if current["state"] in TERMINAL:
                    yield sse("end", {"state": current["state"]})
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app
