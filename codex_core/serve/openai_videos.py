"""OpenAI's videos API on the service: ``POST /v1/videos`` (multipart or JSON: ``prompt``, ``model``, ``seconds``,
``size``, ``input_reference``), ``GET /v1/videos/{id}`` (``status`` queued, in_progress, completed or failed, and
``progress`` in percent) and ``GET /v1/videos/{id}/content`` (the MP4), so the official ``openai`` client's
``videos.create``, ``retrieve``/``poll`` and ``download_content`` work unchanged.

A video is a job on the durable queue (``routes_jobs.submit_job``: validation, cost limits, the queue; an
``Idempotency-Key`` gives a retried create the same video); its id is the job's. ``seconds`` -> ``num_frames``
at the preset's ``fps``, rounded to the nearest count the engine takes (k x its ``frame_multiple`` + 1);
``size`` ``WxH`` -> ``width``/``height`` (none: the preset's); ``input_reference`` (an image file, or
``{image_url}`` as a data URL) -> img2vid's ``init_image``. The model is resolved as for images
(``openai_compat``), OpenAI's names (``sora-2``...) running ``--openai-default-video-model``; ``codex`` in
each answer says what ran (``codex.audio``: the MP4's sound track, when the model made one: the content is the
run's MP4 as written, its AAC track included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.datastructures import State
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .bodies import excerpt
from .dependencies import StateDep, StoreDep
from .openai_compat import OpenAIError, OpenAIRoute, parse_size, preset_value, resolve_model
from .routes_jobs import JobSpec, idempotency_key, submit_job

router = APIRouter(prefix="/v1/videos", route_class=OpenAIRoute, tags=["OpenAI"])
FIELDS = ("prompt", "model", "seconds", "size", "input_reference", "input_reference[image_url]",
          "input_reference[file_id]")
STATUS = {"queued": "queued", "running": "in_progress", "done": "completed", "failed": "failed",
          "cancelled": "failed"}
POLL_AFTER_MS = "500"  # what the SDK's poll() waits between looks
FORM = {"type": "object", "required": ["prompt"], "properties": {
    "prompt": {"type": "string"}, "model": {"type": "string"}, "seconds": {"type": "string"},
    "size": {"type": "string"}, "input_reference": {"type": "string", "format": "binary"}}}
CREATE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": FORM},
                                                             "application/json": {"schema": FORM}}}}


@router.post("", openapi_extra=CREATE_BODY)
async def create(request: Request, state: StateDep,
                 key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> dict[str, Any]:
    fields = await _fields(request)
    job = await run_in_threadpool(_submit, state, fields, idempotency_key(key))
    return _video(job)


@router.get("/{video_id}")
def retrieve(video_id: str, store: StoreDep) -> JSONResponse:
    return JSONResponse(_video(_job(store, video_id)), headers={"openai-poll-after-ms": POLL_AFTER_MS})


@router.get("/{video_id}/content")
def content(video_id: str, store: StoreDep, variant: str = Query("video")) -> FileResponse:
    if variant != "video":
        raise OpenAIError(400, f"variant: {excerpt(variant)}; this service keeps the video only", "variant",
                          "invalid_value")
    job = _job(store, video_id)
    if job["state"] != "done":
        raise OpenAIError(404, f"video {video_id} is {STATUS[job['state']]}: its content exists once it is "
                               "completed", code="video_not_ready")
    videos = [Path(path) for path in job["result"]["files"] if path.endswith(".mp4")]
    if not videos or not videos[0].is_file():
        raise OpenAIError(404, f"video {video_id} has no MP4 (any more)", code="not_found")
    return FileResponse(videos[0], media_type="video/mp4")


async def _fields(request: Request) -> dict[str, Any]:
    """The create request's fields from a multipart form (the SDK's) or a JSON object; files as bytes."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=16)
        items = list(form.multi_items())
    else:
        try:
            body = await request.json()
        except (ValueError, RecursionError) as exc:  # not JSON (a duplicate key included: StrictJSONRoute's reading)
            raise OpenAIError(400, f"the body is not a JSON object ({str(exc)[:200]})", None, "invalid_json") from None
        if not isinstance(body, dict):
            raise OpenAIError(400, "the body must be a JSON object", None, "invalid_json")
        items = list(body.items())
    fields: dict[str, Any] = {}
    for name, value in items:
        if name not in FIELDS:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {name[:80]}", name[:80], "invalid_value")
        fields[name] = await value.read() if isinstance(value, UploadFile) else value
    reference = fields.pop("input_reference", None)
    if isinstance(reference, dict):
        fields.update({f"input_reference[{key}]": value for key, value in reference.items()})
    elif reference is not None:
        fields["input_reference[file]"] = reference
    return fields


def _submit(state: State, fields: dict[str, Any], key: str | None) -> dict[str, Any]:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str):
        raise OpenAIError(400, "prompt: required, a string", "prompt", "missing_required_parameter")
    image = _reference(fields)
    task = "img2vid" if image else "txt2vid"
    target = resolve_model(state, _text(fields, "model"), (task,), video=True)
    request: dict[str, Any] = {"prompt": prompt, **({"init_image": image} if image else {})}
    size = parse_size(_text(fields, "size"))
    if size:
        request["width"], request["height"] = size
    seconds_given = fields.get("seconds")
    seconds_text = str(seconds_given) if isinstance(seconds_given, (int, float)) and not isinstance(
        seconds_given, bool) else _text(fields, "seconds") or "4"  # OpenAI's default: 4
    try:
        seconds = float(seconds_text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 600:
        raise OpenAIError(400, f"seconds: {excerpt(seconds_text)}; a duration in seconds (e.g. 4, 8, 12)", "seconds",
                          "invalid_value")
    fps = preset_value(target, task, "fps") or 24.0
    multiple = getattr(target.engine.params_model(task), "frame_multiple", 1) or 1
    request["num_frames"] = max(1, round(seconds * fps / multiple)) * multiple + (1 if multiple > 1 else 0)
    width, height = size or (preset_value(target, task, "width"), preset_value(target, task, "height"))
    meta = {"kind": "video", "model": target.name, "seconds": seconds_text, "size": f"{width}x{height}",
            "substituted": target.substituted}
    return submit_job(state, JobSpec(engine=target.engine.key, task=task, request=request, model=target.model), key,
                      {"openai": meta})


def _text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise OpenAIError(400, f"{name}: got {excerpt(value)}; a string", name, "invalid_value")
    return value


def _reference(fields: dict[str, Any]) -> str | None:
    """``input_reference`` as an inline image for ``init_image``: a file's bytes, or a data URL (no fetching)."""
    import base64

    if fields.get("input_reference[file_id]") is not None:
        raise OpenAIError(400, "input_reference.file_id: this service has no files API; send the image itself",
                          "input_reference", "invalid_value")
    raw = fields.get("input_reference[file]")
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode()
    url = fields.get("input_reference[image_url]")
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith("data:"):
        raise OpenAIError(400, "input_reference.image_url: a data URL (data:image/png;base64,...); this service "
                               "fetches nothing", "input_reference", "invalid_value")
    return url


def _job(store, video_id: str) -> dict[str, Any]:
    job = store.get(video_id)
    if job is None or (job["spec"].get("openai") or {}).get("kind") != "video":
        raise OpenAIError(404, f"no video {excerpt(video_id)}", code="not_found")
    return job


def _video(job: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's Video object for a job (with ``codex``: the job, engine, frames and what was substituted)."""
    meta, request = job["spec"]["openai"], job["spec"]["request"]
    status = STATUS[job["state"]]
    info = (job.get("result") or {}).get("info") or {}
    used = info.get("request") or request
    progress = 100 if status == "completed" else 0
    if job["state"] == "running" and job.get("steps"):
        progress = min(99, int(100 * (job.get("step") or 0) / job["steps"]))
    error = None
    if status == "failed":
        error = {"code": "job_cancelled" if job["state"] == "cancelled" else "job_failed",
                 "message": job.get("error") or job["state"]}
    size = f"{used['width']}x{used['height']}" if used.get("width") and used.get("height") else meta.get("size")
    return {"id": job["id"], "object": "video", "created_at": int(job["submitted"]),
            "completed_at": int(job["finished"]) if status == "completed" and job.get("finished") else None,
            "expires_at": None, "error": error, "model": meta["model"], "progress": progress,
            "prompt": request.get("prompt"), "remixed_from_video_id": None, "seconds": meta["seconds"],
            "size": size, "status": status,
            "codex": {"job": job["id"], "engine": job["spec"]["engine"], "task": job["spec"]["task"],
                      "num_frames": used.get("num_frames"), "fps": used.get("fps"), "steps": used.get("steps"),
                      "seed": info.get("seed"), "substituted": meta.get("substituted", []),
                      "audio": _audio(info)}}


def _audio(info: dict[str, Any]) -> dict[str, Any] | None:
    """The sound track the MP4 carries (AAC), or None: a silent video (or dropped by "audio": false)."""
    audio = info.get("audio") or {}
    if audio.get("dropped") or "mp4" not in (audio.get("codecs") or {}):
        return None
    return {"codec": audio["codecs"]["mp4"], **{key: audio[key] for key in ("sample_rate", "channels", "duration")}}
