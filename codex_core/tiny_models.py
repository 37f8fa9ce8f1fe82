"""The tiny test models' cache: each built once by its engine's ``build_tiny``, atomically, and known by what built it.

A tiny model is cached under ``<cache>/tiny/<engine>-<tiny_version>/`` with a stamp beside it
(``<engine>-<tiny_version>.json``): the engine's key and class and a digest of the code of the
packages its class comes from (the engine's own and its kit's, not the core's). When the stamp no
longer matches (the builder or anything it calls was edited, or another engine's model sits under
this key), the model is built again, and the message says why. An engine that recognises its
checkpoints also checks the folder it built: a builder that makes another architecture is an error
that says so, not a library error at load time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CodexError
from .progress import Progress

if TYPE_CHECKING:
    from .engine import Engine


@lru_cache(maxsize=None)
def package_digest(package: str) -> str:
    """sha256 of every .py file of an imported package (relative path and content), or of a lone module."""
    module = sys.modules.get(package)
    file = getattr(module, "__file__", None)
    if not file:
        return "unknown"
    root = Path(file).parent if Path(file).name == "__init__.py" else Path(file)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
        digest.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stamp(engine: "Engine") -> dict[str, Any]:
    """What builds the engine's tiny model: its key, class, tiny_version and the digest of its packages' code."""
    packages = dict.fromkeys(cls.__module__.split(".")[0] for cls in type(engine).__mro__)
    packages.pop("builtins", None)
    packages.pop(__name__.split(".")[0], None)  # the core's code builds no model
    code = hashlib.sha256("".join(f"{name}:{package_digest(name)};" for name in sorted(packages)).encode())
    return {"engine": engine.key, "class": f"{type(engine).__module__}.{type(engine).__qualname__}",
            "tiny_version": engine.tiny_version, "code": code.hexdigest()}


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(f"{dest.name}.json")


def _stale(engine: "Engine", dest: Path, expected: dict[str, Any]) -> str | None:
    """Why the cached tiny model is not the one the engine builds now; None when it is."""
    try:
        recorded = json.loads(_stamp_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no record of what built it"
    if recorded.get("class") != expected["class"]:
        return f"it was built by {recorded.get('class')}, not {expected['class']}"
    if recorded != expected:
        return "the code that builds it changed since"
    return None


def ensure(engine: "Engine", dest: Path, progress: Progress) -> None:
    """The engine's tiny model at ``dest``: built when missing or stale, atomically (never half a folder)."""
    expected = stamp(engine)
    reason = _stale(engine, dest, expected) if dest.is_dir() else None
    if dest.is_dir() and reason is None:
        return
    what = f"building the tiny {engine.key} test model in {dest} (random weights, once)"
    progress.message(f"{what}: the cached one is stale ({reason})" if reason else what)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    retired = dest.with_name(f".{dest.name}.{os.getpid()}.old")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        engine.build_tiny(staging)
        problem = engine.checkpoint_problem(staging) if engine.recognises_checkpoints else None
        if problem:
            raise CodexError(f"engine {engine.key}: its build_tiny makes a model its own checks refuse: {problem}",
                             hint="make build_tiny build this engine's architecture (the tiny model is a random-weight "
                                  "copy of the real one, loaded through the engine's own loader)")
        if reason is not None and dest.is_dir():  # ours replaces the stale one
            os.replace(dest, retired)
        try:
            os.replace(staging, dest)
        except OSError:
            if not dest.is_dir():
                raise
            return  # another process put its build in place first: that one is used (it writes the stamp)
        _stamp_path(dest).write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
