"""OpenAI's images API on the service: ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits``
(multipart: ``image``, ``mask``), answered in OpenAI's shape ``{created, data: [{b64_json | url}], size,
output_format, quality}`` once the job has ended, so the official ``openai`` client works unchanged.

A call is one job on the durable queue (``routes_jobs.submit_job``: the same validation, cost limits and
queue as ``POST /v1/jobs``; an ``Idempotency-Key`` makes a retried call wait for the same job):

- ``prompt`` -> ``prompt``; ``n`` -> ``batch_size``; ``size`` ``WxH`` -> ``width``/``height`` (``auto``: the
  preset's size, or an edited image's own); ``quality`` -> ``steps`` as a share of the preset's
  (``openai_compat.QUALITY``: low 1/2, medium 3/4, high/auto/standard/hd the preset's, xhigh 1.5x, max 2x).
- edits: ``image`` (one or several) -> the model's ``edit`` task, the images its references (instruction
  editing, as OpenAI's edits are), where the model has that task and its checkpoint serves it; else
  ``init_image`` (img2img at the preset's strength, one image). With ``mask`` -> inpaint of one image, the
  mask's fully transparent pixels being what is repainted (OpenAI's rule).
- ``response_format``: ``b64_json`` (the PNG's bytes), or ``url``: the job's file route on this service
  (``/v1/jobs/{id}/files/0000.png``; with ``--token`` it needs the same bearer header). Default: ``url`` for
  DALL-E model names (as OpenAI), ``b64_json`` otherwise.
- Settings Codex has no counterpart for (``style``, ``background``, ``moderation``, ``output_compression``,
  ``user``...) are ignored and listed in the answer's ``codex.ignored``; what was substituted (a model
  name, the PNG for another ``output_format``) is in ``codex.substituted``, with the job, engine, steps
  and seed used. What Codex cannot do at all (``stream``, GIF or SVG output) is a 400.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.datastructures import State
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .dependencies import StateDep
from .openai_compat import OpenAIError, OpenAIRoute, Target, parse_size, quality_steps, resolve_model
from .routes_jobs import JobSpec, idempotency_key, submit_job

router = APIRouter(prefix="/v1/images", route_class=OpenAIRoute, tags=["OpenAI"])
WAIT_SECONDS = 24 * 3600
IGNORED = ("style", "background", "moderation", "output_compression", "user", "safety_identifier", "complexity",
           "input_fidelity", "partial_images")
TEXT_FIELDS = ("prompt", "model", "n", "size", "quality", "response_format", "output_format", "stream",
               "frame_count", "frame_duration_ms", *IGNORED)
EDIT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "prompt"], "properties": {
        "image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"},
        "prompt": {"type": "string"}, "model": {"type": "string"}, "n": {"type": "integer"},
        "size": {"type": "string"}, "quality": {"type": "string"},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]}}}}}}}
KeyHeader = Header(None, alias="Idempotency-Key", description="The same key and request: the same job's images")


class GenerateBody(BaseModel):
    """OpenAI's ``images.generate`` body (the SDK's ``ImageGenerateParams``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    n: int | None = Field(None, ge=1, le=10)
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: str | None = None
    stream: bool | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    partial_images: int | None = None
    user: str | None = None
    safety_identifier: str | None = None
    complexity: str | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    svg: dict[str, Any] | None = None


@router.post("/generations")
async def generate(body: GenerateBody, request: Request, state: StateDep, key: str | None = KeyHeader) -> dict:
    fields = body.model_dump(exclude_none=True)
    return await _run(state, request, fields, "txt2img", {}, idempotency_key(key))


@router.post("/edits", openapi_extra=EDIT_BODY)
async def edit(request: Request, state: StateDep, key: str | None = KeyHeader) -> dict:
    form = await request.form(max_files=16, max_fields=64)
    fields: dict[str, Any] = {}
    images: list[UploadFile] = []
    mask = None
    for name, value in form.multi_items():
        if name in ("image", "image[]"):
            images.append(_file(name, value))
        elif name == "mask":
            mask = await _file(name, value).read()
        elif name in TEXT_FIELDS and isinstance(value, str):
            fields[name] = value
        else:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {name[:80]}", name[:80], "invalid_value")
    if "prompt" not in fields:
        raise OpenAIError(400, "prompt: required", "prompt", "missing_required_parameter")
    if not images:
        raise OpenAIError(400, "image: required (a PNG, JPEG or WebP file)", "image", "missing_required_parameter")
    if len(images) > 1 and mask is not None:
        raise OpenAIError(400, f"image: got {len(images)} images with a mask; inpainting takes one image", "image",
                          "invalid_value")
    for name in ("n", "frame_count", "frame_duration_ms", "output_compression", "partial_images"):
        if name in fields:
            fields[name] = _integer(name, fields[name])
    if "stream" in fields:
        fields["stream"] = fields["stream"].lower() == "true"
    raws = [await image.read() for image in images]
    if mask is not None:
        inputs = await run_in_threadpool(_edit_inputs, raws[0], mask)
        return await _run(state, request, fields, "inpaint", inputs, idempotency_key(key))
    # the model's edit task where it has one (instruction editing, as OpenAI's edits are), else img2img
    references = [base64.b64encode(raw).decode() for raw in raws]
    return await _run(state, request, fields, "edit", {"images": references}, idempotency_key(key))


def edit_or_img2img(state: State, fields: dict[str, Any], images: list[str]) -> tuple[str, dict[str, Any], Target]:
    """``edit`` with the images as its references when the model has that task and its checkpoint serves it (an
    engine named without a checkpoint: its edit model), else ``img2img`` of the one image."""
    from pathlib import Path

    target = resolve_model(state, fields.get("model"), ("edit", "img2img"), video=False)
    engine = target.engine
    serves = "edit" in engine.tasks and (target.model in (None, "tiny")
                                         or "edit" in engine.checkpoint_tasks(Path(target.model)))
    if serves:
        limit = engine.params_model("edit").max_images
        if len(images) > limit:
            raise OpenAIError(400, f"image: got {len(images)} images; model {target.name} edits with at most {limit} "
                                   f"reference image{'s' if limit > 1 else ''}", "image", "invalid_value")
        return "edit", {"images": images}, target
    if len(images) > 1:
        raise OpenAIError(400, f"image: got {len(images)} images; model {target.name} has no edit task and edits one "
                               "image per request (img2img)", "image", "invalid_value")
    return "img2img", {"init_image": images[0]}, target


def _file(name: str, value: Any) -> UploadFile:
    if not isinstance(value, UploadFile):
        raise OpenAIError(400, f"{name}: a file is required (multipart file part)", name.rstrip("[]"),
                          "invalid_value")
    return value


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise OpenAIError(400, f"{name}: {value[:40]!r} is not an integer", name, "invalid_value") from None


def _edit_inputs(image: bytes, mask: bytes | None) -> dict[str, str]:
    """The image (as sent) and the mask as Codex takes it: white where OpenAI's mask is fully transparent."""
    inputs = {"init_image": base64.b64encode(image).decode()}
    if mask is None:
        return inputs
    from PIL import Image

    try:
        with Image.open(io.BytesIO(mask)) as opened:
            if "A" not in opened.getbands() and "transparency" not in opened.info:
                raise OpenAIError(400, "mask: it has no alpha channel; its fully transparent pixels mark what to "
                                       "edit (a PNG with transparency)", "mask", "invalid_value")
            alpha = opened.convert("RGBA").getchannel("A")
    except OpenAIError:
        raise
    except Exception as exc:  # noqa: BLE001  (whatever Pillow makes of the bytes: not an image)
        raise OpenAIError(400, f"mask: not a readable image ({type(exc).__name__})", "mask", "invalid_value") from None
    out = io.BytesIO()
    alpha.point(lambda value: 255 if value == 0 else 0).save(out, format="PNG")
    inputs["mask_image"] = base64.b64encode(out.getvalue()).decode()
    return inputs


def _mapped(state: State, fields: dict[str, Any], task: str,
            target: Target | None = None) -> tuple[Target, dict[str, Any], dict[str, Any]]:
    """The target model, the Codex request and what the answer reports, for an OpenAI image request."""
    if fields.get("stream"):
        raise OpenAIError(400, "stream: this service answers once the images are done (no streaming)", "stream",
                          "invalid_value")
    for name in ("frame_count", "frame_duration_ms", "svg"):
        if fields.get(name) is not None:
            raise OpenAIError(400, f"{name}: GIF and SVG output are not made here; PNG only", name, "invalid_value")
    output_format = fields.get("output_format")
    if output_format in ("gif", "svg"):
        raise OpenAIError(400, f"output_format: {output_format} is not made here; PNG", "output_format",
                          "invalid_value")
    asked = fields.get("model")
    if target is None:  # (an edit's was resolved when its task was chosen)
        target = resolve_model(state, asked, (task, "img2img") if task in ("inpaint", "edit") else (task,),
                               video=False)
    if task not in target.engine.tasks:
        raise OpenAIError(400, f"mask: model {target.name} ({target.engine.key}) has no inpaint task; send the "
                               "image without a mask, or name a model that inpaints", "mask", "invalid_value")
    request: dict[str, Any] = {"prompt": fields["prompt"]}
    size = parse_size(fields.get("size"))
    if size:
        request["width"], request["height"] = size
    n = fields.get("n")
    if isinstance(n, int) and n > 1:
        if "batch_size" not in target.engine.params_model(task).model_fields:
            raise OpenAIError(400, f"n: {n}; model {target.name} makes one image per request", "n", "invalid_value")
        request["batch_size"] = n
    steps = quality_steps(target, task, fields.get("quality"))
    if steps is not None:
        request["steps"] = steps
    if output_format not in (None, "png"):
        target.substituted.append(f"output_format {output_format} -> png (the image the job wrote)")
    fmt = fields.get("response_format") or ("url" if asked and asked.startswith("dall-e") else "b64_json")
    report = {"engine": target.engine.key, "model": target.name, "task": task, "response_format": fmt,
              "quality": fields.get("quality"), "substituted": target.substituted,
              "ignored": [f"{name}={fields[name]!r}" for name in IGNORED if fields.get(name) is not None]}
    return target, request, report


async def _run(state: State, http: Request, fields: dict[str, Any], task: str, inputs: dict[str, str],
               key: str | None) -> dict:
    def submit() -> tuple[dict[str, Any], dict[str, Any]]:
        ran, given, target = task, inputs, None
        if task == "edit":
            ran, given, target = edit_or_img2img(state, fields, inputs["images"])
        target, request, report = _mapped(state, fields, ran, target)
        spec = JobSpec(engine=target.engine.key, task=ran, request={**request, **given}, model=target.model)
        return submit_job(state, spec, key, {"openai": {"kind": "image", "model": target.name}}), report

    job, report = await run_in_threadpool(submit)
    ended = await state.waits.wait(job["id"], WAIT_SECONDS)
    return await run_in_threadpool(_answer, ended, job["id"], report, str(http.base_url))


def _answer(job: dict[str, Any] | None, job_id: str, report: dict[str, Any], base_url: str) -> dict:
    """OpenAI's ImagesResponse for an ended job; a failed or cancelled job is a 500 the SDK does not retry."""
    from pathlib import Path

    from PIL import Image

    if job is None or job["state"] == "cancelled":
        raise OpenAIError(500, f"job {job_id} was cancelled or deleted before it finished", code="job_cancelled")
    if job["state"] == "failed":
        raise OpenAIError(500, f"job {job_id} failed: {job['error']}", code="job_failed")
    pngs = [Path(path) for path in job["result"]["files"] if path.endswith(".png")]
    data = []
    for path in pngs:
        if report["response_format"] == "url":
            data.append({"url": f"{base_url}v1/jobs/{job_id}/files/{path.name}"})
        else:
            data.append({"b64_json": base64.b64encode(path.read_bytes()).decode()})
    with Image.open(pngs[0]) as first:
        size = f"{first.width}x{first.height}"
    info = job["result"]["info"]
    quality = report["quality"] if report["quality"] in ("low", "medium", "high", "xhigh", "max") else None
    return {"created": int(job["submitted"]), "data": data, "output_format": "png", "size": size, "quality": quality,
            "codex": {**report, "job": job_id, "steps": info.get("request", {}).get("steps"), "seed": info.get("seed"),
                      "warnings": info.get("warnings", [])}}
