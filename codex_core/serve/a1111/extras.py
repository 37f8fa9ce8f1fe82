"""``png-info``."""

from __future__ import annotations

import io
from typing import Any

from fastapi import APIRouter

from ...errors import UsageError
from ...exporters.png import parse_parameters_text
from ..bodies import StrictJSONRoute, excerpt

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


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
