"""Loaded models, kept for the life of the process: one load per (engine, model, runtime)."""

from __future__ import annotations

from typing import Any

from .engine_api import Engine
from .runtime import Runtime
from .sources import ModelSource

_loaded: dict[tuple, Any] = {}


def load_cached(engine: Engine, source: ModelSource, runtime: Runtime) -> tuple[Any, bool]:
    """Return (model, was_cached)."""
    key = (engine.spec.key, str(source.path), runtime)
    if key in _loaded:
        return _loaded[key], True
    model = engine.load(source, runtime)
    _loaded[key] = model
    return model, False


def clear() -> None:
    _loaded.clear()
