"""The contract an engine implements: build a tiny model, load a model, run one task.

Engine modules import torch; the core imports them only when a run needs them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engines import EngineSpec
from .metrics import StageTimes
from .outputs import ImageOutput, VideoOutput
from .params import ParamsBase
from .progress import Progress
from .runtime import Runtime
from .samplers import SchedulerChoice
from .sources import ModelSource


@dataclass
class Job:
    """Everything one run needs, already validated and resolved."""

    task: str
    params: ParamsBase
    seed: int
    scheduler: SchedulerChoice | None
    runtime: Runtime
    progress: Progress
    timer: StageTimes
    steps_done: int = 0
    # Facts the engine wants in info.json (e.g. that the init image was resized).
    notes: dict[str, Any] = field(default_factory=dict)
    # The scheduler that ran: {"class": name, "config": its full config as applied} (JSON-safe).
    scheduler_applied: dict[str, Any] | None = None

    def input_image(self, name: str, size: tuple[int, int], mode: str = "RGB"):
        """The image of request field ``name`` at ``size`` (Lanczos resize, recorded in ``notes.resized``)."""
        from PIL import Image

        with Image.open(Path(getattr(self.params, name)).expanduser()) as opened:
            image = opened.convert(mode)
        if image.size == tuple(size):
            return image
        self.notes.setdefault("resized", {})[name] = {"from": list(image.size), "to": list(size), "resample": "lanczos"}
        return image.resize(tuple(size), Image.Resampling.LANCZOS)


class Engine:
    """Base class for engines (``EngineSpec.tiny_version`` says whether ``build_tiny`` exists)."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec

    # -- to implement ---------------------------------------------------------------------------
    def build_tiny(self, dest: Path) -> None:
        """Write a tiny randomly initialised model of the real architecture into ``dest``."""
        raise NotImplementedError

    def load(self, source: ModelSource, runtime: Runtime) -> Any:
        """Load the model once; the result is cached per (model, runtime) and passed to ``run``."""
        raise NotImplementedError

    def run(self, model: Any, job: Job) -> ImageOutput | VideoOutput:
        raise NotImplementedError

    # -- provided ---------------------------------------------------------------------------------
    def ensure_tiny(self, dest: Path, progress: Progress) -> None:
        """Build the tiny model once, atomically (a half-built folder is never left in the cache)."""
        if dest.is_dir():
            return
        progress.message(f"building the tiny {self.spec.key} test model in {dest} (random weights, once)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            self.build_tiny(staging)
            os.replace(staging, dest)
        except OSError:
            if not dest.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
