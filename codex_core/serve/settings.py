"""The service's settings: `codex serve`'s options as ``create_app`` takes them (``app.state.settings``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..runtime import Runtime


@dataclass
class Settings:
    state_dir: Path
    token: str | None = None
    input_roots: list[Path] = field(default_factory=list)
    max_body_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 16384 * 16384
    max_batch_size: int = 8
    max_queue: int = 100
    devices: list[str] = field(default_factory=lambda: ["auto"])  # one worker each
    runtime: Runtime = field(default_factory=Runtime)  # how the workers run models (device: each its own)
    allowed_hosts: list[str] = field(default_factory=list)  # Host names answered besides the loopback ones

    @property
    def outputs(self) -> Path:
        """Where jobs write their run folders, as `codex run --out` would."""
        return self.state_dir / "outputs"

    @property
    def inputs_dir(self) -> Path:
        """The images sent to the service: a folder per job, and ``uploads/`` for ``POST /v1/inputs``."""
        return self.state_dir / "inputs"
