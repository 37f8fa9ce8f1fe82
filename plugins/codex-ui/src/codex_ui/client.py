"""The UI's side of the service API: every call the UI makes, over HTTP (httpx).

The UI never calls the orchestrator itself: in `codex ui` it talks to the service running in the
same process over loopback, with `--server URL` to a `codex serve` elsewhere. Either way it sees
exactly what any other API client sees (422 problems, queue positions, events, files).
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any, Iterator

import httpx


class Refused(Exception):
    """The service refused a request: ``problems`` are its field-named lines (422), ``message`` the rest."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None, hint: str | None = None):
        super().__init__(message)
        self.status, self.message, self.problems, self.hint = status, message, problems or [], hint


class ServiceClient:
    def __init__(self, base_url: str, token: str | None = None, basic: tuple[str, str] | None = None,
                 timeout: float = 60):
        """``token`` goes as a Bearer token; without one, ``basic`` (an --api-auth pair) as HTTP Basic."""
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, auth=None if token else basic,
                                 timeout=timeout)
        self._cache: dict[str, Any] = {}
        # service path of an uploaded image -> the local file it came from: a form shows the local file (the
        # service's path may be outside what the page may serve, or on another machine with --server)
        self._local_copies: dict[str, str] = {}

    def _get(self, path: str, **params: Any) -> Any:
        return self._check(self.http.get(path, params={k: v for k, v in params.items() if v is not None})).json()

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
            except json.JSONDecodeError:
                body = {"detail": response.text}
            detail = body.get("detail")
            message = detail if isinstance(detail, str) else json.dumps(detail)
            raise Refused(response.status_code, message, body.get("problems"), body.get("hint"))
        return response

    def _cached(self, key: str, fetch) -> Any:
        """Engines and schemas do not change while a service runs: asked once."""
        if key not in self._cache:
            self._cache[key] = fetch()
        return self._cache[key]

    def health(self) -> dict[str, Any]:
        return self._get("/v1/health")

    def engines(self) -> list[dict[str, Any]]:
        return self._cached("engines", lambda: self._get("/v1/engines"))

    def schema(self, engine: str, task: str) -> dict[str, Any]:
        return self._cached(f"schema/{engine}/{task}", lambda: self._get(f"/v1/engines/{engine}/{task}/schema"))

    def models(self, engine: str | None, kind: str = "checkpoints") -> list[dict[str, Any]]:
        """The models folders' files of ``kind`` (``engine`` None: every one, whichever engine takes it)."""
        return self._get("/v1/models", engine=engine, kind=kind)

    def preprocessors(self) -> list[dict[str, Any]]:
        """The service's control-image preprocessors (``GET /v1/preprocessors``): name, parameters, needed files."""
        return self._cached("preprocessors", lambda: self._get("/v1/preprocessors"))

    def preprocess(self, name: str, image: str, params: dict[str, Any]) -> bytes:
        """``image`` (a path the service knows, e.g. from ``upload``) through the preprocessor ``name``, run by the
        service; the result's PNG bytes."""
        body = {"preprocess": name, "image": image, "preprocess_params": params}
        return self._check(self.http.post("/v1/preprocess", json=body)).content

    def upload(self, path: str | Path) -> str:
        """An image or video file sent to the service; the path the service knows it by (for a request's image or
        video field)."""
        data = Path(path).read_bytes()
        kind = mimetypes.guess_type(str(path))[0] or ""
        # the service takes the bytes only with an image or video content type (the format is read from the bytes)
        headers = {"content-type": kind if kind.startswith(("image/", "video/")) else "image/png"}
        served = self._check(self.http.post("/v1/inputs", content=data, headers=headers)).json()["path"]
        self._local_copies[served] = str(path)
        return served

    def local_copy(self, served: str) -> str | None:
        """The local file an uploaded image was sent from, if this UI sent it and it is still there."""
        local = self._local_copies.get(served)
        return local if local and Path(local).is_file() else None

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.post("/v1/jobs", json=spec)).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/v1/jobs/{job_id}")

    def jobs(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        return self._get("/v1/jobs", limit=limit, state=state)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.delete(f"/v1/jobs/{job_id}")).json()

    def interrupt(self, job_id: str) -> dict[str, Any]:
        """Stop a running job at its next step and keep its image (a cancel discards it); 409 if not running."""
        return self._check(self.http.post(f"/v1/jobs/{job_id}/interrupt")).json()

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/files/{name}") as response:
            self._check(response)
            with open(dest, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return dest

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as (name, data) until its end event."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(60, read=None)) as response:
            self._check(response)
            name = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    yield name or "message", json.loads(line[6:])
                    if name == "end":
                        return
