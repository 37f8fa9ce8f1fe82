"""Input videos as a model needs them: frames decoded by imageio-ffmpeg's bundled ffmpeg.

A request field of type ``VideoPath`` names a video file (MP4, WebM, GIF, anything the bundled ffmpeg
reads). It is probed when the request is validated, naming the field on any problem: a folder, a
missing file, a file ffmpeg cannot read, a file without a video stream or without frames, and a video
over ``MAX_VIDEO_FRAMES`` frames or ``MAX_VIDEO_SIZE`` pixels a side. The probe copies the stream's
packets to nowhere (``-c copy``): it counts frames without decoding them, so a video is decoded once,
when the engine asks for it (``Job.input_video``), as 8-bit RGB PIL images.

Rules an engine's params apply to their video fields, before anything loads:

- ``check_matching_videos(params, "init_video", "mask_video")``: a mask video of another frame count
  or size than its video is an error naming both (never a silent fix);
- ``check_video_frames(params, "init_video", frames=..., frame_multiple=...)``: the frame count the
  engine will get (after the request's ``video_fps`` resampling, if it asks for one) against the task's.

Frames are resampled to another rate only when the request says so (``video_fps``: ``VideoResampleFields``)
and resized only when the engine passes a size; ``Job.input_video`` records either in ``info.notes``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

# Frames of an input video (the longest output a video task takes, VideoFields.num_frames, is 1024): the probe
# stops counting past it, so a two-hour file is refused as fast as a short one is probed.
MAX_VIDEO_FRAMES = 1024
MAX_VIDEO_SIZE = 16384  # width or height of an input video (as MAX_SIZE for images)


def _error(message: str, **values: Any) -> PydanticCustomError:
    return PydanticCustomError("video_path", message, values)


@dataclass(frozen=True)
class VideoFacts:
    """What a video file holds, as the decoder sees it (the size with the file's rotation applied)."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


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
    if not os.access(path, os.R_OK):
        raise _error("'{path}' cannot be read (permission denied)", path=value)
    return path


_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: Video: (?P<codec>[^\s,]+)(?P<rest>.*)$", re.M)
_SIZE = re.compile(r"[ ,](\d{1,6})x(\d{1,6})[ ,\[]")
_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?k?) (fps|tbr)")
_ROTATION = re.compile(r"rotation of (-?[0-9.]+) degrees")
_FRAMES = re.compile(r"frame=\s*(\d+)")


def _rate(rest: str) -> float:
    """The stream's frame rate: its ``fps`` (the average), else its ``tbr`` (the guessed base rate)."""
    found = dict((kind, value) for value, kind in _RATE.findall(rest))
    value = found.get("fps") or found.get("tbr") or "0"
    return float(value[:-1]) * 1000 if value.endswith("k") else float(value)


def _reason(text: str) -> str:
    """The line of ffmpeg's output that says why it failed (its last lines are a summary of the same)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Invalid data" in line or "matches no streams" in line or "No such file" in line:
            return re.sub(r"^\[[^\]]+\]\s*", "", line)
    return re.sub(r"^\[[^\]]+\]\s*", "", lines[-1]) if lines else "ffmpeg said nothing"


@functools.lru_cache(maxsize=64)
def _probe_cached(path: str, mtime_ns: int, size: int) -> VideoFacts:
    """One ffmpeg call: its header gives the first video stream's codec, size, rate and rotation, and copying
    that stream's packets to the null muxer counts its frames without decoding them."""
    import imageio_ffmpeg

    shown = os.path.basename(path)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path, "-map", "0:v:0",
               "-c", "copy", "-frames:v", str(MAX_VIDEO_FRAMES + 1), "-f", "null", "-"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise _error("'{path}': ffmpeg took over 120 s to read it", path=shown) from None
    text = done.stderr.decode("utf-8", "replace")
    stream = _STREAM.search(text)
    if done.returncode != 0 or stream is None:
        if "Input #0" in text and stream is None:  # ffmpeg read the container: it holds no video (an audio file)
            raise _error("'{path}' has no video stream (no frames to read)", path=shown)
        raise _error("'{path}' is not a video ffmpeg can read ({reason})", path=shown, reason=_reason(text))
    counted = _FRAMES.findall(text)
    frames = int(counted[-1]) if counted else 0
    if frames == 0:
        raise _error("'{path}' has no video frames", path=shown)
    if frames > MAX_VIDEO_FRAMES:
        raise _error("'{path}' has more than {limit} frames, the most a video input may have; trim it first",
                     path=shown, limit=MAX_VIDEO_FRAMES)
    found = _SIZE.search(stream["rest"] + " ")
    if found is None:
        raise _error("'{path}': ffmpeg gives no frame size for its video stream", path=shown)
    width, height = int(found[1]), int(found[2])
    rotation = _ROTATION.search(text)
    if rotation and round(abs(float(rotation[1]))) % 180 == 90:  # ffmpeg turns the frames upright when decoding
        width, height = height, width
    if max(width, height) > MAX_VIDEO_SIZE:
        raise _error("'{path}' is {width}x{height}; a video input is at most {limit} pixels a side",
                     path=shown, width=width, height=height, limit=MAX_VIDEO_SIZE)
    return VideoFacts(frames=frames, fps=_rate(stream["rest"]), width=width, height=height, codec=stream["codec"])


def probe_video(value: str) -> VideoFacts:
    """Frame count, fps and size of the video at ``value`` (probed once per file version: path, mtime, size)."""
    path = _path(value)
    stat = path.stat()
    return _probe_cached(os.path.realpath(path), stat.st_mtime_ns, stat.st_size)


def read_video(value: str) -> list:
    """Every frame of the video at ``value`` as an RGB PIL image, one per frame the file holds (no frame is
    repeated or dropped to make a constant rate: ``-fps_mode passthrough``)."""
    import imageio_ffmpeg
    from PIL import Image

    path = _path(value)
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    meta = next(reader)
    size = tuple(meta["size"])
    return [Image.frombytes("RGB", size, bytes(frame)) for frame in reader]


def readable_video(value: str) -> str:
    """Validator: the video opens, has a video stream with at least one frame, and is within the limits."""
    probe_video(value)
    return value


# --- the request's rules -------------------------------------------------------------------------


def resampled_indices(frames: int, fps: float, target_fps: float) -> list[int]:
    """The source frames a video of ``frames`` frames at ``fps`` shows at ``target_fps``: for each output time
    k / target_fps within the video's duration, the frame on screen then (the last one starting at or before it)."""
    if not fps or math.isclose(fps, target_fps):
        return list(range(frames))
    count = max(1, math.ceil(frames * target_fps / fps - 1e-9))  # the times k / target_fps before the end
    return [min(frames - 1, math.floor(k * fps / target_fps + 1e-9)) for k in range(count)]


def _field_value(params: Any, field: str) -> str | None:
    value = getattr(params, field, None)
    return value if isinstance(value, str) else None


def check_matching_videos(params: Any, video: str, mask: str) -> None:
    """A mask video has its video's frame count and size: else a validation error naming both fields (call it
    from the params' ``model_validator(mode="after")``; a field left out is not compared)."""
    first, second = _field_value(params, video), _field_value(params, mask)
    if first is None or second is None:
        return
    a, b = probe_video(first), probe_video(second)
    if a.frames != b.frames:
        raise PydanticCustomError(
            "video_mismatch", "{mask}: has {mask_frames} frames but {video} has {video_frames}; a mask video "
            "needs one frame per frame of its video", {"mask": mask, "video": video, "mask_frames": b.frames,
                                                         "video_frames": a.frames})
    if a.size != b.size:
        raise PydanticCustomError(
            "video_mismatch", "{mask}: its frames are {mask_size} but {video}'s are {video_size}; give both "
            "the same size", {"mask": mask, "video": video, "mask_size": "x".join(map(str, b.size)),
                              "video_size": "x".join(map(str, a.size))})


def input_frame_count(params: Any, field: str) -> int:
    """The frames the engine gets from video field ``field``: the file's, or, when the request asks for a
    ``video_fps``, as many as that rate shows over the video's duration."""
    facts = probe_video(getattr(params, field))
    target = getattr(params, "video_fps", None)
    return len(resampled_indices(facts.frames, facts.fps, target)) if target else facts.frames


def check_video_frames(params: Any, field: str, frames: int | None = None, frame_multiple: int | None = None,
                       frames_field: str = "num_frames") -> int:
    """The frame count the engine will get from ``field`` (``input_frame_count``), checked against the task's
    rules: exactly ``frames`` (the request's ``frames_field``) when given, else ``frame_multiple``k+1 when
    given. A validation error naming the field says what to change."""
    value = _field_value(params, field)
    if value is None:
        return 0
    facts = probe_video(value)
    count = input_frame_count(params, field)
    resampled = getattr(params, "video_fps", None)
    source = f"{count} frames at {resampled:g} fps (resampled from {facts.frames} at {facts.fps:g})" if resampled \
        else f"{count} frames ({facts.fps:g} fps)"
    if frames is not None and count != frames:
        raise PydanticCustomError(
            "video_frames", "{field}: gives {source} but {frames_field} is {frames}; set {frames_field} to {count}, "
            "or give a video of {frames} frames{resample}",
            {"field": field, "source": source, "frames_field": frames_field, "frames": frames, "count": count,
             "resample": "" if resampled else " (or resample it with video_fps)"})
    if frames is None and frame_multiple and frame_multiple > 1 and count % frame_multiple != 1:
        low = (count - 1) // frame_multiple * frame_multiple + 1
        raise PydanticCustomError(
            "video_frames", "{field}: gives {source}; this model takes {stride}k+1 frames ({nearest}): trim the "
            "video{resample}", {"field": field, "source": source, "stride": frame_multiple,
                                "nearest": f"{low} or {low + frame_multiple}",
                                "resample": "" if resampled else " or resample it with video_fps"})
    return count
