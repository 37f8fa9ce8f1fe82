"""A1111's "Extras" and image tools: ``png-info``, ``upscalers``, ``latent-upscale-modes``, ``extra-single-image``,
``extra-batch-images`` and ``interrogate``.

The upscalers are A1111's built-in ones, done as A1111 does them (``modules/upscaler.py``): ``None`` leaves
the image as it is, ``Lanczos`` and ``Nearest`` resize by the factor with that filter, then to the size
A1111 aims at (the factor's size, each side rounded down to a multiple of 8) with Lanczos. Resize mode 1
aims at ``upscaling_resize_w`` x ``upscaling_resize_h`` (the larger factor; ``upscaling_crop`` then crops
the centre, as A1111 pastes it); a second upscaler is blended in by ``extras_upscaler_2_visibility``.
Face restoration is not something Codex does: a visibility above 0 is reported in ``html_info``. The work
is a resize in the service process, bounded by the cost limits (input and output pixels, images per call).
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...errors import UsageError
from ...exporters.png import parse_parameters_text
from ..bodies import StrictJSONRoute, excerpt
from ..dependencies import SettingsDep

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)
UPSCALERS = ("None", "Lanczos", "Nearest")  # A1111's built-in upscalers, in its order
LATENT_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                "Latent (nearest)", "Latent (nearest-exact)")
NOT_DONE = ("gfpgan_visibility", "codeformer_visibility")  # face restorers: Codex has none


@router.post("/png-info")
def png_info(body: dict[str, Any]) -> dict[str, Any]:
    from ..inputs import _inline

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


def _png_text(raw: bytes) -> dict[str, str]:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        return dict(getattr(image, "text", {}) or {})


@router.get("/upscalers")
def upscalers() -> list[dict[str, Any]]:
    return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for name in UPSCALERS]


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, str]]:
    return [{"name": name} for name in LATENT_MODES]


@router.post("/extra-single-image")
def extra_single_image(body: dict[str, Any], settings: SettingsDep) -> dict[str, Any]:
    image = _decode(body.get("image"), "image", settings.limits.input_pixels)
    result, info = _extras(image, body, settings.limits.output_pixels)
    return {"html_info": info, "image": _png(result)}


@router.post("/extra-batch-images")
def extra_batch_images(body: dict[str, Any], settings: SettingsDep) -> dict[str, Any]:
    listed = body.get("imageList")
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise UsageError(f"imageList: got {excerpt(listed)}; a list of {{\"data\": base64, \"name\": text}}")
    if len(listed) > settings.limits.batch_size:
        raise UsageError(f"imageList: {len(listed)} images; this service takes at most {settings.limits.batch_size} "
                         "(--max-batch-size)")
    images = [_decode(item.get("data"), f"imageList.{index}.data", settings.limits.input_pixels)
              for index, item in enumerate(listed)]
    results = [_extras(image, body, settings.limits.output_pixels) for image in images]
    return {"html_info": results[0][1] if results else "", "images": [_png(image) for image, _ in results]}


@router.post("/interrogate")
def interrogate(body: dict[str, Any], settings: SettingsDep) -> JSONResponse:
    """No captioner is installed with Codex: a request that is right (an image, a model name) gets a 501 that
    says so; a wrong one a 422, as any call."""
    _decode(body.get("image"), "image", settings.limits.input_pixels)
    model = body.get("model", "clip")
    if not isinstance(model, str):
        raise UsageError(f"model: got {excerpt(model)}; a captioner's name, e.g. clip")
    return JSONResponse({"detail": f"interrogate: no captioner is installed (model {excerpt(model)}); Codex "
                                   "generates images but does not describe them",
                         "hint": "caption the image with another tool"}, 501)


def _decode(value: Any, field: str, max_pixels: int):
    """The image a base64 string or data URL holds, decoded in full within the pixel limit."""
    from PIL import Image

    from ..inputs import _inline

    raw = _inline(value) if isinstance(value, str) else None
    if not raw:
        raise UsageError(f"{field}: got {excerpt(value)}; an image as base64 or a data URL")
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > max_pixels:
            raise UsageError(f"{field}: the image is {image.width}x{image.height}; this service takes at most "
                             f"{max_pixels} pixels (--max-image-pixels)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001  (whatever Pillow makes of the bytes: the field is not an image)
        raise UsageError(f"{field}: not a readable image ({type(exc).__name__})") from None
    return image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UsageError(f"{name}: got {excerpt(value)}; a number")
    return value


def _extras(image, body: dict[str, Any], max_pixels: int):
    """The image through the upscalers the body names, and A1111's info text for it."""
    first, second = body.get("upscaler_1") or "None", body.get("upscaler_2") or "None"
    for field, name in (("upscaler_1", first), ("upscaler_2", second)):
        if name not in UPSCALERS:
            raise UsageError(f"{field}: got {excerpt(name)}; the upscalers: {', '.join(UPSCALERS)}",
                             hint="Codex has A1111's built-in upscalers only (GET /sdapi/v1/upscalers)")
    mode = body.get("resize_mode", 0)
    if mode not in (0, 1):
        raise UsageError(f"resize_mode: got {excerpt(mode)}; 0 (by upscaling_resize) or 1 (to width x height)")
    width, height = int(_number(body, "upscaling_resize_w", 512)), int(_number(body, "upscaling_resize_h", 512))
    factor = max(width / image.width, height / image.height) if mode == 1 else _number(body, "upscaling_resize", 2)
    if not 0 < factor <= 8 or width < 1 or height < 1:
        raise UsageError(f"upscaling_resize: the factor is {factor:g}; above 0 and at most 8 (resize mode 1: "
                         "upscaling_resize_w and upscaling_resize_h at least 1)")
    if first != "None" and image.width * factor * image.height * factor > max_pixels:
        raise UsageError(f"upscaling_resize: the result would be {int(image.width * factor)}x"
                         f"{int(image.height * factor)}; this service makes at most {max_pixels} pixels "
                         "(--max-output-pixels)")
    if first == "None":  # A1111: no upscaling at all
        return image, _info(body, ["Postprocess upscaler: None"])
    notes = [f"Postprocess upscale to: {width}x{height}" if mode == 1 else f"Postprocess upscale by: {factor:g}"]
    result = _upscale(image, factor, first)
    visibility = _number(body, "extras_upscaler_2_visibility", 0)
    if second != "None" and visibility > 0:
        result = _blend(result, _upscale(image, factor, second), min(visibility, 1))
        notes.append(f"Postprocess upscaler 2: {second}")
    if mode == 1 and body.get("upscaling_crop", True):
        cropped = _new(result.mode, (width, height))
        cropped.paste(result, (width // 2 - result.width // 2, height // 2 - result.height // 2))
        result = cropped
        notes.append(f"Postprocess crop to: {width}x{height}")
    return result, _info(body, [*notes, f"Postprocess upscaler: {first}"])


def _upscale(image, factor: float, name: str):
    """A1111's ``Upscaler.upscale`` for its built-in upscalers."""
    from PIL import Image

    target = (int(image.width * factor // 8 * 8), int(image.height * factor // 8 * 8))
    if image.width < target[0] or image.height < target[1]:
        resample = Image.Resampling.LANCZOS if name == "Lanczos" else Image.Resampling.NEAREST
        image = image.resize((int(image.width * factor), int(image.height * factor)), resample)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image


def _blend(first, second, visibility: float):
    from PIL import Image

    return Image.blend(first, second.convert(first.mode).resize(first.size), visibility)


def _new(mode: str, size: tuple[int, int]):
    from PIL import Image

    return Image.new(mode, size)


def _info(body: dict[str, Any], notes: list[str]) -> str:
    skipped = [f"{name}={body[name]} (Codex has no face restorer)" for name in NOT_DONE
               if isinstance(body.get(name), (int, float)) and body.get(name)]
    return ", ".join(notes) + (f"; codex ignored: {', '.join(skipped)}" if skipped else "")


def _png(image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()
