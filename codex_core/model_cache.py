"""Loaded models, kept between runs of one process, with a bound and least-recently-used eviction.

A model is loaded once per (engine, model folder, runtime) and reused by later runs, so a service
or a batch pays the load once. The cache holds at most ``max_models`` models (default 1: real
models fill a GPU) and, when ``max_bytes`` is set, at most that many bytes of weights as the
engines report them (``Engine.model_bytes``). Configure with ``CODEX_MODEL_CACHE_MODELS`` and
``CODEX_MODEL_CACHE_BYTES`` (e.g. ``24GiB``), or with ``configure()`` from Python.

A model added beyond a bound evicts the least recently used ones first (never the one just
loaded); the engine's ``unload`` then releases what it holds on the device.
"""

from __future__ import annotations

import gc
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .engine import Engine
    from .runtime import Runtime
    from .sources import ModelSource

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
         "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str, what: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in UNITS:
        raise UsageError(f"{what}: {text!r} is not a size; use e.g. 24GiB, 500MB or a number of bytes")
    return int(float(match.group(1)) * UNITS[unit])


def _count(text: str, what: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"{what}: {text!r} is not a whole number of models >= 1")
    return int(text)


@dataclass
class Entry:
    engine: "Engine"
    model: Any
    nbytes: int | None


class ModelCache:
    def __init__(self, max_models: int | None = None, max_bytes: int | None = None):
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()
        self.configure(max_models, max_bytes)

    def configure(self, max_models: int | None = None, max_bytes: int | None = None) -> None:
        """Set the bounds (None: from the environment, default one model and no byte bound)."""
        env_models = os.environ.get("CODEX_MODEL_CACHE_MODELS")
        env_bytes = os.environ.get("CODEX_MODEL_CACHE_BYTES")
        self.max_models = max_models or (_count(env_models, "CODEX_MODEL_CACHE_MODELS") if env_models else 1)
        self.max_bytes = max_bytes or (parse_bytes(env_bytes, "CODEX_MODEL_CACHE_BYTES") if env_bytes else None)
        self._evict(keep=None)

    @staticmethod
    def key(engine: "Engine", source: "ModelSource", runtime: "Runtime") -> tuple:
        return (engine.key, source.cache_key(), runtime)

    def load(self, engine: "Engine", source: "ModelSource", runtime: "Runtime") -> tuple[Any, bool]:
        """Return (model, was_cached); loads through ``engine.load`` on a miss."""
        key = self.key(engine, source, runtime)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key].model, True
        model = engine.load(source, runtime)
        self._entries[key] = Entry(engine, model, engine.model_bytes(model))
        self._evict(keep=key)
        return model, False

    def grown(self, engine: "Engine", source: "ModelSource", runtime: "Runtime") -> None:
        """A held model took on more weights while it ran (e.g. a ControlNet loaded for a request, kept with it):
        count its bytes again and evict others to stay within the bounds."""
        key = self.key(engine, source, runtime)
        if key in self._entries:
            self._entries[key].nbytes = engine.model_bytes(self._entries[key].model)
            self._evict(keep=key)

    def loaded(self, engine_key: str | None = None) -> list[Any]:
        """The models held now, least recently used first (optionally of one engine)."""
        return [entry.model for key, entry in self._entries.items() if engine_key in (None, key[0])]

    def keys(self) -> list[tuple]:
        return list(self._entries)

    def drop(self, key: tuple) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.engine.unload(entry.model)
            del entry
            gc.collect()

    def clear(self) -> None:
        for key in list(self._entries):
            self.drop(key)

    def _over(self) -> bool:
        if len(self._entries) > self.max_models:
            return True
        sizes = [entry.nbytes for entry in self._entries.values() if entry.nbytes is not None]
        return self.max_bytes is not None and sum(sizes) > self.max_bytes

    def _evict(self, keep: tuple | None) -> None:
        for key in list(self._entries):
            if not self._over():
                return
            if key != keep:
                self.drop(key)


cache = ModelCache()
