"""The sleepy "model": a JSON file; its ``load_seconds`` make loading it slow. Pure Python and Pillow.

A request's ``sleep_in`` names the stage that sleeps ``sleep_seconds`` without a progress event
(encode, denoise: inside the first step, decode; export: the ``nap`` exporter in plugin.py), and
``crash`` makes the run raise an error or crash its process (a real segfault).

Its ``edit`` task takes up to three reference images and makes them side by side, left to right, each at its
own size: a client's test sees which images arrived, in which order, with what pixels.

Its ``vid2vid`` task takes a video (``init_video``, 4k+1 frames as Wan's VAE wants) and an optional mask video of
the same length and size, and gives the video's frames back as ``Job.input_video`` decoded them (at the
request's ``video_fps`` when it gives one), inverted where the mask is white: a test sees which video arrived,
with what frames and pixels.
"""

import ctypes
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from PIL import Image, ImageChops

from codex_core import (EditParams, Engine, ImageOutput, Job, ParamsBase, Txt2ImgParams, VideoOutput, VideoPath,
                        VideoResampleFields, check_matching_videos, check_video_frames)


class _Sleepy(BaseModel):
    """What makes a run sleep or crash, in every task's request."""

    model_config = ConfigDict(strict=True, extra="forbid")  # as the core's params: a mixin must not loosen them

    sleep_in: Literal["none", "encode", "denoise", "decode", "export"] = "none"
    sleep_seconds: float = Field(0.0, ge=0, le=3600)
    step_seconds: float = Field(0.0, ge=0, le=60, description="A pause after each step (with its progress event).")
    crash: Literal["none", "raise", "segfault"] = "none"


class SleepyTxt2Img(_Sleepy, Txt2ImgParams):
    size_multiple = 1


class SleepyEdit(_Sleepy, EditParams):
    size_multiple = 1
    max_images = 3


class SleepyVid2Vid(_Sleepy, VideoResampleFields, ParamsBase):
    output_kind = "video"

    init_video: VideoPath
    mask_video: VideoPath | None = None
    num_frames: int | None = Field(None, ge=1, le=1024, description="The video's frames, when given: checked "
                                                                     "against the input's (after video_fps).")
    steps: int = Field(2, ge=1, le=50)

    @model_validator(mode="after")
    def _videos(self):
        check_matching_videos(self, "init_video", "mask_video")
        check_video_frames(self, "init_video", frames=self.num_frames, frame_multiple=None if self.num_frames else 4)
        return self


class SleepyEngine(Engine):
    key = "sleepy"
    family = "test"
    description = "Test-only engine: sleeps or crashes in the stage a request names"
    tasks = {"txt2img": SleepyTxt2Img, "edit": SleepyEdit, "vid2vid": SleepyVid2Vid}
    model_marker = "sleepy.json"
    tiny_version = "1"

    def build_tiny(self, dest: Path) -> None:
        dest.mkdir(parents=True)
        (dest / self.model_marker).write_text(json.dumps({"load_seconds": 0}), encoding="utf-8")

    def load(self, source, runtime) -> dict:
        model = json.loads((source.path / self.model_marker).read_text(encoding="utf-8"))
        time.sleep(model.get("load_seconds", 0))
        return model

    def run(self, model: dict, job: Job) -> ImageOutput:
        params = job.params
        job.progress.stage("encode")
        nap(params, "encode")
        job.progress.stage("denoise")
        job.progress.step(0, params.steps)
        nap(params, "denoise")
        if params.crash == "raise":
            raise RuntimeError("the sleepy engine failed on purpose")
        if params.crash == "segfault":
            ctypes.string_at(0)  # reads address 0: the process dies of SIGSEGV, as a broken native library would
        for k in range(1, params.steps + 1):
            time.sleep(params.step_seconds)
            job.progress.step(k, params.steps)
            job.steps_done = k
        job.progress.stage("decode")
        nap(params, "decode")
        if job.task == "edit":
            return ImageOutput([side_by_side(params.images)])
        if job.task == "vid2vid":
            from codex_core import probe_input_video

            return VideoOutput(masked_inverse(job), params.video_fps or probe_input_video(params.init_video).fps)
        return ImageOutput([Image.new("RGB", (params.width, params.height), ((params.seed or 0) % 256, 90, 160))])


def side_by_side(paths: list[str]) -> Image.Image:
    images = [Image.open(path).convert("RGB") for path in paths]
    joined = Image.new("RGB", (sum(image.width for image in images), max(image.height for image in images)))
    left = 0
    for image in images:
        joined.paste(image, (left, 0))
        left += image.width
    return joined


def masked_inverse(job: Job) -> list[Image.Image]:
    """The input video's frames, inverted where the mask video (if any) is white."""
    frames = job.input_video("init_video")
    if job.params.mask_video is None:
        return frames
    masks = job.input_video("mask_video", mode="L")
    return [Image.composite(ImageChops.invert(frame), frame, mask) for frame, mask in zip(frames, masks)]


def nap(params, stage: str) -> None:
    if params.sleep_in == stage:
        time.sleep(params.sleep_seconds)
