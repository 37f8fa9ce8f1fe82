"""The A1111-compatible API (``/sdapi/v1``) for existing clients (webuiapi, Krita/Photoshop plugins, bots).

Requests are translated into a Codex request for the current model's engine and run through the
same queue and worker as ``/v1`` jobs; responses have A1111's shape (``images`` as base64 PNG,
``parameters``, ``info`` as a JSON string), field for field as A1111's own API (its ``/docs``).

Translation rules: clients send many fields by default, often null. A field that maps is passed on
(and strictly validated by the engine: a value it would have to change is a 422). A field with its
neutral value (``null``, ``false``, ``0``, ``[]``, ``{}``, ``""``, the defaults clients send) is
dropped silently; one set to something Codex does not do (``restore_faces``, ``enable_hr``,
``tiling``, ``styles``, scripts...) is listed in ``info.codex_ignored`` instead of failing the call.

The current model (``sd_model_checkpoint``, kept on ``app.state.a1111_model``) is a title from
``GET /sdapi/v1/sd-models``: each checkpoint in the models folders that an installed engine runs
(A1111's "name [hash]"), and ``tiny-<engine>`` for each engine's random-weight test model.

``txt2img`` and ``img2img`` answer when their jobs end, which can take minutes: they wait on the
event loop (``JobWaits``, ``app.state.waits``), not in a thread, so any number of waiting calls leaves
the other routes answering at once. Their submission and answer (reading models, images, PNGs) run
in the threadpool.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from fastapi.datastructures import State
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from ..exporters.png import parse_parameters_text
from .bodies import StrictJSONRoute, excerpt
from .dependencies import StateDep, StoreDep, WorkersDep
from .routes_jobs import JobSpec, submit_job

# A1111 field -> Codex field, for the fields whose meaning is the same
FIELDS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps", "cfg_scale": "cfg",
          "width": "width", "height": "height", "batch_size": "batch_size", "denoising_strength": "strength",
          "clip_skip": "clip_skip"}
# Fields clients send that decide nothing here when neutral, or that Codex cannot honour when set.
NEUTRAL = (None, False, 0, 0.0, "", [], {}, -1)
# Fields _translate reads itself (or _run: images, n_iter)
TRANSLATED = {"seed", "sampler_name", "scheduler", "sampler_index", "init_images", "mask", "n_iter",
              "inpainting_mask_invert"}
HANDLED = {"seed", "sampler_name", "scheduler", "sampler_index", "init_images", "mask", "n_iter",
           "inpainting_mask_invert", "send_images", "save_images", "override_settings_restore_afterwards",
           "include_init_images", "resize_mode", "mask_blur", "mask_blur_x", "mask_blur_y", "inpainting_fill",
           "inpaint_full_res", "inpaint_full_res_padding", "do_not_save_samples", "do_not_save_grid",
           "script_args", "alwayson_scripts", "subseed", "seed_resize_from_h", "seed_resize_from_w",
           "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
           "hr_resize_x", "hr_resize_y", "hr_sampler_name", "hr_prompt", "hr_negative_prompt", "hr_checkpoint_name",
           "hr_scheduler", "s_churn", "s_tmax", "s_tmin", "s_noise", "s_min_uncond", "eta", "refiner_checkpoint",
           "refiner_switch_at", "disable_extra_networks", "comments", "force_task_id", "infotext",
           "initial_noise_multiplier", "latent_mask", "image_cfg_scale", "sampler", "override_settings", "styles",
           "script_name", "restore_faces", "tiling", "enable_hr", "subseed_strength", "user",
           "use_async"} | set(FIELDS)
# What clients send by default for settings that change nothing here (webuiapi 0.9.17's defaults
# and A1111's): not worth a line in info.codex_ignored.
DEFAULT_IGNORED = {"send_images": (True,), "save_images": (False,), "resize_mode": (0,), "mask_blur": (4,),
                   "mask_blur_x": (4,), "mask_blur_y": (4,), "inpainting_fill": (0, 1), "inpaint_full_res": (True, False),
                   "inpaint_full_res_padding": (0, 32), "include_init_images": (False,),
                   "override_settings_restore_afterwards": (True,), "initial_noise_multiplier": (1.0,),
                   "image_cfg_scale": (1.5,), "s_noise": (1.0,), "s_churn": (0, 0.0), "s_tmin": (0, 0.0),
                   "s_tmax": (0, 0.0, None), "eta": (0, 1.0), "hr_scale": (2, 2.0), "hr_upscaler": ("Latent",),
                   "hr_second_pass_steps": (0,), "refiner_switch_at": (0.8, None), "firstphase_width": (0,),
                   "firstphase_height": (0,), "seed_resize_from_h": (-1, 0), "seed_resize_from_w": (-1, 0),
                   "subseed": (-1,), "hr_sampler_name": ("",), "sampler_index": ("Euler",),
                   "do_not_save_samples": (False,), "do_not_save_grid": (False,), "use_async": (False,)}



def models() -> list[dict[str, Any]]:
    """What ``sd-models`` lists: (title, engine, model argument) for each runnable checkpoint and tiny model."""
    from .. import model_files
    from ..registry import engines

    found = []
    image_engines = [e for e in engines().values() if "txt2img" in e.tasks]
    for row in model_files.describe(["checkpoints"], hashes=True):
        for engine_key in row["engines"]:
            if engine_key in {e.key for e in image_engines}:
                title = f"{Path(row['path']).name} [{row['hash']}]" if row["hash"] else row["name"]
                found.append({"title": title, "model_name": row["name"], "hash": row["hash"],
                              "sha256": None, "filename": row["path"], "config": None,
                              "engine": engine_key, "model": row["path"]})
                break
    for engine in image_engines:
        if engine.tiny_version:
            found.append({"title": f"tiny-{engine.key}", "model_name": f"tiny-{engine.key}", "hash": None,
                          "sha256": None, "filename": "tiny", "config": None, "engine": engine.key, "model": "tiny"})
    return found


router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)
WAIT_SECONDS = 24 * 3600  # how long a txt2img/img2img call waits for its jobs before a 504


def current_model(state: State) -> dict[str, Any]:
    """The selected model's ``models()`` entry (``app.state.a1111_model``); none selected yet: the first
    checkpoint, if there is one that is not a tiny test model."""
    if state.a1111_model is None:
        available = models()
        if not available or all(entry["model"] == "tiny" for entry in available):
            raise UsageError("no model selected: POST /sdapi/v1/options {\"sd_model_checkpoint\": TITLE} with a "
                             "title from GET /sdapi/v1/sd-models")
        state.a1111_model = next(entry for entry in available if entry["model"] != "tiny")
    return state.a1111_model


def _engine(state: State):
    from ..registry import get_engine

    return get_engine(current_model(state)["engine"])


@router.get("/scripts")
def scripts() -> dict[str, list]:
    return {"txt2img": [], "img2img": []}


@router.get("/sd-models")
def sd_models() -> list[dict[str, Any]]:
    return [{key: entry[key] for key in ("title", "model_name", "hash", "sha256", "filename", "config")}
            for entry in models()]


@router.get("/options")
def options(state: StateDep) -> dict[str, Any]:
    selected = state.a1111_model
    return {"sd_model_checkpoint": selected["title"] if selected else None, "codex_engine":
            selected["engine"] if selected else None}


@router.post("/options")
def set_options(body: dict[str, Any], state: StateDep) -> dict[str, Any]:
    title = body.get("sd_model_checkpoint")
    if title is not None:
        match = [entry for entry in models() if title in (entry["title"], entry["model_name"])]
        if not match:
            raise UsageError(f"sd_model_checkpoint: no model titled {title!r}; see GET /sdapi/v1/sd-models")
        state.a1111_model = match[0]
    return {}


@router.get("/samplers")
def samplers(state: StateDep) -> list[dict[str, Any]]:
    from ..registry import samplers_for

    engine = _engine(state)
    names = [sampler.name for sampler in samplers_for(engine)[0] if sampler.family == engine.sampler_family]
    return [{"name": name, "aliases": [], "options": {}} for name in names]


@router.get("/schedulers")
def schedulers(state: StateDep) -> list[dict[str, Any]]:
    from ..registry import samplers_for

    engine = _engine(state)
    names = [s.name for s in samplers_for(engine)[1] if s.family == engine.sampler_family]
    return [{"name": name.lower(), "label": name, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for name in names]


@router.post("/txt2img")
async def txt2img(body: dict[str, Any], state: StateDep):
    return await _run(state, body, "txt2img")


@router.post("/img2img")
async def img2img(body: dict[str, Any], state: StateDep):
    return await _run(state, body, "img2img")


def _images(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """img2img's task (with a ``mask``: inpaint) and its image fields, each one base64 string."""
    init = body.get("init_images") or []
    if not isinstance(init, list) or not all(isinstance(image, str) for image in init):
        raise UsageError(f"init_images: got {excerpt(init)}; a list of one image (base64 or a data URL)")
    if not init:
        raise UsageError("init_images: img2img needs one image (base64 or a data URL)")
    if len(init) > 1:
        raise UsageError(f"init_images: got {len(init)} images; Codex takes one per request")
    images = {"init_image": init[0]}
    mask = body.get("mask")
    if not mask:
        return "img2img", images
    if not isinstance(mask, str):
        raise UsageError(f"mask: got {excerpt(mask)}; an image as base64 or a data URL")
    images["mask_image"] = _inverted(mask) if body.get("inpainting_mask_invert") else mask
    return "inpaint", images


def _current_job(store) -> dict[str, Any] | None:
    """The job A1111's progress reports and its interrupt stops: the latest one running."""
    running = store.list("running", 1)
    return running[0] if running else None


@router.get("/progress")
def progress(store: StoreDep, workers: WorkersDep, skip_current_image: bool = False) -> dict[str, Any]:
    job = _current_job(store)
    queued = store.queued_count()
    step, steps = (job or {}).get("step") or 0, (job or {}).get("steps") or 0
    preview = workers.previews.get(job["id"]) if job and not skip_current_image else None
    return {"progress": round(step / steps, 4) if steps else 0.0,
            "eta_relative": (job or {}).get("eta_seconds") or 0.0,
            "state": {"skipped": False, "interrupted": bool((job or {}).get("interrupt_requested")),
                      "job": job["id"] if job else "", "job_count": queued + (1 if job else 0), "job_timestamp": "",
                      "job_no": 0, "sampling_step": step, "sampling_steps": steps},
            "current_image": base64.b64encode(preview["png"]).decode() if preview else None,
            "textinfo": job["stage"] if job else None}


@router.post("/interrupt")
def interrupt(state: StateDep, store: StoreDep, workers: WorkersDep) -> dict[str, Any]:
    """A1111's interrupt: the current job stops early and keeps its image (decoded at the step it reached), and the
    call it belongs to runs none of its later batches (``n_iter``)."""
    job = _current_job(store)
    if job and workers.interrupt(job["id"]) == "requested":
        state.a1111_interrupted.append(job["id"])
    return {}


@router.post("/skip")
def skip(store: StoreDep, workers: WorkersDep) -> dict[str, Any]:
    """A1111's skip: the current job stops early and keeps its image; the call's later batches still run."""
    job = _current_job(store)
    if job:
        workers.interrupt(job["id"])
    return {}


@router.post("/png-info")
def png_info(body: dict[str, Any]) -> dict[str, Any]:
    from .inputs import _inline

    image = body.get("image") or ""
    if not isinstance(image, str):
        raise UsageError(f"image: got {excerpt(image)}; a PNG as base64 or a data URL")
    raw = _inline(image)
    if not raw:
        raise UsageError("image: a PNG as base64 or a data URL is required")
    try:
        text = _png_text(raw)
    except Exception as exc:
        raise UsageError(f"image: not a readable image ({type(exc).__name__})") from None
    parameters = text.pop("parameters", "")
    return {"info": parameters, "items": text, "parameters": parse_parameters_text(parameters)}


def _translate(body: dict[str, Any], task: str, engine) -> tuple[dict[str, Any], list[str]]:
    """An A1111 body as a Codex request for ``engine``, and the settings it sets that Codex does not do."""
    request: dict[str, Any] = {}
    ignored = []
    fields = engine.params_model(task).model_fields
    for key, value in body.items():
        if key == "denoising_strength" and task == "txt2img":
            if body.get("enable_hr"):
                ignored.append("denoising_strength (hires fix: enable_hr is not supported)")
            continue  # txt2img uses it only for the hires-fix pass
        if key in FIELDS and value is not None and FIELDS[key] in fields:
            if key == "negative_prompt" and value == "":
                continue
            request[FIELDS[key]] = value
        elif key in FIELDS and value is not None and value not in NEUTRAL:
            ignored.append(f"{key} (engine {engine.key} {task} has no such setting)")
        elif key not in HANDLED and value not in NEUTRAL:
            ignored.append(f"{key} (not an A1111 field Codex knows)")
        elif key in HANDLED and key not in FIELDS and value not in NEUTRAL \
                and value not in DEFAULT_IGNORED.get(key, ()) and key not in TRANSLATED:
            ignored.append(f"{key}={excerpt(value)}")
    seed = _seed(body.get("seed"))
    if seed is not None:
        request["seed"] = seed
    sampler = body.get("sampler_name") or body.get("sampler_index")
    if sampler and "sampler" in fields:
        request["sampler"] = sampler
        schedule = body.get("scheduler")
        if schedule and "scheduler" in fields:
            from ..registry import samplers_for

            names = {s.name.lower(): s.name for s in samplers_for(engine)[1] if s.family == engine.sampler_family}
            request["scheduler"] = names.get(str(schedule).lower(), schedule)
    return request, ignored


async def _run(state: State, body: dict[str, Any], task: str):
    """An A1111 txt2img/img2img call: its ``n_iter`` batches as jobs on the queue, waited for, then answered
    in A1111's shape (a failed job: A1111's 500)."""
    submitted = await run_in_threadpool(_submit, state, body, task)
    jobs: list[dict[str, Any]] = []
    for job_id in submitted.pop("job_ids"):
        if any(job["id"] in state.a1111_interrupted for job in jobs):  # A1111 runs no later batch
            await run_in_threadpool(state.workers.cancel, job_id)
        jobs.append(await _ended(state, job_id))
    return await run_in_threadpool(_reply, state, body, jobs=jobs, **submitted)


def _submit(state: State, body: dict[str, Any], task: str) -> dict[str, Any]:
    """The call's jobs, validated and queued: what ``_reply`` needs to answer for them."""
    engine = _engine(state)
    images: dict[str, str] = {}
    if task != "txt2img":
        task, images = _images(body)
    if task not in engine.tasks:
        raise UsageError(f"the current model's engine {engine.key} has no {task} task")
    request, ignored = _translate(body, task, engine)
    request.update(images)
    n_iter = body.get("n_iter") or 1
    if not isinstance(n_iter, int) or n_iter < 1 or n_iter > 16:
        raise UsageError(f"n_iter: got {excerpt(n_iter)}; 1 to 16")
    job_ids = []
    for index in range(n_iter):  # A1111 gives each batch the next seeds
        part = dict(request)
        if "seed" in part and index:
            part["seed"] = request["seed"] + index * (request.get("batch_size") or 1)
        spec = JobSpec(engine=engine.key, task=task, request=part, model=current_model(state)["model"])
        job_ids.append(submit_job(state, spec)["id"])
    return {"engine": engine, "task": task, "request": request, "ignored": ignored, "job_ids": job_ids}


async def _ended(state: State, job_id: str) -> dict[str, Any]:
    """The job once it ended; a job deleted meanwhile counts as interrupted (A1111 answers what finished)."""
    job = await state.waits.wait(job_id, WAIT_SECONDS)
    return job or {"id": job_id, "state": "cancelled", "error": "deleted while the call waited", "result": None}


def _reply(state: State, body: dict[str, Any], engine, task: str, request: dict[str, Any], ignored: list[str],
           jobs: list[dict[str, Any]]):
    """A1111's answer for finished jobs: their PNGs as base64, and ``info`` (a JSON string) as A1111 writes it,
    with what Codex ignored and its job ids; the first failed job makes it A1111's 500."""
    pngs, infotexts, seeds = [], [], []
    for job in jobs:
        if job["state"] == "failed":
            return JSONResponse({"error": "failed", "detail": job["error"], "body": "", "errors": job["error"]},
                                500)
        if job["state"] != "done":
            continue  # cancelled (a later batch of an interrupted call): A1111 returns what finished
        for path in job["result"]["files"]:
            if path.endswith(".png"):
                try:
                    raw = Path(path).read_bytes()
                except FileNotFoundError:  # the job was deleted since it ended
                    continue
                pngs.append(base64.b64encode(raw).decode())
                infotexts.append(_png_text(raw).get("parameters", ""))
                seeds.append(job["result"]["info"]["seed"])
    first = jobs[0]["result"]["info"] if jobs[0]["state"] == "done" else {}
    request_used = first.get("request", request)
    info = {"prompt": request_used.get("prompt"), "all_prompts": [request_used.get("prompt")] * len(pngs),
            "negative_prompt": request_used.get("negative_prompt", ""), "seed": seeds[0] if seeds else None,
            "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(seeds),
            "sampler_name": request_used.get("sampler"), "scheduler": request_used.get("scheduler"),
            "steps": request_used.get("steps"), "cfg_scale": request_used.get("cfg"),
            "width": request_used.get("width"), "height": request_used.get("height"),
            "sd_model_name": current_model(state)["model_name"], "sd_model_hash": current_model(state)["hash"],
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "infotexts": infotexts,
            "interrupted": any(job["state"] == "cancelled" or "interrupted_at_step" in job["result"]["info"]
                               for job in jobs if job["state"] != "failed"),
            "codex_engine": engine.key, "codex_task": task, "codex_ignored": ignored,
            "codex_jobs": [job["id"] for job in jobs]}
    return {"images": pngs, "parameters": body, "info": json.dumps(info)}


def _png_text(raw: bytes) -> dict[str, str]:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        return dict(getattr(image, "text", {}) or {})


def _seed(value: Any) -> int | None:
    """A1111's ``seed``: None for a random one (-1, null or ""), else the integer, also from a whole number or its
    digits as A1111's own model reads them; anything else is a 422, never silently a random seed."""
    if value is None or value == "" or value == -1:
        return None
    if isinstance(value, float) and value.is_integer():
        return None if value == -1 else int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
        return None if int(value) == -1 else int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UsageError(f"seed: got {excerpt(value)}; an integer (-1 for a random seed)")


def _inverted(mask: str) -> str:
    from PIL import Image, ImageOps

    from .inputs import _inline

    raw = _inline(mask)
    if not raw:
        raise UsageError("mask: not a base64 image")
    out = io.BytesIO()
    try:
        with Image.open(io.BytesIO(raw)) as image:
            ImageOps.invert(image.convert("L")).save(out, format="PNG")
    except Exception as exc:  # noqa: BLE001  (whatever Pillow makes of the bytes: the field is not an image)
        raise UsageError(f"mask: not a readable image ({type(exc).__name__})") from None
    return base64.b64encode(out.getvalue()).decode()
