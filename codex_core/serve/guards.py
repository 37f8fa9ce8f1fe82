"""What keeps a web page in the user's browser from driving the service.

- **Allowed hosts** (``AllowedHosts``, every request): the ``Host`` header must be a loopback name or
  address (``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``::1``), the bind address when it is not
  loopback, or a name given with ``--allowed-host``. A DNS-rebinding page (``evil.example`` made to
  resolve to 127.0.0.1) sends its own name and is refused (400).
- **Same origin** (``browser_safe``, the service's routes): a state-changing request (POST, PUT, PATCH,
  DELETE) with an ``Origin`` must come from the service's own origin, and its body must be JSON or
  multipart (or what the route declares: the upload takes ``image/*`` or ``video/*``). A cross-site form can send
  ``text/plain`` or urlencoded bodies without asking first; a JSON or image body needs a CORS
  preflight, which this service never grants. Clients that are not browsers send no ``Origin``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from .bodies import excerpt

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
BODY_TYPES = ("application/json", "multipart/form-data")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def host_name(header: str | None) -> str | None:
    """The name a ``Host`` header gives (lower case, no port, no brackets, no final dot); None if malformed."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:7861
        end = header.find("]")
        return header[1:end] if end > 1 else None
    if header.count(":") > 1:  # an IPv6 address must be in brackets
        return None
    return header.partition(":")[0].rstrip(".") or None


def is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: browsers never ask DNS for these
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AllowedHosts:
    """ASGI middleware: a request (or WebSocket) whose ``Host`` is not an allowed name is refused.

    Starlette's ``TrustedHostMiddleware`` cuts the port at the first colon, which breaks ``[::1]:7861``."""

    def __init__(self, app, names: list[str]):
        self.app = app
        self.names = {name.strip().lower().rstrip(".").strip("[]") for name in names}

    def allows(self, name: str | None) -> bool:
        return "*" in self.names or (name is not None and (name in self.names or is_loopback(name)))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        if self.allows(host_name(header)):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            name = excerpt(header) if header else "no Host header"
            response = JSONResponse({"detail": f"Host {name}: this service answers only to its loopback names "
                                               f"and addresses{' and ' + ', '.join(sorted(self.names)) if self.names else ''}",
                                     "hint": "reach it by one of those names, or start it with --allowed-host NAME"},
                                    400)
            await response(scope, receive, send)


def _authority(netloc: str, scheme: str) -> str:
    netloc = netloc.strip().lower()
    default = DEFAULT_PORTS.get(scheme)
    return netloc.removesuffix(f":{default}") if default else netloc


def same_origin(origin: str, host: str) -> bool:
    """Whether ``Origin`` names the service the request reached (its ``Host``), default ports aside."""
    parsed = urlsplit(origin.strip())
    if parsed.scheme not in DEFAULT_PORTS or not parsed.netloc:  # "null" (a sandboxed frame, a file:// page)
        return False
    return _authority(parsed.netloc, parsed.scheme) == _authority(host, parsed.scheme)


def _declared_types(request: Request) -> tuple[str, ...]:
    """The media types the matched route's OpenAPI ``requestBody`` declares, if it declares any itself."""
    route = request.scope.get("route")
    content = ((getattr(route, "openapi_extra", None) or {}).get("requestBody") or {}).get("content")
    return tuple(content) if content else BODY_TYPES


def _accepted(media: str, types: tuple[str, ...]) -> bool:
    return any(media == kind or (kind.endswith("/*") and media.startswith(kind[:-1])) for kind in types)


def browser_safe(request: Request) -> None:
    """A state-changing request comes from the service's own origin (or none) with a body a cross-site
    page cannot send unasked: 403 (cross-site) or 415 (another body type) before anything changes."""
    if request.method not in STATE_CHANGING:
        return
    origin, fetch_site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
    if (origin is not None and not same_origin(origin, request.headers.get("host", ""))) \
            or fetch_site in ("cross-site", "same-site"):
        raise HTTPException(403, f"a {request.method} from {excerpt(origin or fetch_site)}: this service takes "
                                 "state-changing requests only from its own origin (or from clients that send none)")
    content_type = request.headers.get("content-type")
    if content_type is None and not _has_body(request):
        return  # e.g. POST /sdapi/v1/interrupt, DELETE /v1/jobs/ID
    media = (content_type or "").partition(";")[0].strip().lower()
    types = _declared_types(request)
    if not _accepted(media, types):
        raise HTTPException(415, f"content-type {excerpt(content_type or 'none')}: {request.method} "
                                 f"{request.url.path} takes {' or '.join(types)}")


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
