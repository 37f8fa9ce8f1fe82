"""What a served request may read: images sent inline, and files only inside the configured roots.

Before a served request is validated (validation opens image files), every input-file field of the
engine's params model (``INPUT_FILE``: ``init_image``, ``mask_image``, ``loras[].path``,
``mode_lora.path``, ...) and ``vae`` is settled:

- a data URL (``data:image/png;base64,...``) or bare base64 is decoded, checked to be an image
  within the pixel limit, and written to the job's own inputs folder; the field then names it;
- a path is allowed only when its real path (symlinks followed) is inside an input root
  (``--input-root``) or a models root (`codex models --roots`): ``/etc/passwd``, ``../`` escapes
  and symlinks out of a root are refused with 422 before anything is opened.

A name or path a request gives (``check_name``: a model, a preset, a format) is printable text no
longer than a path can be: a NUL or a megabyte-long "path" is a 422 naming the field, never an
``OSError`` from the file system.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import secrets
import typing
import unicodedata
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import UsageError
from ..params import InputFile

PATH_CHARS = 4096  # Linux's PATH_MAX: no longer name or path can be opened


def name_problem(field: str, value: str, limit: int = PATH_CHARS) -> str | None:
    """Why ``value`` cannot be a name or path (longer than ``limit`` characters, a control character), or None."""
    from .bodies import excerpt

    if len(value) > limit:
        return f"{field}: {len(value)} characters ({excerpt(value, 40)}); a name or path is at most {limit}"
    bad = next((char for char in value if unicodedata.category(char) in ("Cc", "Cs")), None)
    if bad is not None:
        return f"{field}: {excerpt(value)} contains the control character U+{ord(bad):04X}; a name or path is text"
    return None


def check_name(field: str, value: str) -> None:
    """A name or path a request gives (a model, a preset): a UsageError (422) when it cannot be one."""
    problem = name_problem(field, value)
    if problem:
        raise UsageError(problem)


def input_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The input-file fields of a params model as a tree: name -> True (a file) or a nested tree."""
    tree: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if any(isinstance(item, InputFile) for item in info.metadata):
            tree[name] = True
            continue
        for candidate in _models_in(info.annotation):
            nested = input_fields(candidate)
            if nested:
                tree[name] = nested
    return tree


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [found for arg in typing.get_args(annotation) for found in _models_in(arg)]


class Inputs:
    def __init__(self, roots: list[Path], max_pixels: int):
        self.roots = [Path(os.path.realpath(root)) for root in roots]
        self.max_pixels = max_pixels

    def allowed(self, path: str) -> bool:
        try:
            real = Path(os.path.realpath(os.path.expanduser(path)))  # "~nosuchuser" stays as it is
        except (ValueError, OSError):  # a NUL, a path the system cannot take: not inside any root
            return False
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    @staticmethod
    def names_a_file(value: str) -> bool:
        """Whether ``value`` is meant as a path (not a name to look up): it has a separator, starts with ``~``,
        or exists. Checked with ``os.path``, which answers False where ``Path`` would raise."""
        return "/" in value or os.sep in value or value.startswith("~") or os.path.exists(value)

    def settle(self, model: type[BaseModel], request: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The request with inline images written under ``folder`` and every path checked; UsageError if not."""
        problems: list[str] = []
        settled = self._walk(input_fields(model), request, folder, "", problems)
        vae = settled.get("vae")
        if isinstance(vae, str) and (problem := name_problem("vae", vae)):
            problems.append(problem)
        elif isinstance(vae, str) and self.names_a_file(vae) and not self.allowed(vae):
            problems.append(self._outside("vae", vae))
        if problems:
            raise UsageError("invalid request: " + "; ".join(problems),
                             hint="send images inline (base64 or a data URL), or start the service with "
                                  "--input-root DIR for the files it may read")
        return settled

    def _outside(self, field: str, value: str) -> str:
        from .bodies import excerpt

        return (f"{field}: {excerpt(value)} is outside the folders this service may read (the input roots and "
                "the models roots)")

    def _walk(self, tree: dict[str, Any], data: Any, folder: Path, prefix: str, problems: list[str]) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, sub in tree.items():
            value = data.get(name)
            field = f"{prefix}{name}"
            if value is None:
                continue
            if sub is True:
                if isinstance(value, str):
                    data[name] = self._file(field, value, folder, problems)
                elif isinstance(value, list):  # a list of files (an edit's reference images)
                    data[name] = [self._file(f"{field}.{index}", item, folder, problems) if isinstance(item, str)
                                  else item for index, item in enumerate(value)]
            elif isinstance(value, list):
                data[name] = [self._walk(sub, item, folder, f"{field}.{index}.", problems)
                              for index, item in enumerate(value)]
            else:
                data[name] = self._walk(sub, value, folder, f"{field}.", problems)
        return data

    def _file(self, field: str, value: str, folder: Path, problems: list[str]) -> str:
        raw = _inline(value)
        if raw is None:
            problem = name_problem(field, value)
            if problem or not self.allowed(value):
                problems.append(problem or self._outside(field, value))
            return value
        path = self.write_image(field, raw, folder, field.replace(".", "_"), problems)
        return str(path) if path else value[:40]

    def write_image(self, field: str, raw: bytes, folder: Path, stem: str, problems: list[str],
                    decode: bool = False) -> Path | None:
        """``raw`` written as ``folder/stem.<format>`` if it is an image within the pixel limit; else a problem.
        With ``decode``, the image is decoded in full first, as a job's input is when it is validated (a
        truncated file or a decompression bomb is a problem now, not when a job uses it)."""
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(raw))
        except Exception as exc:  # not an image Pillow can open: say so with the field
            problems.append(f"{field}: the data is not an image ({type(exc).__name__})")
            return None
        with image:
            width, height = image.size
            if width * height > self.max_pixels:
                problems.append(f"{field}: the image is {width}x{height} = {width * height} pixels; this "
                                f"service takes at most {self.max_pixels} (--max-image-pixels)")
                return None
            suffix = "." + (image.format or "png").lower()
            if decode:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", Image.DecompressionBombWarning)
                        image.load()
                except Exception as exc:  # a truncated or corrupt file, a decompression bomb
                    problems.append(f"{field}: the {image.format} image does not decode ({type(exc).__name__}: "
                                    f"{str(exc)[:200]})")
                    return None
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (stem + suffix)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(raw)
        partial.replace(path)  # two uploads of the same image never leave a half-written file
        return path


def _inline(value: str) -> bytes | None:
    """The bytes of a data URL or bare base64 string; None when the value is (meant as) a path."""
    if value.startswith("data:"):
        _, _, payload = value.partition(",")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return b""
    if len(value) < 64:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None  # not base64: a path
    return raw if raw.startswith(IMAGE_MAGIC) else None


# PNG, JPEG, GIF, WebP/RIFF, BMP, TIFF: what bare base64 (A1111 clients send it) must decode to
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
