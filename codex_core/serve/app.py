"""The service's FastAPI app, assembled: the state dir locked, the job store opened and recovered,
the workers and input rules built and put on ``app.state``, the allowed-hosts check, the body limit
and the error handlers added (422 for a usage error, 503 while the job store cannot record, capped
bodies), and the routers included (OpenAPI at ``/docs``). The app's lifespan starts the workers and,
on a stop, gives the running jobs their grace (``Workers.stop``).

The routes live in their own modules and take what they use from ``app.state`` through the
dependencies of ``dependencies.py``: ``routes_info`` (health, engines, schemas, presets, samplers,
models; the API docs), ``routes_jobs`` (inputs, jobs, their files and events) and ``a1111``
(``/sdapi/v1``), ``routes_preprocess`` (the control-image preprocessors), ``openai_images`` and ``openai_videos`` (OpenAI's ``/v1/images``, ``/v1/videos``). The webhook
sender (``webhooks.Sender``) runs beside the workers. Every route but ``/v1/health`` requires the credentials
(``--token``, ``--api-auth``) when there are some, the docs too; the service's routes take state-changing requests
only as ``guards.browser_safe`` says.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import CodexError, ParamError, UsageError
from . import a1111, openai_images, openai_videos, routes_info, routes_jobs, routes_preprocess
from .a1111.checkpoints import Checkpoints
from .bodies import capped, capped_list, http_problem, validation_problem
from .dependencies import authorised
from .guards import AllowedHosts, browser_safe
from .inputs import Inputs
from .settings import Settings
from .store import JobStore, StoreUnavailable
from .waits import JobWaits
from .webhooks import Destinations, Sender, signing_key, state_dir_secret
from .worker import Workers


def create_app(settings: Settings) -> FastAPI:
    """The service over ``settings.state_dir``. What the routes share is on ``app.state``: ``settings``,
    ``store`` (the job queue), ``workers``, ``inputs`` (what a request may read), ``a1111`` (the A1111 layer's
    checkpoints and options); and
    ``lock`` (the state dir's, held while the app lives) and ``recovered`` (the jobs a restart re-queued,
    finished from their run folders, cancelled or failed, for the command to report)."""
    from ..model_files import roots as model_roots

    lock = _lock_state_dir(settings.state_dir)
    store = JobStore(settings.state_dir / "jobs.sqlite3")
    # the deliveries of jobs that end from now on, recovery's included, and of those pending since the last run
    sender = Sender(store, signing_key(settings.webhook_secret or state_dir_secret(settings.state_dir)),
                    Destinations(tuple(settings.webhook_allow_hosts)), settings.webhook_attempts,
                    trusted=(settings.webhook_url,) if settings.webhook_url else ())
    outputs = settings.outputs
    try:
        recovered = store.recover(outputs)
    except StoreUnavailable as exc:
        raise UsageError(f"--state-dir {settings.state_dir}: {exc}",
                         hint="another program holds the database's lock (an sqlite3 shell, a backup?) or its disk "
                              "is full; start again once it is free") from None
    for stale in outputs.glob(".*.partial") if outputs.is_dir() else ():  # a run the last process died in
        shutil.rmtree(stale, ignore_errors=True)
    # one worker per device, each with a process of its own that keeps its models loaded
    make_runner = None
    if settings.ray:  # or each worker a Ray actor (a gang of them with --parallel) somewhere in the cluster
        from functools import partial

        from .ray_runner import RayRunner

        make_runner = partial(RayRunner, kind=settings.ray["kind"], world=settings.ray["world"])
    workers = Workers(store, outputs, settings.devices, settings.runtime, settings.cancel_grace, settings.stop_grace,
                      settings.preview_every, make_runner)
    inputs = Inputs([*settings.input_roots, settings.inputs_dir, *(r.path for r in model_roots())],
                    settings.limits.input_pixels)

    app = FastAPI(title="Codex", version=__version__, summary="Image and video diffusion jobs", lifespan=_lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)  # routes_info.docs serves them, behind the token
    app.state.settings, app.state.lock, app.state.recovered = settings, lock, recovered
    app.state.store, app.state.workers, app.state.inputs = store, workers, inputs
    app.state.webhooks = sender
    app.state.waits = JobWaits(store)  # the A1111 calls waiting for their jobs
    app.state.a1111 = Checkpoints(settings.state_dir, settings.default_model)  # the A1111 layer's checkpoint
    app.state.a1111.check_default()  # a --default-model that names nothing is refused at start
    app.state.a1111_interrupted = deque(maxlen=64)  # jobs A1111's interrupt stopped: their calls run no more batches
    app.middleware("http")(_limit_body)
    app.add_middleware(AllowedHosts, names=settings.allowed_hosts)  # added last: runs first
    app.add_exception_handler(UsageError, _usage)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.add_exception_handler(HTTPException, http_problem)
    app.include_router(routes_info.public)  # /v1/health answers without the token
    app.include_router(routes_info.docs, dependencies=[Depends(authorised)])
    for router in (routes_info.router, routes_jobs.router, a1111.router, openai_images.router, openai_videos.router):
        app.include_router(router, dependencies=[Depends(browser_safe), Depends(authorised)])
    # the preprocessors (a control image's preview); a router of its own, beside the others
    app.include_router(routes_preprocess.router, dependencies=[Depends(browser_safe), Depends(authorised)])
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    app.state.workers.start()
    app.state.webhooks.start()
    yield
    await asyncio.to_thread(app.state.workers.stop)  # the running jobs' grace, then the worker processes exit
    await asyncio.to_thread(app.state.webhooks.stop)  # the deliveries still pending are sent after the next start


async def _limit_body(request: Request, call_next):
    """--max-body-bytes: a larger body is refused (413) before it is read, and so is one of unknown size (411)."""
    limit = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if request.method in ("POST", "PUT") and length is None and request.headers.get("transfer-encoding"):
        return JSONResponse({"detail": "send a Content-Length (chunked bodies are not accepted)"}, 411)
    if length is not None and not length.isdigit():
        return JSONResponse({"detail": "the Content-Length is not a number"}, 400)
    if length is not None and int(length) > limit:
        return JSONResponse({"detail": f"the body is {length} bytes; this service takes at most "
                                       f"{limit} (--max-body-bytes)"}, 413)
    return await call_next(request)


async def _usage(_request, exc: UsageError):
    return _problem(422, exc)


async def _unavailable(_request, exc: StoreUnavailable):
    """The job store cannot record (or read) now: 503, saying why; /v1/health says it too."""
    return JSONResponse({"detail": str(exc), "hint": "try again shortly; GET /v1/health reports the state"}, 503,
                        headers={"Retry-After": "5"})


def _problem(status: int, exc: CodexError) -> JSONResponse:
    """The error as JSON: its message, hint and field-named problems, each capped (``bodies.capped``)."""
    body: dict[str, Any] = {"detail": capped(exc.message), "hint": capped(exc.hint) if exc.hint else exc.hint}
    if isinstance(exc, ParamError):
        body["problems"] = capped_list(exc.problems)
    return JSONResponse(body, status_code=status)


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
