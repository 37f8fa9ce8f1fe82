"""Reading back what an output says about how it was made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsageError


def read_info(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "info.json"
        if not path.is_file():
            raise UsageError(f"{path.parent}: no info.json in this folder; is it a codex run folder?")
    if path.suffix.lower() == ".png":
        from .exporters.png import read_png_metadata

        data = read_png_metadata(path)
        if not data:
            raise UsageError(f"{path}: no codex or A1111 parameters embedded in this PNG")
        return data
    if path.suffix.lower() in (".mp4", ".webm"):
        from .exporters.video import read_video_metadata

        data = read_video_metadata(path)
        if not data:
            raise UsageError(f"{path}: no codex metadata in this video's comment tag")
        return data
    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc.msg})") from None
    raise UsageError(f"{path}: unsupported file; expected a .png, .mp4, .webm, an info.json or a run folder")
