"""What the OpenAI-compatible routes share (``openai_images``, ``openai_videos``): OpenAI's error shape, the
models a request may name, and the mapping of OpenAI's ``size``, ``quality`` and ``seconds`` to Codex fields.

- **Errors** are OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (``OpenAIRoute``): a Codex
  usage error or a validation problem is a 400 ``invalid_request_error`` whose ``param`` is the OpenAI
  parameter the Codex field came from (``width`` -> ``size``, ``steps`` -> ``quality``...). An error the
  SDK should not retry carries ``x-should-retry: false`` (the SDK would retry a 409 or a 500).
- **Models**: an engine key (its default model), ``tiny-<engine>`` (its random-weight test model), or a
  checkpoint's name from the models folders; OpenAI's own names (``gpt-image-1``, ``dall-e-3``,
  ``sora-2``...) and no model at all run ``--openai-default-model`` / ``--openai-default-video-model``,
  and the answer says so (``codex.substituted``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.datastructures import State
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import ParamError, UsageError
from .bodies import StrictJSONRoute, capped, excerpt
from .store import StoreUnavailable

# OpenAI's model names, by what they make (the SDK's ImageModel and VideoModel, and those retired)
OPENAI_IMAGE = re.compile(r"(gpt-image|dall-e|chatgpt-image)[\w.-]*")
OPENAI_VIDEO = re.compile(r"sora[\w.-]*")
# a Codex field -> the OpenAI parameter it comes from
PARAMS = {"width": "size", "height": "size", "width x height": "size", "steps": "quality", "batch_size": "n",
          "num_frames": "seconds", "fps": "seconds", "init_image": "image", "mask_image": "mask", "prompt": "prompt",
          "model": "model", "body": None}
VIDEO_PARAMS = {**PARAMS, "init_image": "input_reference"}
TYPES = {401: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error",
         409: "invalid_request_error", 429: "rate_limit_error"}
CODES = {401: "invalid_api_key", 404: "not_found", 409: "conflict", 413: "request_too_large", 429: "rate_limit_exceeded"}
# quality -> a share of the preset's steps (the model authors' recommended count: "high" and "auto")
QUALITY = {"low": 0.5, "medium": 0.75, "high": 1.0, "auto": 1.0, "standard": 1.0, "hd": 1.0, "xhigh": 1.5,
           "max": 2.0}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("server_error" if status >= 500 else TYPES.get(status, "invalid_request_error"))


def error_response(exc: OpenAIError, headers: dict[str, str] | None = None) -> JSONResponse:
    retry = exc.status in (429, 503)  # what waiting cures; the SDK retries these
    return JSONResponse({"error": {"message": capped(exc.message), "type": exc.kind, "param": exc.param,
                                   "code": exc.code}}, exc.status,
                        headers={**(headers or {}), "x-should-retry": "true" if retry else "false"})


def _param(message: str, names: dict[str, str | None]) -> str | None:
    """The OpenAI parameter a Codex message names first ("steps: got 0" -> "quality")."""
    match = re.match(r"(?:invalid request: )?([\w. ]+?)(?:\.\d+)?:", message)
    name = match.group(1) if match else None
    return names.get(name, name) if name else None


def as_openai(exc: Exception, path: str) -> OpenAIError | None:
    """``exc`` as OpenAI would answer it; None for what is not a request's fault or the service's state."""
    names = VIDEO_PARAMS if path.startswith("/v1/videos") else PARAMS
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        param = loc[0] if loc else None
        what = "Unrecognized request argument supplied" if first.get("type") == "extra_forbidden" else \
            str(first.get("msg", "invalid request"))
        return OpenAIError(400, f"{what}: {param}" if param else what, param, "invalid_value")
    if isinstance(exc, ParamError):
        message = "; ".join(exc.problems) or exc.message
        return OpenAIError(400, message + (f" ({exc.hint})" if exc.hint else ""), _param(message, names),
                           "invalid_value")
    if isinstance(exc, UsageError):
        return OpenAIError(400, exc.message + (f" ({exc.hint})" if exc.hint else ""), _param(exc.message, names),
                           "invalid_value")
    if isinstance(exc, HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return OpenAIError(exc.status_code, detail, code=CODES.get(exc.status_code))
    if isinstance(exc, StoreUnavailable):
        return OpenAIError(503, str(exc), code="service_unavailable")
    return None


class OpenAIRoute(StrictJSONRoute):
    """A route that answers every error as OpenAI does (the token check and the guards' included)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001  (only what as_openai knows is answered; the rest goes on)
                answer = as_openai(exc, request.url.path)
                if answer is None:
                    raise
                headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
                headers.pop("x-should-retry", None)
                return error_response(answer, headers)

        return openai_errors


@dataclass
class Target:
    """What a request's ``model`` runs: an engine, the model argument of a job, and what was substituted."""

    engine: Any
    model: str | None
    name: str  # as the answer names it: what the request asked for, or the default
    substituted: list[str] = field(default_factory=list)


def resolve_model(state: State, asked: str | None, tasks: tuple[str, ...], video: bool) -> Target:
    """The engine and model for ``asked`` (see the module's docstring); an engine without any of ``tasks`` is
    refused, naming the models that have one."""
    from ..registry import engines

    settings = state.settings
    default, flag = ((settings.openai_video_model, "--openai-default-video-model") if video
                     else (settings.openai_image_model, "--openai-default-model"))
    substituted = []
    name = asked
    if asked is None or (OPENAI_VIDEO if video else OPENAI_IMAGE).fullmatch(asked):
        if default is None:
            raise OpenAIError(400, f"model: {excerpt(asked) if asked else 'none given'}: this service runs OpenAI's "
                                   f"model names as {flag}, which is not set; name a model it has: "
                                   f"{', '.join(available(tasks)[:20])}", "model", "model_not_found")
        substituted.append(f"model {asked or '(none)'} -> {default} ({flag})")
        asked = default
    installed = engines()
    if asked.startswith("tiny-") and asked[5:] in installed:
        engine, model = installed[asked[5:]], "tiny"
    elif asked in installed:
        engine, model = installed[asked], None
    else:
        engine, model = _checkpoint(asked, tasks)
    if engine is None or not any(task in engine.tasks for task in tasks):
        raise OpenAIError(400 if engine is None else 400,
                          f"model: {excerpt(asked)} is not a model this service runs for {' or '.join(tasks)}; "
                          f"its models: {', '.join(available(tasks)[:20])}", "model", "model_not_found")
    return Target(engine, model, name or asked, substituted)


def check_defaults(image_model: str | None, video_model: str | None) -> None:
    """`codex serve`'s --openai-default-model and --openai-default-video-model name models this service runs."""
    for value, flag, tasks in ((image_model, "--openai-default-model", ("txt2img",)),
                               (video_model, "--openai-default-video-model", ("txt2vid", "img2vid"))):
        if value is not None and value not in available(tasks):
            raise UsageError(f"{flag} {value}: not a model this service runs for {' or '.join(tasks)}",
                             hint=f"one of: {', '.join(available(tasks)[:20])}")


def _checkpoint(name: str, tasks: tuple[str, ...]) -> tuple[Any, str | None]:
    """A checkpoint in the models folders by its name or file name, and the first engine that runs it."""
    from .. import model_files
    from ..registry import engines

    installed = engines()
    for row in model_files.describe(["checkpoints"], hashes=False):
        if name in (row["name"], Path(row["path"]).name):
            for key in row["engines"]:
                if any(task in installed[key].tasks for task in tasks):
                    return installed[key], row["path"]
    return None, None


def available(tasks: tuple[str, ...]) -> list[str]:
    """The model names a request may give for ``tasks``: engines, their tiny models, checkpoints."""
    from .. import model_files
    from ..registry import engines

    keys = [key for key, engine in engines().items() if any(task in engine.tasks for task in tasks)]
    files = [row["name"] for row in model_files.describe(["checkpoints"], hashes=False)
             if set(row["engines"]) & set(keys)]
    return [*keys, *(f"tiny-{key}" for key in keys), *files]


def parse_size(size: Any, param: str = "size") -> tuple[int, int] | None:
    """``"WxH"`` as (width, height); None for ``"auto"`` or none (the preset's size)."""
    if size is None or size == "auto":
        return None
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size) if isinstance(size, str) else None
    if not match:
        raise OpenAIError(400, f"{param}: {excerpt(size)}; WIDTHxHEIGHT (e.g. 1024x1024) or auto", param,
                          "invalid_size")
    return int(match.group(1)), int(match.group(2))


def preset_value(target: Target, task: str, name: str) -> Any:
    """What the presets give ``name`` for this model (its checkpoint variant's presets, when it has variants)."""
    from .. import presets, sources

    variant = None
    if target.engine.variants:
        try:
            variant = sources.variant_of(target.engine, sources.resolve(target.engine, target.model, task=task,
                                                                        download=False, allow_pickle=False))
        except Exception:  # noqa: BLE001  (not found yet: the job's validation says why; the default variant's)
            variant = None
    return presets.fill(target.engine, task, {}, variant).request.get(name)


def quality_steps(target: Target, task: str, quality: str | None) -> int | None:
    """``quality`` as steps: a share of the preset's steps (``QUALITY``); None leaves the preset's."""
    if quality is None or QUALITY.get(quality) == 1.0:
        return None
    if quality not in QUALITY:
        raise OpenAIError(400, f"quality: {excerpt(quality)}; one of {', '.join(QUALITY)}", "quality", "invalid_value")
    steps = preset_value(target, task, "steps")
    if not isinstance(steps, int):
        return None
    return max(1, round(steps * QUALITY[quality]))
