"""What one served job may cost, checked before it is queued: a request over a limit is a 422 naming the field,
the limit and the `codex serve` flag that raises it (every layer submits through the same check: /v1, A1111).

The limits bound what makes a job slow or large, each from what is known before anything loads: the
prompt's bytes (before validation: a huge prompt costs time even to validate) and the tokens the text
encoders will see (the engine's own upper bound, ``Engine.prompt_tokens``: A1111's BREAK chunks), the
steps, the output's pixels per image or frame and its frames, the batch, and every input image's pixels
(read from its header, never decoded) and input video's frames and pixels per frame (probed, not decoded). The defaults are what one GPU serves in minutes, not hours.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import UsageError
from ..params import input_files


@dataclass(frozen=True)
class Limits:
    output_pixels: int = 4096 * 4096  # width x height of one output image or video frame
    frames: int = 257  # frames of one output video
    steps: int = 150
    batch_size: int = 8
    prompt_bytes: int = 16 * 1024  # each text field of the request, in UTF-8
    prompt_tokens: int = 2048  # what the text encoders see, as the engine bounds it
    input_pixels: int = 8192 * 8192  # width x height of each input image, from its header


# the `codex serve` flag that sets each limit (the option's parameter is the flag without dashes)
FLAGS = {"output_pixels": "--max-output-pixels", "frames": "--max-frames", "steps": "--max-steps",
         "batch_size": "--max-batch-size", "prompt_bytes": "--max-prompt-bytes", "prompt_tokens": "--max-prompt-tokens",
         "input_pixels": "--max-image-pixels"}
HELP = {"output_pixels": "Pixels of one output image or video frame (width x height) a job may ask for.",
        "frames": "Frames of one output video.", "steps": "Denoising steps of one job.",
        "batch_size": "Images of one job.", "prompt_bytes": "Bytes of each text field of a request (UTF-8).",
        "prompt_tokens": "Tokens the text encoders may see (the engine's bound: A1111 BREAK chunks count).",
        "input_pixels": "Pixels of an input image (read from its header, before decoding)."}


def option_name(limit: str) -> str:
    return FLAGS[limit].lstrip("-").replace("-", "_")


def from_options(given: dict[str, Any]) -> Limits:
    """The limits of `codex serve`'s options (their parameter names, as click gives them)."""
    return Limits(**{limit.name: given[option_name(limit.name)] for limit in fields(Limits)
                     if given.get(option_name(limit.name)) is not None})


def _over(limits: Limits, limit: str, field: str, value: int, what: str) -> UsageError:
    allowed = getattr(limits, limit)
    return UsageError(f"{field}: {what} is {value}; this service takes at most {allowed} ({FLAGS[limit]})",
                      hint=f"ask for less, or start codex serve with {FLAGS[limit]} {value} or more")


def check_raw(limits: Limits, request: dict[str, Any], model) -> None:
    """Before validation: every text field's size (input files aside: an image may come inline), and the batch
    (a request that is only large is refused fast)."""
    from .inputs import input_fields

    files = set(input_fields(model)) | {"vae"}
    for name, value in request.items():
        if name not in files and isinstance(value, str) and len(value) > limits.prompt_bytes // 4:  # cheap first: 4 bytes a character at most
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > limits.prompt_bytes:
                raise _over(limits, "prompt_bytes", name, size, "its size in bytes")
    batch = request.get("batch_size")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > limits.batch_size:
        raise _over(limits, "batch_size", "batch_size", batch, "the batch")


def check_prepared(limits: Limits, engine, task: str, params) -> None:
    """After validation (presets filled): what the job will do, against every limit."""
    from ..images import oriented_size

    size = params.target_size() if hasattr(params, "target_size") else (
        (params.width, params.height) if getattr(params, "width", None) and getattr(params, "height", None) else None)
    if size and size[0] * size[1] > limits.output_pixels:
        raise _over(limits, "output_pixels", "width x height", size[0] * size[1],
                    f"the output ({size[0]}x{size[1]}) in pixels")
    for field, limit, what in (("num_frames", "frames", "the video's frames"), ("steps", "steps", "the steps"),
                               ("batch_size", "batch_size", "the batch")):
        value = getattr(params, field, None)
        if isinstance(value, int) and value > getattr(limits, limit):
            raise _over(limits, limit, field, value, what)
    tokens = engine.prompt_tokens(task, params)
    if tokens is not None and tokens > limits.prompt_tokens:
        raise _over(limits, "prompt_tokens", "prompt", tokens, "what the text encoders would see, in tokens")
    from .inputs import video_fields

    videos = video_fields(type(params))
    for field, path in input_files(params).items():
        if field.split(".")[0] in videos:  # a video: its frames' pixels and its frames (probed at validation)
            _check_video(limits, field, path)
            continue
        try:
            width, height = oriented_size(path)
        except Exception:  # noqa: BLE001  (not an image: a LoRA or VAE file; validation checked images)
            continue
        if width * height > limits.input_pixels:
            raise _over(limits, "input_pixels", field, width * height, f"the image ({width}x{height}) in pixels")


def _check_video(limits: Limits, field: str, path: str) -> None:
    from ..videos import probe_video

    facts = probe_video(path)
    if facts.width * facts.height > limits.input_pixels:
        raise _over(limits, "input_pixels", field, facts.width * facts.height,
                    f"each frame of the video ({facts.width}x{facts.height}) in pixels")
    if facts.frames > limits.frames:
        raise _over(limits, "frames", field, facts.frames, "the input video's frame count")
