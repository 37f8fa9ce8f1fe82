"""``enable_hr`` (A1111's hires fix) as the txt2img job's follow-up step (``serve.follow_up``): each image
goes through the engine's ``upscale`` task, with its own seed, in the same job.

- the target size: ``hr_resize_x``/``hr_resize_y`` as A1111 computes it (one given: the other keeps the
  aspect; both: the larger scale, uncropped), else ``width``/``height`` times ``hr_scale``;
- ``hr_second_pass_steps`` (0: ``steps``) is the second pass's schedule, ``denoising_strength`` the part
  of it that runs again (the upscale task counts as img2img does: the last int(steps x strength) steps);
- ``hr_prompt``, ``hr_negative_prompt``, ``hr_sampler_name``, ``hr_scheduler`` when given, else the first
  pass's; the request's other fields the upscale task has too (LoRAs, VAE, clip skip) go with it;
- ``hr_upscaler``: the upscale task resizes with Lanczos; any other upscaler (the Latent modes, Nearest,
  None) runs as Lanczos and is listed in ``info.codex_substituted``.

An engine without an ``upscale`` task lists ``enable_hr`` in ``info.codex_ignored``.
"""

from __future__ import annotations

from typing import Any

from ...errors import UsageError
from ..bodies import excerpt

FIELDS = {"enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
          "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt", "denoising_strength"}
DEFAULT_STRENGTH = 0.7  # A1111's hires denoising strength when a call gives none
RESAMPLER = "Lanczos"  # what the upscale task resizes with
NOT_THE_FIRST_PASS = {"width", "height", "batch_size", "seed", "strength", "steps"}
SAME_SAMPLER = ("", "Use same sampler", "Use same scheduler")


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise UsageError(f"{name}: got {excerpt(value)}; a number")
    return value


def target_size(body: dict[str, Any], width: int, height: int) -> tuple[int, int]:
    """The hires pass's size, as A1111 computes it."""
    resize_x, resize_y = int(_number(body, "hr_resize_x", 0)), int(_number(body, "hr_resize_y", 0))
    if not resize_x and not resize_y:
        scale = _number(body, "hr_scale", 2.0)
        return int(width * scale), int(height * scale)
    if not resize_y:
        return resize_x, resize_x * height // width
    if not resize_x:
        return resize_y * width // height, resize_y
    if width / height < resize_x / resize_y:  # both: the image covers the box (A1111 then crops; Codex does not)
        return resize_x, resize_x * height // width
    return resize_y * width // height, resize_y


def follow_up(body: dict[str, Any], engine, request: dict[str, Any], ignored: list[str],
              substituted: list[str]) -> list[dict[str, Any]] | None:
    """The upscale step of a txt2img call with ``enable_hr`` (None without it, or for an engine with no such
    task: then listed in ``ignored``)."""
    if not body.get("enable_hr"):
        return None
    if "upscale" not in engine.tasks:
        ignored.append(f"enable_hr (engine {engine.key} has no upscale task)")
        return None
    width, height = request.get("width"), request.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        raise UsageError("enable_hr: needs width and height (the first pass's size)")
    target = target_size(body, width, height)
    if target[0] <= width or target[1] <= height:
        raise UsageError(f"hr_scale/hr_resize_x/hr_resize_y: the hires pass would make {target[0]}x{target[1]} from "
                         f"{width}x{height}; Codex's upscale task enlarges (a scale above 1)")
    if target[0] * height != target[1] * width:
        substituted.append(f"hr_resize_x/hr_resize_y: {body.get('hr_resize_x')}x{body.get('hr_resize_y')} "
                           f"has another aspect than {width}x{height}; the image is {target[0]}x{target[1]}, uncropped")
    fields = engine.params_model("upscale").model_fields
    step = {key: value for key, value in request.items() if key in fields and key not in NOT_THE_FIRST_PASS}
    step["upscale_factor"] = target[0] / width
    strength = _number(body, "denoising_strength", DEFAULT_STRENGTH) or DEFAULT_STRENGTH
    step["strength"] = strength
    steps = int(_number(body, "hr_second_pass_steps", 0)) or request.get("steps")
    if steps:
        step["steps"] = steps
    for name, field in (("hr_prompt", "prompt"), ("hr_negative_prompt", "negative_prompt")):
        value = body.get(name)
        if isinstance(value, str) and value and field in fields:
            step[field] = value
    own = {key: body.get(key) for key in ("hr_sampler_name", "hr_scheduler")
           if isinstance(body.get(key), str) and body.get(key) not in SAME_SAMPLER}
    if own:  # A1111's names for the second pass, read as for the first ("Use same ..." keeps the first's)
        from . import names

        step.update(names.translate({"sampler_name": own.get("hr_sampler_name") or body.get("sampler_name"),
                                     "scheduler": own.get("hr_scheduler") or body.get("scheduler")},
                                    engine, "upscale")[0])
    upscaler = body.get("hr_upscaler") or "Latent"
    if upscaler != RESAMPLER:
        substituted.append(f"hr_upscaler={excerpt(upscaler)} ran as {RESAMPLER} (the upscale task resizes the "
                           "image with Lanczos before its second pass)")
    return [{"task": "upscale", "request": step}]
