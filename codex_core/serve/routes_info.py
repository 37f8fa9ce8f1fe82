"""``/v1``'s descriptive routes: the service's health, and what it can run (engines, request schemas,
presets, samplers, model files). They read the installed plugins and the models folders; none queues
anything.

``public`` holds ``/v1/health``, the one route that needs no token (``create_app`` includes ``router``
behind the token check); ``docs`` the API's own description (``/openapi.json``, ``/docs``, ``/redoc``),
FastAPI's pages on routes of their own so that they too need the token when there is one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from .. import __version__
from ..errors import UsageError
from .dependencies import WorkersDep

public = APIRouter()
router = APIRouter()
docs = APIRouter(include_in_schema=False)


@public.get("/v1/health")
def health(workers: WorkersDep) -> dict[str, Any]:
    """``status`` "ok", or "degraded" with the ``reasons`` (a worker down, a job store that cannot be written);
    counts and states only (it needs no token): jobs queued, and per worker its state and running count."""
    found = workers.health()
    return {"status": found["status"], "reasons": found["reasons"], "version": __version__,
            "queued": found["queued"], "workers": found["workers"]}


@router.get("/v1/engines")
def engines() -> list[dict[str, Any]]:
    from ..registry import engines as installed

    return [engine.describe() for engine in installed().values()]


@router.get("/v1/engines/{engine}/{task}/schema")
def schema(engine: str, task: str, variant: str | None = None) -> dict[str, Any]:
    """The request's JSON Schema; preset values as defaults, of ``variant`` (default: the engine's default one)."""
    from ..schema import request_schema

    return request_schema(engine, task, variant)


@router.get("/v1/presets/{engine}/{task}")
def presets(engine: str, task: str, variant: str | None = None, preset: str | None = None) -> dict[str, Any]:
    """What fills a request's missing fields. An engine with checkpoint variants answers for ``variant``, or for
    its default variant (named in the answer, with the others) when none is given."""
    from .. import presets as presets_module
    from ..registry import get_engine
    from ..schema import check_variant

    found = get_engine(engine)
    if task not in found.tasks:
        raise UsageError(f"engine {engine!r} has no task {task!r}; its tasks: {', '.join(found.tasks)}")
    variant = check_variant(found, variant, "variant")
    fill = presets_module.fill(found, task, {}, variant, preset)
    return {"engine": engine, "task": task, "variant": variant, "variants": list(found.variants),
            "values": fill.patch, "files": fill.files}


@router.get("/v1/samplers/{engine}")
def samplers(engine: str, task: str | None = None) -> dict[str, Any]:
    """``codex samplers ENGINE --json``: the engine's samplers and schedule types (for ``task``: its first by
    default), and what each A1111/Forge name runs there, exactly or as the nearest."""
    from .. import samplers as samplers_module
    from ..registry import get_engine, sampler_names_for, samplers_for

    found = get_engine(engine)
    if not found.sampler_family:
        return {"sampler_family": None, "samplers": []}
    task = task or next(iter(found.tasks))
    if task not in found.tasks:
        raise UsageError(f"task: engine {engine!r} has no task {task!r}; its tasks: {', '.join(found.tasks)}")
    return {"engine": engine, "task": task, **samplers_module.describe(
        found.sampler_family, *samplers_for(found, task), sampler_names_for(found), engine, task)}


@router.get("/v1/models")
def models(response: Response, engine: str | None = None, kind: str = "checkpoints") -> list[dict[str, Any]]:
    """The model files of the models folders (`codex models`), of one kind, optionally those an engine runs.

    What the scan skipped is listed with its ``problem`` (without ``engine``); when its time budget ran out,
    the header ``X-Codex-Scan: incomplete`` says so whatever the filter."""
    from ..model_files import KINDS, describe, scan_folders
    from ..registry import get_engine

    if kind not in KINDS:
        raise UsageError(f"kind: {kind!r} is not a kind of model file; the kinds: {', '.join(KINDS)}")
    if engine is not None:
        get_engine(engine)
    found = scan_folders([kind])
    if found.timed_out:
        response.headers["X-Codex-Scan"] = f"incomplete: the time budget of {found.seconds:g} s ran out " \
                                           "(CODEX_SCAN_SECONDS)"
    return describe([kind], engine, hashes=False, found=found)


@docs.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=f"{request.app.title} - Swagger UI",
                               oauth2_redirect_url=f"{root}/docs/oauth2-redirect")


@docs.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@docs.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{request.app.title} - ReDoc")
