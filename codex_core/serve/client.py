"""`codex run --server URL`: submit to a running `codex serve` and print what a local run prints.

Standard library only (urllib): the client side needs nothing beyond codex-core. Local image files
named in the request are sent inline (data URLs), since the service reads no client paths. The
job's progress comes from its event stream; Ctrl-C cancels the job on the service. With ``--out``
the output files are downloaded into ``OUT/<run id>/`` and the printed paths are the local ones.
"""

from __future__ import annotations

import base64
import http.client
import json
import mimetypes
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import CodexError, ParamError, UsageError
from ..paths import excerpt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class RemoteError(CodexError):
    """The job failed on the service (exit 1, its message as the CLI would print it)."""


def _call(url: str, token: str | None, method: str = "GET", body: Any = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json", "accept": "application/json",
                                              **({"authorization": f"Bearer {token}"} if token else {})})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        payload = exc.read().decode(errors="replace")
        try:
            detail = json.loads(payload)
        except json.JSONDecodeError:
            detail = {"detail": payload}
        if exc.code == 422 and detail.get("problems"):
            raise ParamError(detail["problems"], body.get("engine", "?"), body.get("task", "?")) from None
        if exc.code in (401, 413, 422, 429, 404):
            raise UsageError(f"--server: {exc.code}: {detail.get('detail')}", hint=detail.get("hint")) from None
        raise CodexError(f"--server: {exc.code}: {detail.get('detail')}") from None
    except urllib.error.URLError as exc:
        raise UsageError(f"--server: cannot reach {url} ({exc.reason})",
                         hint="is `codex serve` running there? (it binds 127.0.0.1:7861 by default)") from None
    except (http.client.HTTPException, OSError) as exc:  # something answered, but not as HTTP does
        raise UsageError(f"--server: {url} did not answer as `codex serve` does ({type(exc).__name__}: {exc})",
                         hint="check the URL's host and port") from None


def base_url(server: str) -> str:
    """``--server``'s value as the base of the service's URLs: ``http(s)://HOST[:PORT][/PATH]``, else UsageError."""
    parts = urllib.parse.urlsplit(server.strip())
    try:
        parts.port  # a port that is not a number in range raises here
        fine = parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.query or parts.fragment)
    except ValueError:
        fine = False
    if not fine or any(char.isspace() or ord(char) < 32 for char in server.strip()):
        raise UsageError(f"--server: {excerpt(server)} is not an http(s) URL of a service",
                         hint="e.g. --server http://127.0.0.1:7861 (where `codex serve` listens by default)")
    return server.strip().rstrip("/")


def inline_images(request: dict[str, Any]) -> dict[str, Any]:
    """Local image files named by top-level fields, as data URLs (the service reads no client paths)."""
    inlined = dict(request)
    for key, value in request.items():
        if isinstance(value, str) and value.lower().endswith(IMAGE_SUFFIXES) and Path(value).expanduser().is_file():
            raw = Path(value).expanduser().read_bytes()
            kind = mimetypes.guess_type(value)[0] or "image/png"
            inlined[key] = f"data:{kind};base64," + base64.b64encode(raw).decode()
    return inlined


def run_remote(server: str, token: str | None, spec: dict[str, Any], out: Path | None, quiet: bool) -> dict[str, Any]:
    base = base_url(server)
    spec = {**spec, "request": inline_images(spec["request"])}
    job = json.load(_call(f"{base}/v1/jobs", token, "POST", spec))
    job_id = job["id"]
    try:
        _follow(f"{base}/v1/jobs/{job_id}/events", token, quiet)
    except KeyboardInterrupt:
        _call(f"{base}/v1/jobs/{job_id}", token, "DELETE")
        raise
    job = json.load(_call(f"{base}/v1/jobs/{job_id}", token))
    if job["state"] != "done":
        raise RemoteError(f"job {job_id} {job['state']} on the service: {job.get('error')}")
    result = job["result"]
    if out is not None:
        folder = Path(out) / Path(result["run_dir"]).name
        folder.mkdir(parents=True, exist_ok=True)
        local = []
        for path in result["files"]:
            name = Path(path).name
            with _call(f"{base}/v1/jobs/{job_id}/files/{name}", token) as response:
                (folder / name).write_bytes(response.read())
            local.append(str(folder / name))
        result = {**result, "run_dir": str(folder), "files": local, "server_run_dir": result["run_dir"]}
    return result


def _follow(url: str, token: str | None, quiet: bool) -> None:
    """Print the job's progress from its event stream until it ends."""
    from ..progress import Progress

    progress = Progress(enabled=not quiet, label="remote")
    name = None
    with _call(url, token) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if name == "step":
                    progress.step(data["step"], data["steps"])
                elif name == "stage" and not quiet:
                    print(f"codex: {data['stage']}", file=sys.stderr, flush=True)
                elif name == "end":
                    progress.close()
                    return
