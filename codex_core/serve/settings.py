"""The service's settings: `codex serve`'s options as ``create_app`` takes them (``app.state.settings``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..runtime import Runtime
from .limits import Limits
from .webhooks import ATTEMPTS
from .worker import CANCEL_GRACE, STOP_GRACE

PREVIEW_EVERY = 2  # steps between previews by default: on a real model a step costs far more than a preview


@dataclass
class Settings:
    state_dir: Path
    token: str | None = None
    input_roots: list[Path] = field(default_factory=list)
    max_body_bytes: int = 64 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)  # what one job may cost
    max_queue: int = 100
    devices: list[str] = field(default_factory=lambda: ["auto"])  # one worker each
    runtime: Runtime = field(default_factory=Runtime)  # how the workers run models (device: each its own)
    cancel_grace: float = CANCEL_GRACE  # seconds a cancelled job has to reach its next step, then its process is killed
    stop_grace: float = STOP_GRACE  # seconds a running job may take to finish when the service is stopped
    allowed_hosts: list[str] = field(default_factory=list)  # Host names answered besides the loopback ones
    webhook_url: str | None = None  # every job's end is POSTed there too (webhooks.py)
    webhook_secret: str | None = None  # Standard Webhooks secret; None: the state dir's own
    webhook_allow_hosts: list[str] = field(default_factory=list)  # where callbacks may go; empty: the default rules
    webhook_attempts: int = ATTEMPTS
    openai_image_model: str | None = None  # what OpenAI's image model names (gpt-image-1, dall-e-3...) run
    openai_video_model: str | None = None  # what OpenAI's video model names (sora-2...) run
    preview_every: int = PREVIEW_EVERY  # a preview of a running job's latents every this many steps (0: none)
    api_auth: tuple[tuple[str, str], ...] = ()  # --api-auth: (user, password) pairs, taken as HTTP Basic
    default_model: str | None = None  # --default-model: the A1111 layer's checkpoint at start
    # --ray: the workers are Ray actors ({"address", "kind": cuda or cpu, "world": ranks per worker}); None: processes
    ray: dict | None = None

    @property
    def outputs(self) -> Path:
        """Where jobs write their run folders, as `codex run --out` would."""
        return self.state_dir / "outputs"

    @property
    def inputs_dir(self) -> Path:
        """The images sent to the service: a folder per job, and ``uploads/`` for ``POST /v1/inputs``."""
        return self.state_dir / "inputs"
