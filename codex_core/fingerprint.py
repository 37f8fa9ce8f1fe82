"""A cheap fingerprint of a model folder: what changed, without reading multi-GB weights.

The manifest lists every file under the folder, sorted by relative path: weight files
(``.safetensors``, ``.bin``, ...) and any other file over ``CONTENT_LIMIT`` bytes by name and size
only, every other file (configs, tokenizer files) by name, size and the
sha256 of its contents. The fingerprint is the sha256 of that manifest. Files are followed through
symlinks (Hugging Face cache snapshots), hidden files and folders are skipped. Results are cached
per folder and per (path, size, mtime) of every file, so a second run on the same model costs one
directory walk.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5", ".pkl")
CONTENT_LIMIT = 8 * 1024 * 1024  # files up to this size that are not weights are hashed by content

_cache: dict[tuple, dict[str, Any]] = {}


def _walk(root: Path) -> list[tuple[str, int, int]]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                stat = path.stat()  # follows symlinks into the hub cache's blobs
            except OSError:
                continue
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(entries)


def _by_content(relpath: str, size: int) -> bool:
    return not relpath.lower().endswith(WEIGHT_SUFFIXES) and size <= CONTENT_LIMIT


def model_fingerprint(path: Path | str) -> dict[str, Any] | None:
    """``{"sha256": ..., "files": N, "bytes": total}`` for a model folder (None if it is not a folder)."""
    root = Path(path)
    if not root.is_dir():
        return None
    entries = _walk(root)
    key = (str(root.resolve()), tuple(entries))
    if key in _cache:
        return dict(_cache[key])
    manifest = hashlib.sha256()
    for relpath, size, _mtime in entries:
        line = f"{relpath}\t{size}"
        if _by_content(relpath, size):
            line += "\t" + hashlib.sha256((root / relpath).read_bytes()).hexdigest()
        manifest.update(line.encode("utf-8") + b"\n")
    result = {"sha256": manifest.hexdigest(), "files": len(entries), "bytes": sum(e[1] for e in entries)}
    _cache[key] = result
    return dict(result)
