"""Loading, placing, scheduling and calling diffusers pipelines (imports torch and diffusers).

Every engine goes through these few functions, so GPU details (dtype, offload, tiling) take the same
code path on CPU and GPU and only the device differs. Loaded pipelines are shared by every run of a
process and are read-only to a run: a run works on a *view* (``PipelineFamily.view``), a shallow
copy of the pipeline object that shares its modules but has its own scheduler, config and call
state, and anything a run must change in the shared modules (a LoRA) is undone exactly.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import diffusers
import torch
import transformers

from codex_core import Job, ModelNotFoundError, Runtime, SchedulerChoice

from .devices import torch_dtype

# Our own progress bar covers the denoising loop; library bars for weight loading are noise.
diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()
if not os.environ.get("CODEX_DEBUG"):
    # e.g. from_pipe's "modules that should be kept in float32: []" on every task switch
    diffusers.utils.logging.set_verbosity_error()


def pipeline_class(name: str) -> type:
    """A diffusers pipeline class by name (engines name them so that declaring one imports nothing)."""
    return getattr(diffusers, name)


def load_pipeline(pipeline_cls, folder: Path, label: str, runtime: Runtime,
                  component_dtypes: dict[str, str] | None = None, **overrides) -> Any:
    """``from_pretrained`` on a local folder: safetensors only unless --allow-pickle, never remote code.

    ``component_dtypes`` keeps some components in another dtype than the runtime's, e.g.
    ``{"vae": "float32"}`` for a VAE that decodes better in full precision.
    """
    dtype = torch_dtype(runtime)
    if component_dtypes:
        dtype = {"default": dtype, **{name: getattr(torch, value) for name, value in component_dtypes.items()}}
    try:
        pipe = pipeline_cls.from_pretrained(
            str(folder),
            dtype=dtype,
            use_safetensors=None if runtime.allow_pickle else True,
            local_files_only=True,
            **overrides,
        )
    except (OSError, EnvironmentError) as exc:
        if not runtime.allow_pickle and "safetensors" in str(exc):
            raise ModelNotFoundError(
                f"{label}: no .safetensors weights found ({exc})",
                hint="pickle-based weights (.bin/.ckpt) load only with --allow-pickle; use it only for files you trust",
            ) from None
        raise
    place(pipe, runtime)
    return pipe


def place(pipe, runtime: Runtime) -> None:
    if runtime.offload == "model":
        pipe.enable_model_cpu_offload(device=runtime.device)
    elif runtime.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=runtime.device)
    else:
        pipe.to(runtime.device)
    if runtime.vae_tiling and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)


def modules_of(pipe) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}


def store_weights(pipe, names: tuple[str, ...], runtime: Runtime) -> tuple[str, ...]:
    """``--weights fp8``: the named modules (the denoisers) stored in float8, each layer cast up to the run's
    dtype as it computes (diffusers' layerwise casting; norms and embeddings stay as they are). The names done."""
    from codex_core.runtime import WEIGHTS

    storage = WEIGHTS[runtime.weights]
    if storage is None:
        return ()
    done = []
    for name in names:
        module = getattr(pipe, name, None)
        if module is not None and hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=getattr(torch, storage), compute_dtype=torch_dtype(runtime))
            done.append(name)
    return tuple(done)


class PipelineFamily:
    """A base pipeline plus task pipelines derived from it with ``from_pipe`` (components shared)."""

    def __init__(self, base, runtime: Runtime, cast: tuple[str, ...] = ()):
        self.base = base
        self.runtime = runtime
        self.cast = cast  # modules stored in float8 (store_weights): their dtype is their hooks' to keep
        # Every run builds its scheduler from the checkpoint's own config, never from the last run's.
        self.scheduler_config = dict(base.scheduler.config)
        self._by_class: dict[type, Any] = {type(base): base}

    def for_class(self, pipeline_cls):
        if pipeline_cls not in self._by_class:
            # from_pipe casts every module, the shared ones included, to one dtype (fp32 unless told):
            # modules loaded in another dtype (e.g. a float32 VAE) are put back.
            kept = {name: module.dtype for name, module in modules_of(self.base).items()
                    if hasattr(module, "dtype") and name not in self.cast}
            pipe = pipeline_cls.from_pipe(self.base, dtype=torch_dtype(self.runtime))
            for name, dtype in kept.items():
                module = getattr(pipe, name, None)
                if isinstance(module, torch.nn.Module) and module.dtype != dtype:
                    module.to(dtype=dtype)
            if self.runtime.offload != "none":
                place(pipe, self.runtime)
            pipe.set_progress_bar_config(disable=True)
            self._by_class[pipeline_cls] = pipe
        return self._by_class[pipeline_cls]

    def view(self, pipeline_cls, choice: SchedulerChoice | None, job: Job | None = None):
        """A per-run view of the task's pipeline with a fresh scheduler.

        A shallow copy shares the modules (no weights are copied) but has its own attributes: the
        scheduler set here, ``register_to_config`` calls (which replace the view's config dict, not
        the cached one) and the call state a pipeline keeps on itself (guidance scale, timesteps).
        Nothing a run does to its view reaches the cached pipeline or the next run.
        """
        view = copy.copy(self.for_class(pipeline_cls))
        view.scheduler = build_scheduler(view.scheduler, choice, self.scheduler_config)
        if job is not None:
            job.scheduler_applied = scheduler_record(view.scheduler)
        return view

    def nbytes(self) -> int:
        tensors = [t for module in modules_of(self.base).values() for t in (*module.parameters(), *module.buffers())]
        return sum(t.numel() * t.element_size() for t in tensors)


def build_scheduler(current, choice: SchedulerChoice | None, checkpoint_config: dict):
    """``Class.from_config(checkpoint config, **flags)``: the checkpoint's own class when no sampler is chosen."""
    if choice is None:
        return type(current).from_config(checkpoint_config)
    return getattr(diffusers, choice.scheduler_class).from_config(checkpoint_config, **choice.flags)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # e.g. lambda_min_clipped = -inf: "-inf", so that info.json stays strict JSON
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return _json_safe(value.tolist())
    return str(value)


def scheduler_record(scheduler) -> dict[str, Any]:
    """``{"class": ..., "config": ...}`` of a scheduler, JSON-safe, for info.json."""
    return {"class": type(scheduler).__name__, "config": _json_safe(dict(scheduler.config))}


def generator(seed: int) -> torch.Generator:
    """Noise is drawn on the CPU so a seed gives the same starting noise on every device."""
    return torch.Generator("cpu").manual_seed(seed)


def accepted_arguments(pipe) -> set[str]:
    return set(inspect.signature(type(pipe).__call__).parameters) - {"self"}


def argument_default(pipe, name: str) -> Any:
    """The default of a ``__call__`` argument (None when it has none)."""
    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _wrap_timed(obj, name: str, job: Job, stage: str, announce: str | None = None) -> None:
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        if announce and stage not in job.timer.seconds:
            job.progress.close()  # the denoising bar is done
            job.progress.message(announce)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            job.timer.add(stage, time.perf_counter() - start)

    object.__setattr__(obj, name, timed)


@contextmanager
def measured(pipe, job: Job, text_encoder: str = "encode_prompt", decoder: tuple[str, str] = ("vae", "decode"),
             denoisers: tuple[str, ...] = ("unet",)) -> Iterator[None]:
    """Time text encoding, denoising and decoding of one pipeline call without changing it.

    Text encoding and decoding are timed by wrapping the pipeline's own methods for the duration of
    the call; denoising is the span from the first forward of any denoiser (several for
    mixture-of-experts models) to the last return.
    """
    decoder_obj = getattr(pipe, decoder[0])
    models = [model for model in (getattr(pipe, name, None) for name in denoisers) if model is not None]
    span: list[float] = []

    def first_call(*_):
        if not span:
            span.append(time.perf_counter())
            total = _total_steps(pipe, 0)
            if total:  # the bar appears as the first step starts, at 0 of N
                job.progress.step(0, total)

    def each_return(*_):
        span[1:] = [time.perf_counter()]

    handles = [handle for model in models
               for handle in (model.register_forward_pre_hook(first_call), model.register_forward_hook(each_return))]
    _wrap_timed(pipe, text_encoder, job, "text_encode")
    _wrap_timed(decoder_obj, decoder[1], job, "decode", announce="decoding latents with the VAE")
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for obj, name in ((pipe, text_encoder), (decoder_obj, decoder[1])):
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass
        if len(span) == 2:
            job.timer.add("denoise", span[1] - span[0])


def _total_steps(pipe, done: int) -> int:
    total = getattr(pipe, "num_timesteps", None)
    if not total:  # pipelines that do not record it: the scheduler's schedule for this call
        timesteps = getattr(pipe.scheduler, "timesteps", None)
        total = len(timesteps) if timesteps is not None else 0
    return total or done


def step_callbacks(pipe, job: Job) -> dict[str, Any]:
    """The step callback arguments the pipeline takes: they drive the progress bar and count steps.

    Most pipelines take ``callback_on_step_end``; some older ones only ``callback``/``callback_steps``.
    """
    def on_step_end(pipe, step_index, timestep, callback_kwargs):
        job.steps_done = step_index + 1
        job.progress.step(step_index + 1, _total_steps(pipe, job.steps_done))
        return callback_kwargs

    def on_step(step_index, timestep, latents):
        job.steps_done = step_index + 1
        job.progress.step(step_index + 1, _total_steps(pipe, job.steps_done))

    accepted = accepted_arguments(pipe)
    if "callback_on_step_end" in accepted:
        return {"callback_on_step_end": on_step_end}
    if "callback" in accepted:
        return {"callback": on_step, "callback_steps": 1}
    return {}


def call(pipe, job: Job, denoisers: tuple[str, ...] = ("unet",), encoder: str = "encode_prompt", **kwargs):
    """Run one pipeline call with timing, progress and the job's seed.

    ``encoder`` names the pipeline method that encodes the conditioning (``_encode_image`` for an
    image-conditioned model).
    """
    kwargs.setdefault("generator", generator(job.seed))
    with measured(pipe, job, text_encoder=encoder, denoisers=denoisers), torch.inference_mode():
        return pipe(**step_callbacks(pipe, job), **kwargs)
