"""Webhooks: a job's end (done, failed, cancelled) POSTed to its ``callback_url`` and the service's
``--webhook-url``, signed, retried, recorded on the job, and kept across restarts.

- **Queued with the end.** The transaction that ends a job also queues one delivery per URL
  (``JobStore._ended``): a job ends once, so each state change is delivered once, and a delivery
  pending when the service stops is sent after the next start. A delivery is at least once: one cut
  by a crash mid-send is sent again, with the same ``webhook-id`` (receivers dedupe by it).
- **Signed as Standard Webhooks signs** (standardwebhooks.com): headers ``webhook-id`` (the
  delivery's id, the same for each retry), ``webhook-timestamp`` (Unix seconds of this attempt) and
  ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"). The
  secret is ``--webhook-secret`` (base64, optionally prefixed ``whsec_``), else one made at the first
  start and kept in the state dir (``webhook-secret``, readable only by its owner).
- **Retried** on a connection error, a timeout or any status but 2xx (redirects are not followed),
  after 2, 8, 32 s... (x4, at most an hour between tries), ``--webhook-attempts`` times in all; then the
  delivery is ``failed``. Each attempt (time, status code or error, seconds) is on the job:
  ``GET /v1/jobs/{id}`` -> ``webhooks``.
- **Never in the way.** One sender thread does the network I/O; the workers and the event loop only
  write rows.
- **Where they may go** (the requester picks the URL: server-side request forgery). http and https
  only, no credentials in the URL; by default any host but those whose addresses are link-local
  (169.254.0.0/16, fe80::/10: cloud metadata services), multicast, unspecified or reserved;
  loopback and private networks are allowed (the service binds loopback by default and its clients
  are its neighbours). ``--webhook-allow-host NAME|ADDRESS|CIDR`` (repeatable) allows only those.
  The host is resolved and checked when the job is submitted and again before each attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..errors import UsageError
from .store import JobStore, StoreUnavailable

URL_CHARS = 2048
ATTEMPTS = 8  # default --webhook-attempts: the last about 2 h 50 min after the first
FIRST_DELAY, FACTOR, LONGEST_DELAY = 2.0, 4.0, 3600.0
TIMEOUT = 10.0  # seconds one attempt may take (connect, send, status line)
POLL = 0.25  # seconds between looks for due deliveries
PAGE = 20  # deliveries read per look
UNRESOLVED = "does not resolve"  # a refusal that may pass later (DNS): retried, unlike the address rules
KEPT_ATTEMPTS = 20  # attempts recorded per delivery (the count goes on)


def delay(attempt: int) -> float:
    """Seconds before the try after ``attempt`` (1-based) failed: 2, 8, 32, ... at most an hour."""
    return min(FIRST_DELAY * FACTOR ** (attempt - 1), LONGEST_DELAY)


def signing_key(secret: str, option: str = "--webhook-secret") -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64, optionally prefixed ``whsec_``."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 16:
        raise UsageError(f"{option}: not a Standard Webhooks secret (base64 of at least 16 bytes, optionally "
                         "prefixed whsec_)", hint="make one with: python -c \"import base64, os; "
                                                  "print('whsec_' + base64.b64encode(os.urandom(24)).decode())\"")
    return key


def state_dir_secret(state_dir: Path) -> str:
    """The secret kept in the state dir, made (0600) at the first start that needs one."""
    path = state_dir / "webhook-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode() + "\n")
    return path.read_text().strip()


def signature_headers(key: bytes, delivery_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(key, f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {"webhook-id": delivery_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


def url_problem(url: Any, field: str) -> str | None:
    """Why ``url`` is not an http(s) URL a webhook can be sent to (its host aside), or None."""
    from .bodies import excerpt
    from .inputs import name_problem

    if not isinstance(url, str):
        return f"{field}: got {excerpt(url)}; an http or https URL"
    problem = name_problem(field, url, URL_CHARS)
    if problem:
        return problem
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError as exc:
        return f"{field}: {excerpt(url)} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{field}: {excerpt(url)}: an http:// or https:// URL with a host is required"
    if parts.username is not None or parts.password is not None:
        return f"{field}: {excerpt(url)}: no user or password in the URL (it would be stored with the job)"
    return None


@dataclass(frozen=True)
class Destinations:
    """Where callbacks may go: ``allow`` (``--webhook-allow-host``: names, addresses, networks), or, when
    empty, every address but link-local, multicast, unspecified and reserved ones."""

    allow: tuple[str, ...] = ()

    def problem(self, url: Any, field: str = "callback_url") -> str | None:
        """Why ``url`` may not be called back (resolving its host), or None."""
        return url_problem(url, field) or self.host_problem(urlsplit(url).hostname, field)

    def host_problem(self, host: str, field: str) -> str | None:
        host = host.lower().rstrip(".")
        if host in {entry.lower().rstrip(".") for entry in self.allow}:
            return None
        try:
            found = {info[4][0].partition("%")[0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        except (OSError, UnicodeError) as exc:
            return f"{field}: the host {host!r} {UNRESOLVED} ({exc})"
        for address in map(ipaddress.ip_address, sorted(found)):
            refusal = self._refusal(address)
            if refusal:
                return f"{field}: the host {host!r} is {address}, {refusal}"
        return None

    def _refusal(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        if self.allow:
            networks = []
            for entry in self.allow:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    continue  # a name: matched above
            if any(address in network for network in networks):
                return None
            return "not a host --webhook-allow-host allows"
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if address.is_loopback:  # ::1 is in a reserved block too
            return None
        for kind in ("link_local", "multicast", "unspecified", "reserved"):
            if getattr(address, f"is_{kind}"):
                return (f"a {kind.replace('_', '-')} address: callbacks may not go there (start the service with "
                        "--webhook-allow-host to allow it)")
        return None


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT) -> int:
    """POST ``body`` and answer the status code (the response body is not read past its start; no redirects)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body,
                           headers=headers)
        response = connection.getresponse()
        response.read(65536)
        return response.status
    finally:
        connection.close()


class Sender(threading.Thread):
    """The service's one webhook sender: sends due deliveries, records each attempt, schedules the next."""

    def __init__(self, store: JobStore, key: bytes, destinations: Destinations, attempts: int = ATTEMPTS,
                 trusted: tuple[str, ...] = ()):
        super().__init__(name="codex-webhooks", daemon=True)
        self.store, self.key, self.destinations, self.attempts = store, key, destinations, attempts
        self.trusted = trusted  # the operator's --webhook-url: not subject to the address rules
        self.stopping = threading.Event()

    def stop(self, wait: float = TIMEOUT + 1) -> None:
        """Send nothing more (an attempt under way may end); what is pending is sent after the next start."""
        self.stopping.set()
        if self.ident is not None:
            self.join(wait)

    def run(self) -> None:
        while not self.stopping.is_set():
            due: list = []
            try:
                due = self.store.query(lambda db: db.execute(
                    "SELECT id, url, body, attempts FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ? "
                    "ORDER BY next_at LIMIT ?", (time.time(), PAGE)).fetchall())
                for row in due:
                    if self.stopping.is_set():
                        return
                    self.deliver(row["id"], row["url"], row["body"], json.loads(row["attempts"]))
            except StoreUnavailable:
                pass  # health says why; the deliveries wait in the database
            except Exception:  # noqa: BLE001  (a failure here must not end webhooks for the service's life)
                traceback.print_exc()
            if len(due) < PAGE:  # a full page: more may be due now
                self.stopping.wait(POLL)

    def deliver(self, delivery_id: str, url: str, body: str, attempts: list[dict[str, Any]]) -> None:
        started, at = time.monotonic(), time.time()
        outcome: dict[str, Any] = {"at": round(at, 3)}
        refusal = None if url in self.trusted else self.destinations.problem(url, "url")
        if refusal:
            outcome["error"] = refusal
        else:
            headers = {"content-type": "application/json", "user-agent": f"codex/{__version__}",
                       **signature_headers(self.key, delivery_id, body)}
            try:
                outcome["status_code"] = post(url, body.encode(), headers)
            except (OSError, http.client.HTTPException) as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
        outcome["seconds"] = round(time.monotonic() - started, 3)
        count = outcome["attempt"] = (attempts[-1]["attempt"] if attempts else 0) + 1
        delivered = 200 <= outcome.get("status_code", 0) < 300
        final = delivered or (refusal is not None and UNRESOLVED not in refusal) or count >= self.attempts
        status = "delivered" if delivered else "failed" if final else "pending"
        next_at = None if final else time.time() + delay(count)
        kept = json.dumps([*attempts, outcome][-KEPT_ATTEMPTS:])
        try:
            self.store.transaction(lambda db: db.execute(
                "UPDATE webhook_deliveries SET status = ?, next_at = ?, attempts = ? WHERE id = ?",
                (status, next_at, kept, delivery_id)))
        except StoreUnavailable as exc:  # not recorded: it is tried again (at least once, as documented)
            print(f"codex: webhook {delivery_id} to {url}: {status}, but {exc}", file=sys.stderr)

