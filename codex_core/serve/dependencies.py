"""What the routes need, as FastAPI dependencies: the token check, and the parts of the service that
``create_app`` puts on ``app.state`` (its settings, job store, workers and input rules).

A route names the parts it uses (``store: StoreDep``) and gets this app's: the routers are module-level
and hold no state of their own, so each can be read alone and every app that includes them is its own.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.datastructures import State

from .inputs import Inputs
from .settings import Settings
from .store import JobStore
from .worker import Workers


def authorised(request: Request) -> None:
    """With ``--token``, the request's bearer token must be it: the scheme in any case (``bearer`` too, as
    RFC 9110 has it), the token compared in constant time."""
    token = request.app.state.settings.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "a valid `Authorization: Bearer TOKEN` header is required",
                            headers={"WWW-Authenticate": "Bearer"})


# The getters are coroutines only so that FastAPI calls them on the event loop, not in a worker thread.
async def app_state(request: Request) -> State:
    return request.app.state


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def store(request: Request) -> JobStore:
    return request.app.state.store


async def workers(request: Request) -> Workers:
    return request.app.state.workers


async def inputs(request: Request) -> Inputs:
    return request.app.state.inputs


StateDep = Annotated[State, Depends(app_state)]
SettingsDep = Annotated[Settings, Depends(settings)]
StoreDep = Annotated[JobStore, Depends(store)]
WorkersDep = Annotated[Workers, Depends(workers)]
InputsDep = Annotated[Inputs, Depends(inputs)]
