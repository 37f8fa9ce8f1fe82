"""How the service reads JSON bodies and writes error bodies.

- A JSON body is read as the CLI reads ``--json``: a key given twice in one object is a 422, not the
  last value kept (``StrictJSONRoute``, the route class of the routers that take bodies).
- An error body is small whatever the request was: a message quotes a value by a short
  ``excerpt``, and every error body is ``capped`` at the edge (FastAPI's validation errors too, which
  would otherwise echo the whole ``input``): a 14 MB request never gets a 14 MB answer.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ..errors import UsageError
from ..requests import DuplicateKey, no_duplicate_keys

MESSAGE_CHARS = 2000  # a message longer than this is cut in the middle (its start names the field, its end the fix)
PROBLEMS = 50  # field-named problems listed in one answer; the rest are counted


def excerpt(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut in the middle when it is longer than ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit * 2 // 3]}…{text[-(limit // 3):]} ({len(text)} characters)"


def capped(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` whole, or its start and end with how much was cut between them."""
    if len(text) <= limit:
        return text
    head, tail = text[:limit * 3 // 4], text[-(limit // 4):]
    return f"{head} […{len(text) - len(head) - len(tail)} characters cut…] {tail}"


def capped_list(lines: list[str]) -> list[str]:
    kept = [capped(line, MESSAGE_CHARS // 4) for line in lines[:PROBLEMS]]
    return kept + ([f"… and {len(lines) - PROBLEMS} more"] if len(lines) > PROBLEMS else [])


async def validation_problem(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (``{"detail": [{"type", "loc", "msg", ...}]}``, as A1111 answers too), with each error's
    ``input`` and ``ctx`` quoted by an excerpt when long, and at most ``PROBLEMS`` errors."""
    errors = []
    for error in exc.errors()[:PROBLEMS]:
        shown = {"type": error.get("type"), "loc": [capped(str(part), 200) if isinstance(part, str) else part
                                                    for part in error.get("loc", ())],
                 "msg": capped(str(error.get("msg", "")), 500)}
        for key in ("input", "ctx"):
            if key in error:
                encoded = jsonable_encoder(error[key], custom_encoder={Exception: str})
                shown[key] = encoded if len(json.dumps(encoded)) <= 200 else excerpt(error[key])
        errors.append(shown)
    if len(exc.errors()) > PROBLEMS:
        errors.append({"type": "truncated", "loc": [], "msg": f"… and {len(exc.errors()) - PROBLEMS} more"})
    return JSONResponse({"detail": errors}, 422)


async def http_problem(_request: Request, exc: HTTPException) -> Response:
    """Starlette's answer for an ``HTTPException``, its message capped."""
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = capped(exc.detail) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = json.loads(await self.body(), object_pairs_hook=no_duplicate_keys)
        return self._strict_json


def _read_as_json(request: Request) -> bool:
    """Whether FastAPI reads this body as JSON: no content type, or a JSON one."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


class StrictJSONRoute(APIRoute):
    """A route whose JSON body may not give a key twice (``codex_core.requests.no_duplicate_keys``)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            request = _StrictJSONRequest(request.scope, request.receive)
            if _read_as_json(request) and await request.body():
                try:
                    await request.json()
                except DuplicateKey as exc:
                    raise UsageError(f"body: {capped(str(exc), 300)}", hint="give each field once") from None
                except (ValueError, RecursionError):
                    pass  # not JSON: FastAPI reads it again and answers its 422 (or 400)
            return await handler(request)

        return strict
