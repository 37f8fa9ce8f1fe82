"""The sleepy "model": a JSON file; its ``load_seconds`` make loading it slow. Pure Python and Pillow.

A request's ``sleep_in`` names the stage that sleeps ``sleep_seconds`` without a progress event
(encode, denoise: inside the first step, decode; export: the ``nap`` exporter in plugin.py), and
``crash`` makes the run raise an error or crash its process (a real segfault).

Its ``edit`` task takes up to three reference images and makes them side by side, left to right, each at its
own size: a client's test sees which images arrived, in which order, with what pixels.
"""

import ctypes
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from PIL import Image

from codex_core import EditParams, Engine, ImageOutput, Job, Txt2ImgParams


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


class SleepyEngine(Engine):
    key = "sleepy"
    family = "test"
    description = "Test-only engine: sleeps or crashes in the stage a request names"
    tasks = {"txt2img": SleepyTxt2Img, "edit": SleepyEdit}
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
        return ImageOutput([Image.new("RGB", (params.width, params.height), ((params.seed or 0) % 256, 90, 160))])


def side_by_side(paths: list[str]) -> Image.Image:
    images = [Image.open(path).convert("RGB") for path in paths]
    joined = Image.new("RGB", (sum(image.width for image in images), max(image.height for image in images)))
    left = 0
    for image in images:
        joined.paste(image, (left, 0))
        left += image.width
    return joined


def nap(params, stage: str) -> None:
    if params.sleep_in == stage:
        time.sleep(params.sleep_seconds)
