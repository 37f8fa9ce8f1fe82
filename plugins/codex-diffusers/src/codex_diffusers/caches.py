"""Step caches for the DiT engines: the request's ``cache`` field, through diffusers' cache hooks.

A step cache reuses work from earlier denoising steps instead of computing every transformer block
at every step. Each type is one of diffusers' hooks (``CacheMixin.enable_cache``), applied to the
run's denoisers for that run only and removed after it (``disable_cache``), so the cached pipeline
is unchanged for the next run. The settings are validated here, before anything loads; the defaults
are the hooks' own documented ones (the methods' papers' values).

- ``first_block``: First Block Cache (ParaAttention): when the first block's residual changed less
  than ``threshold`` since the last full step, the other blocks are skipped.
- ``taylorseer``: TaylorSeer (arXiv 2503.06923): attention outputs predicted by a Taylor series
  between full steps every ``cache_interval`` steps.
- ``magcache``: MagCache: blocks skipped while the accumulated magnitude-ratio error stays under
  ``threshold``; the ratios are the checkpoint's (``mag_ratios``; FLUX.1 has them built in), or run
  once with ``calibrate: true`` to measure them.
- ``pab``: Pyramid Attention Broadcast (arXiv 2408.12588): attention states reused for
  ``*_block_skip_range`` steps within a timestep range.

FasterCache is left out: it fails on these models in diffusers 0.42.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Any, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# The attention modules of the DiT blocks (Flux "transformer_blocks.0.attn", Wan "blocks.0.attn1", LTX
# "transformer_blocks.0.attn2", ...): TaylorSeer's own default patterns miss the numbered ones (attn1/attn2)
ATTENTION_MODULES = r"^(blocks|transformer_blocks|single_transformer_blocks|temporal_transformer_blocks)\.\d+\.attn\d*$"


class _Cache(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"})


class FirstBlockCache(_Cache):
    """First Block Cache: skip the other blocks while the first block's output barely changes."""

    type: Literal["first_block"]
    threshold: float = Field(0.05, gt=0.0, le=1.0, description="Relative change of the first block's residual "
                                                                "under which the other blocks are skipped (higher: "
                                                                "faster, further from the uncached result).")

    def config(self, context: dict[str, Any]):
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.threshold)


class TaylorSeerCache(_Cache):
    """TaylorSeer: predict attention outputs from a Taylor series between full steps."""

    type: Literal["taylorseer"]
    cache_interval: int = Field(5, ge=1, le=100, description="A full step every this many steps; the ones between "
                                                             "are predicted.")
    disable_cache_before_step: int = Field(3, ge=0, le=1000, description="Steps computed in full at the start.")
    disable_cache_after_step: int | None = Field(None, ge=1, le=1000, description="Steps computed in full from this "
                                                                                  "one on (none: to the end).")
    max_order: int = Field(1, ge=0, le=4, description="Order of the Taylor series.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.disable_cache_after_step is not None and self.disable_cache_after_step <= self.disable_cache_before_step:
            raise PydanticCustomError("cache_steps", "cache.disable_cache_after_step ({after}) must be greater than "
                                      "cache.disable_cache_before_step ({before})",
                                      {"after": self.disable_cache_after_step, "before": self.disable_cache_before_step})
        return self

    def config(self, context: dict[str, Any]):
        import torch
        from diffusers import TaylorSeerCacheConfig

        # the Taylor factors in the transformer's own dtype: bf16 factors would not match an fp32 model
        return TaylorSeerCacheConfig(cache_interval=self.cache_interval,
                                     disable_cache_before_step=self.disable_cache_before_step,
                                     disable_cache_after_step=self.disable_cache_after_step,
                                     max_order=self.max_order, cache_identifiers=[ATTENTION_MODULES],
                                     taylor_factors_dtype=context.get("dtype", torch.float32))


class MagCache(_Cache):
    """MagCache: skip blocks while the accumulated magnitude-ratio error stays small."""

    type: Literal["magcache"]
    threshold: float = Field(0.06, gt=0.0, le=1.0, description="Accumulated error under which blocks are skipped.")
    max_skip_steps: int = Field(3, ge=1, le=100, description="Most steps skipped in a row.")
    retention_ratio: float = Field(0.2, ge=0.0, lt=1.0, description="Share of the first steps never skipped.")
    mag_ratios: list[float] | None = Field(None, min_length=2, max_length=1000,
                                           description="The checkpoint's magnitude ratios, one per step of the run "
                                                       "they were measured on (interpolated to this run's steps); "
                                                       "none: the engine's built-in ones, if it has them.")
    calibrate: bool = Field(False, description="Measure the ratios instead of skipping (logged at the end).")

    def config(self, context: dict[str, Any]):
        from diffusers import MagCacheConfig

        ratios = self.mag_ratios if self.mag_ratios is not None else context.get("mag_ratios")
        return MagCacheConfig(threshold=self.threshold, max_skip_steps=self.max_skip_steps,
                              retention_ratio=self.retention_ratio, num_inference_steps=context["steps"],
                              mag_ratios=None if self.calibrate else ratios, calibrate=self.calibrate)


class PyramidAttentionBroadcast(_Cache):
    """Pyramid Attention Broadcast: reuse attention states over a range of timesteps."""

    type: Literal["pab"]
    spatial_attention_block_skip_range: int | None = Field(2, ge=2, le=100, description="Reuse spatial attention "
                                                                                       "for this many steps.")
    temporal_attention_block_skip_range: int | None = Field(None, ge=2, le=100)
    cross_attention_block_skip_range: int | None = Field(None, ge=2, le=100)
    timestep_skip_range: list[int] = Field([100, 800], min_length=2, max_length=2,
                                           description="[low, high]: attention is reused only at timesteps in this "
                                                       "range (of the scheduler's 0-1000).")

    @model_validator(mode="after")
    def _something_to_skip(self):
        low, high = self.timestep_skip_range
        if not 0 <= low < high <= 1000:
            raise PydanticCustomError("cache_range", "cache.timestep_skip_range: got {value}; give [low, high] with "
                                      "0 <= low < high <= 1000", {"value": self.timestep_skip_range})
        if not (self.spatial_attention_block_skip_range or self.temporal_attention_block_skip_range
                or self.cross_attention_block_skip_range):
            raise PydanticCustomError("cache_skip", "cache: set at least one of spatial_attention_block_skip_range, "
                                      "temporal_attention_block_skip_range, cross_attention_block_skip_range", {})
        return self

    def config(self, context: dict[str, Any]):
        from diffusers import PyramidAttentionBroadcastConfig

        span = tuple(self.timestep_skip_range)
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=self.spatial_attention_block_skip_range,
            temporal_attention_block_skip_range=self.temporal_attention_block_skip_range,
            cross_attention_block_skip_range=self.cross_attention_block_skip_range,
            spatial_attention_timestep_skip_range=span, temporal_attention_timestep_skip_range=span,
            cross_attention_timestep_skip_range=span, current_timestep_callback=context["timestep"])


StepCache = Annotated[Union[FirstBlockCache, TaylorSeerCache, MagCache, PyramidAttentionBroadcast],
                      Field(discriminator="type")]


class CacheFields(BaseModel):
    """The ``cache`` request field (DiT engines): a step cache for this run."""

    model_config = ConfigDict(strict=True, extra="forbid")

    cache: StepCache | None = Field(None, description="A step cache for this run: {\"type\": \"first_block\" | "
                                                      "\"taylorseer\" | \"magcache\" | \"pab\", ...its settings}; "
                                                      "none: every step computed in full.")


def cache_problem(engine, task: str, params) -> str | None:
    """Why the request's step cache cannot run, before anything loads: a denoiser class without diffusers' cache
    hooks, or a MagCache without ratios for an engine that has none built in."""
    cache = getattr(params, "cache", None)
    if cache is None:
        return None
    lacking = uncacheable_denoisers(engine, task)
    if lacking:
        verb = "takes" if len(lacking) == 1 else "take"
        return (f"cache: engine {engine.key}'s {' and '.join(lacking)} {verb} no step cache (diffusers' cache "
                "hooks, CacheMixin); leave cache out")
    if isinstance(cache, MagCache) and cache.mag_ratios is None and not cache.calibrate and engine.mag_ratios is None:
        return (f"cache.mag_ratios: engine {engine.key} has no built-in MagCache ratios; give the checkpoint's (a "
                "list, one per step), or run once with \"calibrate\": true to measure them")
    return None


def uncacheable_denoisers(engine, task: str) -> list[str]:
    """The task pipeline's denoisers whose class (from the pipeline's own type hints, no checkpoint needed) is not a
    diffusers ``CacheMixin``: ``enable_cache`` would fail on them after loading. Imports diffusers."""
    import typing

    from diffusers.models.cache_utils import CacheMixin

    from .pipelines import pipeline_class

    hints = typing.get_type_hints(pipeline_class(engine.pipelines[task]).__init__)
    lacking = []
    for name in engine.denoisers:
        classes = [c for c in (typing.get_args(hints.get(name)) or (hints.get(name),)) if isinstance(c, type)
                   and c is not type(None)]
        if classes and not any(issubclass(c, CacheMixin) for c in classes):
            lacking.append(f"{name} ({classes[0].__name__})")
    return lacking


@contextmanager
def step_cache(engine, pipe, job) -> Iterator[None]:
    """The request's step cache on the run's denoisers (``engine.denoisers``) for the run, removed after it."""
    cache = getattr(job.params, "cache", None)
    if cache is None:
        yield
        return
    import torch

    names = [name for name in engine.denoisers if getattr(pipe, name, None) is not None]
    modules = [getattr(pipe, name) for name in names]
    context = {"steps": job.params.steps, "mag_ratios": _built_in_ratios(engine),
               "timestep": lambda: pipe.current_timestep,
               # the compute dtype: parameters stored in float8 (--weights fp8) are cast up as they run
               "dtype": next((p.dtype for p in modules[0].parameters() if p.dtype.itemsize >= 2), torch.float32)
               if modules else torch.float32}
    job.notes["cache"] = {"type": cache.type, **cache.settings(), "on": names, "removed_after_run": False}
    enabled = []
    try:
        for module in modules:
            module.enable_cache(cache.config(context))  # a config each: the hooks keep per-module state
            enabled.append(module)
        yield
    finally:
        for module in enabled:
            module.disable_cache()
        job.notes["cache"]["removed_after_run"] = True


def _built_in_ratios(engine) -> list[float] | None:
    """The engine's ``mag_ratios``: a list, or "module:name" of one (imported only when a run needs it)."""
    ratios = engine.mag_ratios
    if isinstance(ratios, str):
        import importlib

        module, _, name = ratios.partition(":")
        ratios = getattr(importlib.import_module(module), name)
    return [float(value) for value in ratios] if ratios is not None else None
