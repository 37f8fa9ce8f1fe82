"""The walk over the models folders: each real folder once, only regular files, within a time budget.

A models folder is whatever people put there, so the walk assumes nothing of it:

- links are followed (A1111 and ComfyUI installs are often linked together), but each real folder is
  entered once per kind (by device and inode), so a link back up the tree, or two, ends nowhere;
- a weight file is listed only when it is a regular file; a FIFO, a device (a ``.safetensors`` link to
  ``/dev/zero``), a socket or a broken link is skipped with the reason, never opened;
- a folder that cannot be read is skipped with the reason;
- the walk stops when its time budget runs out (``$CODEX_SCAN_SECONDS``, default 10): the folders not
  scanned, or scanned in part, are skipped with that reason.

``survey`` returns what was found and what was skipped; ``codex_core.model_files`` names and lists them.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import UsageError
from .safetensors_header import not_regular

SAFE_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
SCAN_SECONDS = "CODEX_SCAN_SECONDS"
DEFAULT_SCAN_SECONDS = 10.0


@dataclass(frozen=True)
class ModelFile:
    kind: str
    path: Path
    name: str  # path under its kind folder, without the weight suffix
    format: str  # "safetensors", "gguf", "pickle", or a model folder's format (its engines': e.g. "diffusers")
    bytes: int

    @property
    def stem(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Skipped:
    """A weight file or folder the walk did not list, and why. ``name`` is None for a folder not (fully) scanned."""

    kind: str
    path: Path
    name: str | None
    format: str | None
    reason: str
    out_of_time: bool = False  # not (fully) scanned: the time budget ran out


@dataclass
class Survey:
    """What a walk over the models folders found, and what it skipped."""

    seconds: float  # the time budget
    files: list[ModelFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    timed_out: bool = False


def scan_seconds() -> float:
    """The walk's time budget: ``$CODEX_SCAN_SECONDS`` (seconds, > 0), else 10."""
    text = os.environ.get(SCAN_SECONDS, "").strip()
    if not text:
        return DEFAULT_SCAN_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{SCAN_SECONDS}: {text[:40]!r} is not a number of seconds above 0",
                         hint=f"e.g. {SCAN_SECONDS}=30, or unset it for {DEFAULT_SCAN_SECONDS:g}")
    return seconds


def folder_formats() -> tuple[tuple[str, str], ...]:
    """(marker file, format) pairs: a folder holding a marker file is one model (a whole model or a component),
    in that format. The installed engines declare them (``Engine.folder_markers``, ``Engine.folder_format``)."""
    from .plugins import contribution
    from .registry import engines

    def collect() -> tuple[tuple[str, str], ...]:
        pairs: dict[str, str] = {}
        for engine in engines().values():
            for marker in engine.folder_markers:
                pairs.setdefault(marker, engine.folder_format)
        return tuple(pairs.items())

    return contribution("folder_formats", collect)


def file_format(path: Path) -> str | None:
    """A weight file's format from its suffix (None: not a weight file)."""
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return suffix[1:]
    return "pickle" if suffix in PICKLE_SUFFIXES else None


def folder_format(path: Path) -> str | None:
    """A model folder's format, from the marker file in it (None: a folder of files, not one model)."""
    return next((fmt for marker, fmt in folder_formats() if (path / marker).is_file()), None)


def folder_bytes(folder: Path) -> int:
    """The size of the regular files under ``folder`` (rglob enters no linked folder: no loop)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def survey(kind_folders: Iterable[tuple[str, list[Path]]], seconds: float | None = None) -> Survey:
    """Walk each kind's folders in order; stop when ``seconds`` (default ``scan_seconds()``) have passed."""
    found = Survey(scan_seconds() if seconds is None else seconds)
    deadline = time.monotonic() + found.seconds
    for kind, folders in kind_folders:
        walk = _Walk(found, kind, deadline)
        for folder in folders:
            try:
                if not folder.is_dir():
                    continue
            except OSError as exc:  # e.g. no permission to look: said, not raised
                found.skipped.append(Skipped(kind, folder, None, None, f"not scanned: {exc.strerror}"))
                continue
            if found.timed_out:
                found.skipped.append(Skipped(kind, folder, None, None, _not_scanned(found, "not scanned"), True))
            else:
                walk.folder(folder)
    return found


def _not_scanned(found: Survey, what: str) -> str:
    return f"{what}: the scan's time budget of {found.seconds:g} s ran out ({SCAN_SECONDS} raises it)"


class _Walk:
    """One kind's walk: its folders in order, depth first, names sorted, each real folder entered once."""

    def __init__(self, found: Survey, kind: str, deadline: float):
        self.found, self.kind, self.deadline = found, kind, deadline
        self.entered: set[tuple[int, int]] = set()  # (st_dev, st_ino) of each folder entered
        self.listed: set[Path] = set()  # resolved paths listed: a file reached by two names is listed once

    def folder(self, top: Path) -> None:
        pending = [top]
        while pending:
            if time.monotonic() > self.deadline:
                self.found.timed_out = True
                reason = _not_scanned(self.found, "not scanned" if pending == [top] else "scanned in part")
                self.found.skipped.append(Skipped(self.kind, top, None, None, reason, True))
                return
            here = pending.pop()
            subfolders = self._enter(top, here)
            pending.extend(reversed(subfolders))

    def _enter(self, top: Path, here: Path) -> list[Path]:
        """List the models in ``here``; its subfolders to walk next (those not entered before)."""
        try:
            status = os.stat(here)
            if (status.st_dev, status.st_ino) in self.entered:
                return []
            self.entered.add((status.st_dev, status.st_ino))
            with os.scandir(here) as listing:
                entries = sorted((entry for entry in listing if not entry.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            self.found.skipped.append(Skipped(self.kind, here, None, None, f"not scanned: {exc.strerror}"))
            return []
        subfolders, files = [], []
        for entry in entries:
            (subfolders if _is_dir(entry) else files).append(Path(entry.path))
        walk_into = []
        for path in subfolders:  # a model folder is one model, not a tree to walk
            fmt = folder_format(path)
            if fmt is None:
                walk_into.append(path)
            else:
                self._list(top, path, fmt, folder_bytes(path), folder=True)
        for path in files:
            self._file(top, path)
        return walk_into

    def _file(self, top: Path, path: Path) -> None:
        fmt = file_format(path)
        if fmt is None:
            return  # not a weight file: never looked at
        try:
            status = os.stat(path)
        except OSError as exc:
            why = ("a link that leads back to itself" if exc.errno == errno.ELOOP else
                   "a broken link" if path.is_symlink() else exc.strerror)
            self._skip(top, path, fmt, f"skipped: {why}")
            return
        kind = not_regular(status.st_mode)
        if kind is not None:
            self._skip(top, path, fmt, f"skipped: {kind}, not a regular file (never opened)")
            return
        self._list(top, path, fmt, status.st_size)

    def _list(self, top: Path, path: Path, fmt: str, size: int, folder: bool = False) -> None:
        real = path.resolve()
        if real not in self.listed:
            self.listed.add(real)
            self.found.files.append(ModelFile(self.kind, path, _name(top, path, folder), fmt, size))

    def _skip(self, top: Path, path: Path, fmt: str, reason: str) -> None:
        self.found.skipped.append(Skipped(self.kind, path, _name(top, path, False), fmt, reason))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # links followed
    except OSError:
        return False


def _name(top: Path, path: Path, folder: bool) -> str:
    """A model's name: its path under its kind folder, a file's without the weight suffix."""
    relative = path.relative_to(top).as_posix()
    return relative if folder else relative[: -len(path.suffix)]
