"""``txt2img`` and ``img2img``: an A1111 call as jobs on the queue, waited for, answered in A1111's shape.

They answer when their jobs end, which can take minutes: they wait on the event loop
(``JobWaits``, ``app.state.waits``), not in a thread, so any number of waiting calls leaves the
other routes answering at once. Their submission and answer (reading models, images, PNGs) run in
the threadpool.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.datastructures import State
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import UsageError
from ...exporters.png import image_seed
from ...params import MAX_SEED
from ...registry import get_engine
from ..bodies import StrictJSONRoute, excerpt
from ..dependencies import StateDep
from ..routes_jobs import JobSpec, submit_job
from . import controlnet_units, edit, hires, names
from .extras import _png_text
from .overrides import OWN_VAE, CallOptions, for_call, into_request
from .translate import _finite, _images, _translate

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)
WAIT_SECONDS = 24 * 3600  # how long a txt2img/img2img call waits for its jobs before a 504


@router.post("/txt2img")
async def txt2img(body: dict[str, Any], state: StateDep):
    return await _run(state, body, "txt2img")


@router.post("/img2img")
async def img2img(body: dict[str, Any], state: StateDep):
    return await _run(state, body, "img2img")


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
    """The call's jobs, validated and queued: what ``_reply`` needs to answer for them.

    The options are the service's with the call's ``override_settings`` (``overrides``); a random seed is drawn
    here, so that every image of the call gets the next one, as in A1111: the jobs of ``n_iter`` batches, and the
    images of a batch made from several init images (one job each), count on from it."""
    _finite(body)
    options = for_call(state.a1111, body)
    engine = get_engine(options.checkpoint["engine"])
    images: list[dict[str, str]] = [{}]
    substituted: list[str] = []
    served = edit.served_tasks(engine, options.checkpoint)  # from its configs, read once
    if task != "txt2img":
        references = edit.edit_references(engine, options.checkpoint, served, body, substituted)
        task, images = ("edit", [{"images": references}]) if references is not None else _images(body)
    if task not in engine.tasks:
        raise UsageError(f"the current model's engine {engine.key} has no {task} task")
    edit.check_served(options.checkpoint, served, task)
    request, ignored = _translate(body, task, engine)
    ignored += options.ignored
    into_request(options, engine, task, request, ignored)
    # sd-webui-controlnet's units as the request's controls; per control, whether its map is sent back
    control_maps = controlnet_units.into_request(body, task, engine, request, ignored, substituted)
    follow_up = hires.follow_up(body, engine, request, ignored, substituted) if task == "txt2img" else None
    controlnet_units.check_hires(engine, request, follow_up, substituted)
    n_iter = body.get("n_iter") or 1
    if not isinstance(n_iter, int) or n_iter < 1 or n_iter > 16:
        raise UsageError(f"n_iter: got {excerpt(n_iter)}; 1 to 16")
    if "seed" not in request and "seed" in engine.params_model(task).model_fields:
        request["seed"] = secrets.randbelow(MAX_SEED + 1)
    batch = request.get("batch_size")  # a wrong one is refused by the job's validation
    per_batch = len(images) if len(images) > 1 else batch if isinstance(batch, int) and batch > 0 else 1
    job_ids = []
    for index in range(n_iter):  # A1111 gives each batch the next seeds
        for position, fields in enumerate(images):
            part = {**request, **fields, **({"batch_size": 1} if len(images) > 1 else {})}
            if "seed" in part:
                part["seed"] = request["seed"] + index * per_batch + position
            spec = JobSpec(engine=engine.key, task=task, request=part, model=options.checkpoint["model"],
                           follow_up=follow_up)
            job_ids.append(submit_job(state, spec)["id"])
    return {"engine": engine, "task": task, "request": request, "ignored": ignored, "substituted": substituted,
            "options": options, "control_maps": control_maps, "job_ids": job_ids}


async def _ended(state: State, job_id: str) -> dict[str, Any]:
    """The job once it ended; a job deleted meanwhile counts as interrupted (A1111 answers what finished)."""
    job = await state.waits.wait(job_id, WAIT_SECONDS)
    return job or {"id": job_id, "state": "cancelled", "error": "deleted while the call waited", "result": None}


def _reply(state: State, body: dict[str, Any], engine, task: str, request: dict[str, Any], ignored: list[str],
           substituted: list[str], options: CallOptions, jobs: list[dict[str, Any]], control_maps: list[bool]):
    """A1111's answer for finished jobs: their PNGs as base64, and ``info`` (a JSON string) as A1111 writes it,
    with what Codex ignored or substituted and its job ids; the first failed job makes it A1111's 500."""
    pngs, infotexts, seeds = [], [], []
    for job in jobs:
        if job["state"] == "failed":
            return JSONResponse({"error": "failed", "detail": job["error"], "body": "", "errors": job["error"]},
                                500)
        if job["state"] != "done":
            continue  # cancelled (a later batch of an interrupted call): A1111 returns what finished
        # the control maps written beside the outputs are not among the images (they follow them: detected_maps)
        side = {record["path"] for record in (job["result"]["info"].get("side_images") or {}).values()}
        images = [path for path in job["result"]["files"] if path.endswith(".png") and path not in side]
        for index, path in enumerate(images):
            try:
                raw = Path(path).read_bytes()
            except FileNotFoundError:  # the job was deleted since it ended
                continue
            pngs.append(base64.b64encode(raw).decode())
            infotexts.append(_png_text(raw).get("parameters", ""))
            seeds.append(image_seed(job["result"]["info"], index))
    first = jobs[0]["result"]["info"] if jobs[0]["state"] == "done" else {}
    request_used = (first.get("first_run") or first).get("request", request)  # a hires job: its first pass
    checkpoint, strength_used = options.checkpoint, task != "txt2img" or bool(body.get("enable_hr"))
    info = {"prompt": request_used.get("prompt"), "all_prompts": [request_used.get("prompt")] * len(pngs),
            "negative_prompt": request_used.get("negative_prompt", ""), "seed": seeds[0] if seeds else None,
            "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(seeds),
            "sampler_name": request_used.get("sampler"), "scheduler": request_used.get("scheduler"),
            "steps": request_used.get("steps"), "cfg_scale": request_used.get("cfg"),
            "width": request_used.get("width"), "height": request_used.get("height"),
            "batch_size": request_used.get("batch_size", 1), "clip_skip": request_used.get("clip_skip", 1),
            "denoising_strength": body.get("denoising_strength") if strength_used else None,
            "sd_model_name": checkpoint["model_name"], "sd_model_hash": checkpoint["hash"],
            "sd_vae_name": None if options.vae in OWN_VAE else options.vae, "index_of_first_image": 0,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "infotexts": infotexts,
            "interrupted": any(job["state"] == "cancelled" or "interrupted_at_step" in job["result"]["info"]
                               for job in jobs if job["state"] != "failed"),
            "codex_engine": engine.key, "codex_task": task, "codex_ignored": ignored,
            "codex_substituted": substituted, "codex_override_settings": options.overridden,
            "codex_jobs": [job["id"] for job in jobs]}
    # the sampler and schedule type as asked and as they ran (a hires job: its first pass's)
    info.update(names.reply_fields(names.translate(body, engine, task)[1], first.get("first_run") or first))
    parameters = body if body.get("include_init_images") or task == "txt2img" else \
        {**body, "init_images": None, "mask": None}  # as A1111: the images sent are not sent back
    maps = controlnet_units.detected_maps(first, control_maps)  # after the images, as the extension sends them
    return {"images": pngs + maps, "parameters": parameters, "info": json.dumps(info)}
