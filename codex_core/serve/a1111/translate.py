"""An A1111 request body as a Codex request.

Clients send many fields by default, often null. A field that maps is passed on (and strictly
validated by the engine: a value it would have to change is a 422). A field with its neutral value
(``null``, ``false``, ``0``, ``[]``, ``{}``, ``""``, the defaults clients send) is dropped silently;
one set to something Codex does not do (``restore_faces``, ``tiling``, ``styles``, scripts...) is
listed in ``info.codex_ignored`` instead of failing the call. The hires fix (``hires``) and
``override_settings`` (``overrides``) are translated on their own.
"""

from __future__ import annotations

import base64
import io
import math
import re
from typing import Any

from ...errors import UsageError
from ..bodies import excerpt
from . import names
from .hires import FIELDS as HIRES_FIELDS

# A1111 field -> Codex field, for the fields whose meaning is the same
FIELDS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps", "cfg_scale": "cfg",
          "width": "width", "height": "height", "batch_size": "batch_size", "denoising_strength": "strength",
          "clip_skip": "clip_skip"}
# Fields clients send that decide nothing here when neutral, or that Codex cannot honour when set.
NEUTRAL = (None, False, 0, 0.0, "", [], {}, -1)
# Fields _translate reads itself (or others: generation the images and n_iter, hires the hires fix, overrides
# the override_settings)
TRANSLATED = {"seed", "sampler_name", "scheduler", "sampler_index", "init_images", "mask", "n_iter",
              "inpainting_mask_invert", "override_settings", "override_settings_restore_afterwards", *HIRES_FIELDS,
              "alwayson_scripts"}  # alwayson_scripts: controlnet_units
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


def _translate(body: dict[str, Any], task: str, engine) -> tuple[dict[str, Any], list[str]]:
    """An A1111 body as a Codex request for ``engine``, and the settings it sets that Codex does not do."""
    request: dict[str, Any] = {}
    ignored = []
    fields = engine.params_model(task).model_fields
    for key, value in body.items():
        if key == "denoising_strength" and task == "txt2img":
            continue  # txt2img uses it only for the hires-fix pass (hires.py)
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
    request.update(names.translate(body, engine, task)[0])  # A1111's sampler and schedule-type names
    return request, ignored


def _images(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """img2img's task (with a ``mask``: inpaint) and the image fields of each image of the batch, as base64.

    As in A1111: one init image serves the whole batch; several make a batch of that many (``batch_size``
    becomes their count), image i from init image i, and more than ``batch_size`` is refused."""
    init = body.get("init_images") or []
    if not isinstance(init, list) or not all(isinstance(image, str) for image in init):
        raise UsageError(f"init_images: got {excerpt(init)}; a list of images (base64 or data URLs)")
    if not init:
        raise UsageError("init_images: img2img needs an image (base64 or a data URL)")
    batch = body.get("batch_size") or 1
    if len(init) > 1 and isinstance(batch, int) and len(init) > batch:
        raise UsageError(f"init_images: got {len(init)} images for a batch_size of {batch}; A1111 takes one image "
                         "for the batch, or at most batch_size images (one per image of the batch)")
    mask = body.get("mask")
    if mask and not isinstance(mask, str):
        raise UsageError(f"mask: got {excerpt(mask)}; an image as base64 or a data URL")
    if mask and body.get("inpainting_mask_invert"):
        mask = _inverted(mask)
    return ("inpaint" if mask else "img2img"), [{"init_image": image, **({"mask_image": mask} if mask else {})}
                                                for image in init]


def _finite(body: dict[str, Any]) -> None:
    """No NaN or infinity anywhere in the body (Python's JSON reader takes them; no field means them, and an
    answer that echoes one could not be written as JSON): a 422 naming the field. Walked without recursion:
    a body may nest as deep as the JSON reader allows."""
    pending: list[tuple[str, Any]] = list(body.items())
    while pending:
        where, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{where}: got {value}; a number here is finite")
        if isinstance(value, dict):
            pending.extend((f"{where}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{where}.{index}", item) for index, item in enumerate(value))


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

    from ..inputs import _inline

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
