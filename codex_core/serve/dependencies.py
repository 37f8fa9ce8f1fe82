"""What the routes need, as FastAPI dependencies: the credentials check (``--token``, ``--api-auth``), and
the parts of the service that ``create_app`` puts on ``app.state`` (its settings, job store, workers and
input rules).

A route names the parts it uses (``store: StoreDep``) and gets this app's: the routers are module-level
and hold no state of their own, so each can be read alone and every app that includes them is its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.datastructures import State

from .inputs import Inputs
from .settings import Settings
from .store import JobStore
from .worker import Workers


def authorised(request: Request) -> None:
    """With ``--token`` or ``--api-auth`` (A1111's flag), every request must carry a credential they accept,
    as ``Authorization: Bearer TOKEN`` or HTTP Basic (``USER:PASSWORD`` of ``--api-auth``, or any user name
    with the token as its password: A1111 clients send Basic). The schemes are taken in any case (RFC 9110)."""
    settings = request.app.state.settings
    if settings.token is None and not settings.api_auth:
        return
    if not credentials_match(request.headers.get("authorization", ""), settings.token, settings.api_auth):
        accepted = ("a valid `Authorization: Bearer TOKEN` header" if not settings.api_auth else
                    "HTTP Basic credentials of --api-auth" + (" or `Authorization: Bearer TOKEN`" if settings.token
                                                               else ""))
        raise HTTPException(401, f"{accepted} is required", headers={"WWW-Authenticate": 'Basic realm="codex"'
                                                                     + (", Bearer" if settings.token else "")})


def credentials_match(header: str, token: str | None, api_auth: tuple[tuple[str, str], ...]) -> bool:
    """Whether an ``Authorization`` header carries the token or one of the user:password pairs.

    Every candidate is compared, whatever matched before it, and each comparison is of two SHA-256 digests
    (``secrets.compare_digest`` on equal lengths): the time taken tells neither which user exists nor how
    long a secret is."""
    scheme, _, given = header.strip().partition(" ")
    scheme, given = scheme.lower(), given.strip()
    if scheme == "bearer":
        return token is not None and _same(given, token)
    if scheme != "basic":
        return False
    try:
        user, _, password = base64.b64decode(given, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):  # not base64, or not UTF-8
        return False
    matched = False
    for known_user, known_password in api_auth:
        matched |= _same(user, known_user) & _same(password, known_password)
    if token is not None:
        matched |= _same(password, token)
    return matched


def _same(given: str, secret: str) -> bool:
    return secrets.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
                                  hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest())


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
