"""What engines return, and the atomic run folder outputs are written into."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class ImageOutput:
    images: list  # PIL images


@dataclass
class AudioTrack:
    """Sound that goes with a video: float PCM in [-1, 1], shaped (channels, samples)."""

    samples: Any  # numpy float32 array (channels, samples)
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.sample_rate


@dataclass
class VideoOutput:
    frames: list  # PIL images, one per frame
    fps: float
    audio: AudioTrack | None = None  # exported with the frames unless the request says "audio": false


@dataclass
class RunFiles:
    """Files written for one run. ``final_dir`` exists only once everything is complete."""

    final_dir: Path
    staging_dir: Path
    written: list[Path] = field(default_factory=list)

    def final_path(self, staged: Path) -> Path:
        return self.final_dir / staged.relative_to(self.staging_dir)


def check_writable(out_root: Path, option: str = "--out") -> None:
    """Raise UsageError when ``out_root`` could not be created or written; nothing is left behind.

    Checked before a model loads, so that a bad output folder fails at once, not after the run. Beyond
    what the folder's mode says, a folder is made and removed where the run folder's would be: only a
    real write answers for /proc, a file system out of inodes, or root (whom ``os.access`` always allows).
    """
    from .errors import UsageError
    from .paths import user_path

    target = user_path(str(out_root), option)
    hint = f"choose a folder you can write, e.g. {option} ./outputs"
    try:
        existing = _nearest_folder(target, option)
    except OSError as exc:
        raise UsageError(f"{option}: cannot look at {str(target)!r} ({exc.strerror or exc})", hint=hint) from None
    if hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise UsageError(f"{option}: cannot write {str(target)!r}: {str(existing)!r} is on a read-only file system")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: cannot write {str(target)!r}: no permission to write in {str(existing)!r}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".codex-write-check-", dir=existing))
    except OSError as exc:
        raise UsageError(f"{option}: cannot write {str(target)!r}: making a folder in {str(existing)!r} fails "
                         f"({exc.strerror or exc})", hint=hint) from None


def _nearest_folder(target: Path, option: str) -> Path:
    """The nearest folder that exists at or above ``target`` (the run folder is made below it)."""
    from .errors import UsageError

    if target.exists() and not target.is_dir():
        raise UsageError(f"{option}: {str(target)!r} is a file, not a folder")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option}: cannot create {str(target)!r}: {str(existing)!r} is a file, not a folder")
    return existing


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (then they are delivered): for steps that must not be cut in two."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):  # Windows: nothing to hold them with
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def run_folder(out_root: Path, run_id: str) -> Iterator[RunFiles]:
    """Write into a hidden staging folder and rename it into place only when the block succeeds.

    On any exception, Ctrl-C included, the staging folder is removed: no partial output remains.
    """
    out_root.mkdir(parents=True, exist_ok=True)
    files = RunFiles(final_dir=out_root / run_id, staging_dir=out_root / f".{run_id}.partial")
    try:
        files.staging_dir.mkdir()
        yield files
        os.replace(files.staging_dir, files.final_dir)
    except BaseException:
        shutil.rmtree(files.staging_dir, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
