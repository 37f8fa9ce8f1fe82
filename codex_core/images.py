"""Input images as a model needs them, from whatever a user's file holds (Pillow only, no numpy).

- Every mode Pillow opens becomes 8-bit RGB (or L for masks) by its meaning, not by clipping:
  16-bit and 32-bit integer images are scaled from their 16-bit range, float images from [0, 1]
  (or, when they go beyond 1, from their own maximum); CMYK and palette images are converted.
- EXIF orientation is applied as image viewers show it; sizes are the oriented ones everywhere.
- Transparency is handled on purpose: an init image is flattened onto white (as A1111 does); a mask
  whose colour channels are uniform and whose alpha varies uses its alpha as the mask, any other
  mask is flattened onto black first.
- A folder, an unreadable file, a file that is not an image and an image over Pillow's
  decompression-bomb limit are usage errors naming the field.

Every conversion is recorded in ``notes`` (it goes into info.json as ``notes.converted``).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic_core import PydanticCustomError

ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
EXIF_ORIENTATION = 0x0112
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _error(message: str, **values: Any) -> PydanticCustomError:
    return PydanticCustomError("image_path", message, values)


def _path(value: str) -> Path:
    from .errors import UsageError
    from .paths import user_path

    try:
        return user_path(value)
    except UsageError as exc:  # a path no file system holds (too long, ~nosuchuser): shown with the field
        raise _error("{problem}", problem=exc.message) from None


def open_image(value: str) -> Image.Image:
    """Open and fully decode the image at ``value``; PydanticCustomError (shown with the field) on any problem."""
    path = _path(value)
    if path.is_dir():
        raise _error("'{path}' is a folder, not an image file", path=value)
    if not os.path.exists(path):
        raise _error("no such image file: '{path}'", path=value)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit is an error, not a warning
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _error("'{path}' has more pixels than Pillow's decompression-bomb limit ({limit} pixels); "
                     "scale it down first", path=value, limit=f"{limit:,}") from None
    except PermissionError:
        raise _error("'{path}' cannot be read (permission denied)", path=value) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _error("'{path}' is not a readable image ({reason})", path=value, reason=str(exc)) from None
    return image


def oriented_size(value: str) -> tuple[int, int]:
    """The image's size as viewers show it (EXIF orientation applied).

    A PNG's EXIF may follow its pixel data, so finding it can mean reading the whole file: the answer is kept
    per file version (path, modification time, size), as validation and the run ask more than once."""
    path = _path(value)
    stat = os.stat(path)
    return _oriented_size(os.path.realpath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _oriented_size(path: str, mtime_ns: int, size: int) -> tuple[int, int]:
    with Image.open(path) as image:
        width, height = image.size
        return (height, width) if image.getexif().get(EXIF_ORIENTATION) in ROTATED else (width, height)


def _to_8bit(image: Image.Image, notes: dict[str, Any]) -> Image.Image:
    """Integer and float images at 8 bits per channel, scaled by their range rather than clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        notes["scaled"] = "16-bit values to 8 bits (/257)"
        return image.convert("I").point(lambda v: v / 257 + 0.5).convert("F").convert("L")  # + 0.5: round
    if image.mode == "F":
        low, high = image.getextrema()
        scale = 255.0 if high <= 1.0 else 255.0 / high
        notes["scaled"] = f"float values to 8 bits (x{scale:g}; range {low:g}..{high:g})"
        return image.point(lambda v: v * scale + 0.5).convert("L")  # + 0.5: round, as the conversion truncates
    return image


def prepare(image: Image.Image, mask: bool = False) -> tuple[Image.Image, dict[str, Any]]:
    """The image as RGB (or, for a mask, L) with what was done to it."""
    notes: dict[str, Any] = {}
    orientation = image.getexif().get(EXIF_ORIENTATION)
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
        notes["exif_orientation"] = orientation
    if image.mode != ("L" if mask else "RGB"):
        notes["mode"] = image.mode
    image = _to_8bit(image, notes)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        alpha = image.getchannel("A")
        if alpha.getextrema() != (255, 255):
            colours = image.convert("RGB").getextrema()
            if mask and all(low == high for low, high in colours):
                notes["alpha"] = "used as the mask (the colour channels are uniform)"
                return alpha, notes
            background = BLACK if mask else WHITE
            notes["alpha"] = f"flattened onto {'black' if mask else 'white'}"
            flat = Image.new("RGB", image.size, background)
            flat.paste(image.convert("RGB"), mask=alpha)
            image = flat
    return image.convert("L" if mask else "RGB"), notes
