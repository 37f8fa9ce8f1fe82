"""Output writers, registered by format name through ``codex_register_exporters``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..outputs import ImageOutput, RunFiles, VideoOutput

WriteFn = Callable[[ImageOutput | VideoOutput, RunFiles, dict[str, Any]], list[Path]]


@dataclass(frozen=True)
class Exporter:
    format: str
    kind: str  # "image" or "video": which outputs it writes
    write: WriteFn  # writes into files.staging_dir, returns the staged paths
    description: str = ""
    # Returns why the exporter cannot work on this machine (checked before anything loads), or None.
    unavailable: Callable[[], str | None] | None = None
