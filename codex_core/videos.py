"""Input videos as a model needs them: frames decoded by imageio-ffmpeg's bundled ffmpeg.

A request field of type ``VideoPath`` names a video file (MP4, WebM, GIF, anything the bundled ffmpeg
reads). It is probed when the request is validated (a folder, a missing file, a file ffmpeg cannot read
and a file without frames are refused there, naming the field), and decoded when the engine asks for it
(``Job.input_video``), as 8-bit RGB PIL images.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError


def _error(message: str, **values: Any) -> PydanticCustomError:
    return PydanticCustomError("video_path", message, values)


@dataclass(frozen=True)
class VideoFacts:
    """What a video file holds, as the decoder sees it."""

    frames: int
    fps: float
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _path(value: str) -> Path:
    from .errors import UsageError
    from .paths import user_path

    try:
        path = user_path(value)
    except UsageError as exc:
        raise _error("{problem}", problem=exc.message) from None
    if path.is_dir():
        raise _error("'{path}' is a folder, not a video file", path=value)
    if not os.path.exists(path):
        raise _error("no such video file: '{path}'", path=value)
    return path


@functools.lru_cache(maxsize=64)
def _probe_cached(path: str, mtime_ns: int, size: int) -> VideoFacts:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        count = sum(1 for _ in reader)
    except (RuntimeError, OSError, StopIteration) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise _error("'{path}' is not a video ffmpeg can read ({reason})", path=path, reason=reason) from None
    if count == 0:
        raise _error("'{path}' has no video frames", path=path)
    width, height = meta["size"]
    return VideoFacts(frames=count, fps=float(meta["fps"]), width=int(width), height=int(height))


def probe_video(value: str) -> VideoFacts:
    """Frame count, fps and size of the video at ``value`` (decodes it once per file version)."""
    path = _path(value)
    stat = path.stat()
    return _probe_cached(str(path), stat.st_mtime_ns, stat.st_size)


def read_video(value: str) -> list:
    """Every frame of the video at ``value`` as an RGB PIL image."""
    import imageio_ffmpeg
    from PIL import Image

    path = _path(value)
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    size = tuple(meta["size"])
    return [Image.frombytes("RGB", size, bytes(frame)) for frame in reader]


def readable_video(value: str) -> str:
    """Validator: the video opens and has at least one frame."""
    probe_video(value)
    return value
