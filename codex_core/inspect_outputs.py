"""Reading back what an output says about how it was made, and saying exactly what is wrong with it.

``inspect`` returns what could be read and the problems found (a corrupt, truncated or misshapen
chunk is a problem; the other chunks are still returned). ``read_info`` is the strict form: any
problem, or nothing to read, is a UsageError (exit 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

VIDEO_SUFFIXES = (".mp4", ".webm")
# The keys a codex record must have, and their JSON types, for replay and for `codex info` to trust it.
RECORD_SHAPE = {"engine": str, "task": str, "request": dict, "model": dict}


@dataclass
class Inspected:
    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def _record_problems(record: Any, where: str) -> list[str]:
    if not isinstance(record, dict):
        return [f"{where} is a JSON {type(record).__name__}, not an object"]
    return [f"{where}: '{key}' is {type(record[key]).__name__}, not {kind.__name__}"
            for key, kind in RECORD_SHAPE.items() if key in record and not isinstance(record[key], kind)]


def _json_chunk(text: str, where: str, result: Inspected, key: str) -> None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        result.problems.append(f"{where} is not valid JSON ({exc.msg} at character {exc.pos}; truncated or corrupt)")
        return
    problems = _record_problems(record, where)
    if problems:
        result.problems += problems
    else:
        result.data[key] = record


def _png(path: Path) -> Inspected:
    from PIL import Image, UnidentifiedImageError

    from .exporters.png import CODEX_KEY, PARAMETERS_KEY

    try:
        with Image.open(path) as image:
            image.load()  # reads up to the end: a truncated file fails here, chunks after the image are read
            text = dict(getattr(image, "text", {}) or {})
            kind = image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable PNG image ({exc})") from None
    if kind != "PNG":
        raise UsageError(f"{path}: is a {kind} image, not a PNG; codex records its runs in PNG files")
    result = Inspected({})
    if PARAMETERS_KEY in text:
        result.data["parameters"] = text[PARAMETERS_KEY]
    if CODEX_KEY in text:
        _json_chunk(text[CODEX_KEY], f"{path}: its '{CODEX_KEY}' text chunk", result, "codex")
    if not result.data and not result.problems:
        result.problems.append(f"{path}: no codex or A1111 parameters embedded in this PNG")
    return result


def _video(path: Path) -> Inspected:
    from .exporters.video import read_video_comment

    comment = read_video_comment(path)  # UsageError when ffmpeg cannot read the file
    result = Inspected({})
    if comment is None:
        result.problems.append(f"{path}: no codex metadata in this video's comment tag")
    else:
        _json_chunk(comment, f"{path}: its comment tag", result, "codex")
    return result


def _info_json(path: Path) -> Inspected:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; "
                         "truncated or corrupt)") from None
    return Inspected(record if isinstance(record, dict) else {}, _record_problems(record, str(path)))


def inspect(path: Path) -> Inspected:
    path = Path(path)
    if path.is_dir():
        path = path / "info.json"
        if not path.is_file():
            raise UsageError(f"{path.parent}: no info.json in this folder; is it a codex run folder?")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _png(path)
    if suffix in VIDEO_SUFFIXES:
        return _video(path)
    if suffix == ".json":
        return _info_json(path)
    raise UsageError(f"{path}: unsupported file; expected a .png, .mp4, .webm, an info.json or a run folder")


def read_info(path: Path) -> dict[str, Any]:
    """What ``path`` records; any problem is a UsageError naming it."""
    result = inspect(path)
    if result.problems:
        raise UsageError("; ".join(result.problems))
    return result.data
