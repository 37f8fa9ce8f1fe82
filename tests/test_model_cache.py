"""The model cache: one load per model and runtime, bounded by count or bytes, least recently used out first."""

from __future__ import annotations

import pytest

from codex_core import Engine, Runtime, Txt2ImgParams, UsageError
from codex_core.model_cache import ModelCache, parse_bytes
from codex_core.sources import ModelSource


class CountingEngine(Engine):
    """Loads a "model" of a declared size and records what it loads and unloads."""

    key = "counting"
    tasks = {"txt2img": Txt2ImgParams}

    def __init__(self, sizes=None):
        self.sizes = sizes or {}
        self.loads, self.unloads = [], []

    def load(self, source, runtime):
        self.loads.append(source.label)
        return {"name": source.label}

    def model_bytes(self, model):
        return self.sizes.get(model["name"])

    def unload(self, model):
        self.unloads.append(model["name"])


def source(name: str) -> ModelSource:
    return ModelSource("folder", f"/models/{name}", name)


CPU = Runtime("cpu", "float32")


def test_a_model_loads_once_per_runtime_and_is_reused():
    engine, cache = CountingEngine(), ModelCache(max_models=2)
    first, cached = cache.load(engine, source("a"), CPU)
    again, cached_again = cache.load(engine, source("a"), CPU)
    assert (cached, cached_again) == (False, True) and again is first and engine.loads == ["a"]
    cache.load(engine, source("a"), Runtime("cpu", "bfloat16"))  # another runtime is another load
    assert engine.loads == ["a", "a"]


def test_the_least_recently_used_model_is_evicted_and_unloaded():
    engine, cache = CountingEngine(), ModelCache(max_models=2)
    for name in ("a", "b"):
        cache.load(engine, source(name), CPU)
    cache.load(engine, source("a"), CPU)  # a is now the most recently used
    cache.load(engine, source("c"), CPU)
    assert engine.unloads == ["b"] and [m["name"] for m in cache.loaded()] == ["a", "c"]


def test_the_byte_bound_evicts_until_the_models_fit_but_keeps_the_new_one():
    engine = CountingEngine({"a": 6, "b": 3, "c": 5, "huge": 100})
    cache = ModelCache(max_models=10, max_bytes=10)
    for name in ("a", "b"):
        cache.load(engine, source(name), CPU)
    cache.load(engine, source("c"), CPU)  # 6 + 3 + 5 > 10: a goes
    assert [m["name"] for m in cache.loaded()] == ["b", "c"]
    cache.load(engine, source("huge"), CPU)  # alone over the bound: everything else goes, it stays
    assert [m["name"] for m in cache.loaded()] == ["huge"] and engine.unloads == ["a", "b", "c"]


def test_default_is_one_model_and_the_environment_configures_it(monkeypatch):
    assert ModelCache().max_models == 1
    monkeypatch.setenv("CODEX_MODEL_CACHE_MODELS", "3")
    monkeypatch.setenv("CODEX_MODEL_CACHE_BYTES", "1.5GiB")
    cache = ModelCache()
    assert (cache.max_models, cache.max_bytes) == (3, int(1.5 * 2**30))
    monkeypatch.setenv("CODEX_MODEL_CACHE_MODELS", "zero")
    with pytest.raises(UsageError, match="CODEX_MODEL_CACHE_MODELS: 'zero' is not a whole number"):
        ModelCache()


@pytest.mark.parametrize("text, value", [("24GiB", 24 * 2**30), ("500MB", 500 * 10**6), ("1024", 1024),
                                         ("2 g", 2 * 10**9)])
def test_sizes_parse(text, value):
    assert parse_bytes(text, "x") == value


def test_a_bad_size_names_the_setting():
    with pytest.raises(UsageError, match="CODEX_MODEL_CACHE_BYTES: '12 bananas' is not a size"):
        parse_bytes("12 bananas", "CODEX_MODEL_CACHE_BYTES")
