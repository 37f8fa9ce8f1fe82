"""What a served request may read: images and videos sent inline, and files only inside the configured roots.

Before a served request is validated (validation opens image files and probes videos), every input-file
field of the engine's params model (``INPUT_FILE``: ``init_image``, ``mask_image``, ``init_video``,
``loras[].path``, ``mode_lora.path``, ...) and ``vae`` is settled:

- a data URL (``data:image/png;base64,...``) or bare base64 is decoded, checked to be an image
  within the pixel limit, and written to the job's own inputs folder; the field then names it;
- in a video field (``VideoPath``, ``x-codex-input: "video"``), a data URL (``data:video/mp4;base64,...``)
  or bare base64 of a video is written there the same way once the bundled ffmpeg has probed it (a
  video stream with frames, within the frame and pixel limits); ``POST /v1/inputs`` takes a video body;
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
from pydantic_core import PydanticCustomError

from ..errors import UsageError
from ..params import field_metadata, is_input_file

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
    """The input-file fields of a params model as a tree: name -> True (a file), ``VIDEO`` (a video file, or a
    list of them) or a nested tree."""
    tree: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if is_input_file(info):
            tree[name] = VIDEO if is_video_field(info) else True
            continue
        for candidate in _models_in(info.annotation):
            nested = input_fields(candidate)
            if nested:
                tree[name] = nested
    return tree


VIDEO = "video"


def is_video_field(info: Any) -> bool:
    """Whether a params field takes a video file (``VideoPath``, a list of them, optional or not): its schema says so."""
    extras = [info.json_schema_extra] + [getattr(item, "json_schema_extra", None) for item in field_metadata(info)]
    return any(isinstance(extra, dict) and extra.get("x-codex-input") == VIDEO for extra in extras)


def video_fields(model: type[BaseModel]) -> set[str]:
    """The top-level fields of a params model that take video files."""
    return {name for name, sub in input_fields(model).items() if sub == VIDEO}


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
            if sub is True or sub == VIDEO:
                video = sub == VIDEO
                if isinstance(value, str):
                    data[name] = self._file(field, value, folder, problems, video)
                elif isinstance(value, list):  # a list of files (an edit's reference images)
                    data[name] = [self._file(f"{field}.{index}", item, folder, problems, video)
                                  if isinstance(item, str) else item for index, item in enumerate(value)]
            elif isinstance(value, list):
                data[name] = [self._walk(sub, item, folder, f"{field}.{index}.", problems)
                              for index, item in enumerate(value)]
            else:
                data[name] = self._walk(sub, value, folder, f"{field}.", problems)
        return data

    def _file(self, field: str, value: str, folder: Path, problems: list[str], video: bool = False) -> str:
        raw = _inline(value, VIDEO_MAGIC if video else IMAGE_MAGIC)
        if raw is None:
            problem = name_problem(field, value)
            if problem or not self.allowed(value):
                problems.append(problem or self._outside(field, value))
            return value
        write = self.write_video if video else self.write_image
        path = write(field, raw, folder, field.replace(".", "_"), problems)
        return str(path) if path else value[:40]

    def write_video(self, field: str, raw: bytes, folder: Path, stem: str, problems: list[str]) -> Path | None:
        """``raw`` written as ``folder/stem.<container>`` if the bundled ffmpeg finds a video in it within the
        limits (``probe_video``: frames, size) and frames within the pixel limit; else a problem, and no file."""
        from ..videos import probe_video

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (stem + video_suffix(raw))
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(raw)
        try:
            facts = probe_video(str(partial))
        except PydanticCustomError as exc:  # the probe's own words, without the temporary file's name
            problems.append(f"{field}: {exc.message().replace(repr(partial.name), 'the data')}")
            partial.unlink(missing_ok=True)
            return None
        if facts.width * facts.height > self.max_pixels:
            problems.append(f"{field}: the video's frames are {facts.width}x{facts.height} = "
                            f"{facts.width * facts.height} pixels; this service takes at most {self.max_pixels} "
                            "(--max-image-pixels)")
            partial.unlink(missing_ok=True)
            return None
        partial.replace(path)  # two uploads of the same video never leave a half-written file
        return path

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


def _inline(value: str, magic: tuple = ()) -> bytes | None:
    """The bytes of a data URL or bare base64 string; None when the value is (meant as) a path. Bare base64
    counts only when it decodes to a file of the field's kind (``magic``: images', or videos')."""
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
    return raw if raw.startswith(magic or IMAGE_MAGIC) or (magic is VIDEO_MAGIC and raw[4:8] == b"ftyp") else None


# PNG, JPEG, GIF, WebP/RIFF, BMP, TIFF: what bare base64 (A1111 clients send it) must decode to
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
# WebM/Matroska (EBML), GIF, AVI/RIFF, FLV, Ogg: what bare base64 in a video field must decode to (an MP4 or
# MOV is recognised by its "ftyp" box at offset 4)
VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3", b"GIF8", b"RIFF", b"FLV", b"OggS")


def video_suffix(raw: bytes) -> str:
    """The file suffix for a video's bytes (ffmpeg reads the content whatever the name; the suffix is for people)."""
    if raw[4:8] == b"ftyp":
        return ".mov" if raw[8:12] == b"qt  " else ".mp4"
    if raw.startswith(b"\x1a\x45\xdf\xa3"):
        return ".webm" if b"webm" in raw[:64] else ".mkv"
    if raw.startswith(b"GIF8"):
        return ".gif"
    if raw.startswith(b"RIFF") and raw[8:12] == b"AVI ":
        return ".avi"
    return ".video"
