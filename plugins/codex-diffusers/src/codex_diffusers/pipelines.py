"""Loading, placing, scheduling and calling diffusers pipelines (imports torch and diffusers).

Every engine goes through these few functions, so GPU details (dtype, offload, tiling) take the same
code path on CPU and GPU and only the device differs. Loaded pipelines are shared by every run of a
process and are read-only to a run: a run works on a *view* (``PipelineFamily.view``), a shallow
copy of the pipeline object that shares its modules but has its own scheduler, config and call
state, and anything a run must change in the shared modules (a LoRA) is undone exactly.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
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


def quiet_import(name: str) -> None:
    """Import ``name`` with what it writes to stderr (fd 2: print, loggers, C code) held back, and shown only
    if the import fails. For torchao, which on import reports each CUDA kernel it cannot load and a pytree
    notice: transformers imports it on every model load when it is installed (the [int8] extra), so the
    kit imports it first, quietly."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as said:
        os.dup2(said.fileno(), 2)
        try:
            importlib.import_module(name)
        except Exception:
            sys.stderr.flush()
            os.dup2(saved, 2)
            said.seek(0)
            sys.stderr.write(said.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


if importlib.util.find_spec("torchao") is not None:
    quiet_import("torchao.quantization")
    quiet_import("torchao.prototype.safetensors.safetensors_support")  # what transformers' loader imports


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
    """Weights on the device, or offloaded by diffusers' hooks as ``runtime.offload`` says (``auto`` is
    resolved by the memory plan before this); the VAE's decode mode."""
    if runtime.offload == "model":
        pipe.enable_model_cpu_offload(device=runtime.device)
    elif runtime.offload == "group":
        # one block per group, the next one prefetched on a CUDA stream while the current one computes
        pipe.enable_group_offload(onload_device=torch.device(runtime.device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1,
                                  use_stream=runtime.device.startswith("cuda"))
    elif runtime.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=runtime.device)
    else:
        pipe.to(runtime.device)
    vae = getattr(pipe, "vae", None)
    if "tiled" in runtime.vae and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if "sliced" in runtime.vae and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)


def tune_denoisers(pipe, names: tuple[str, ...], runtime: Runtime) -> dict[str, Any]:
    """``--attention`` and ``--compile`` on the denoisers; what each reached, for info.json.

    The attention backend is set on the denoiser's attention modules (``set_attention_backend``); diffusers
    also makes it the process-wide default, which is put back so that other loaded models keep theirs. A
    denoiser none of whose modules route through diffusers' dispatcher (the SD UNets' processors) cannot
    take a backend: that is an error, not a silent no-op."""
    record: dict[str, Any] = {}
    denoisers = {name: getattr(pipe, name) for name in names if getattr(pipe, name, None) is not None}
    if runtime.attention != "default":
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        from codex_core import UsageError

        reached = {}
        before = _AttentionBackendRegistry.get_active_backend()[0]
        try:
            for name, module in denoisers.items():
                if not hasattr(module, "set_attention_backend"):
                    continue
                try:
                    module.set_attention_backend(runtime.attention)
                except (RuntimeError, ValueError, ImportError) as exc:
                    raise UsageError(f"--attention {runtime.attention}: {str(exc).splitlines()[0][:300]}",
                                     hint="pick a backend this machine has, e.g. native") from None
                reached[name] = sum(1 for sub in module.modules()
                                    if getattr(getattr(sub, "processor", None), "_attention_backend", None) is not None)
        finally:
            _AttentionBackendRegistry.set_active_backend(before)
        if not any(reached.values()):
            raise UsageError(f"--attention {runtime.attention}: the {', '.join(denoisers)} of this model does not "
                             "route attention through diffusers' backends (only the transformer models do)",
                             hint="drop --attention for this engine")
        record["attention"] = {"backend": runtime.attention, "attention_modules": reached}
    if runtime.compile != "off":
        compiled = {}
        for name, module in denoisers.items():
            regional = runtime.compile == "regional" and getattr(module, "_repeated_blocks", None)
            if regional:
                module.compile_repeated_blocks(backend=runtime.compile_backend)
                compiled[name] = {"how": "regional", "blocks": list(module._repeated_blocks)}
            else:
                module.compile(backend=runtime.compile_backend)
                compiled[name] = {"how": "full"}
        record["compile"] = {"mode": runtime.compile, "backend": runtime.compile_backend, "modules": compiled}
    return record


def modules_of(pipe) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}


def store_weights(pipe, names: tuple[str, ...], runtime: Runtime) -> tuple[str, ...]:
    """``--weights fp8``: the named modules (the denoisers) stored in float8, each layer cast up to the run's
    dtype as it computes (diffusers' layerwise casting; norms and embeddings stay as they are). The names done."""
    from .run_options import WEIGHTS

    storage = WEIGHTS[runtime.weights]
    if storage is None:
        return ()
    if storage == "int8":
        return quantize_int8(pipe, names)
    done = []
    for name in names:
        module = getattr(pipe, name, None)
        if module is not None and hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=getattr(torch, storage), compute_dtype=torch_dtype(runtime))
            done.append(name)
    return tuple(done)


def quantize_int8(pipe, names: tuple[str, ...]) -> tuple[str, ...]:
    """``--weights int8``: the named modules' Linear weights quantised to int8 by torchao (weight-only,
    per channel; activations stay in the run's dtype). torchao is optional: codex-diffusers[int8]."""
    quiet_import("torchao.quantization")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    done = []
    for name in names:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            quantize_(module, Int8WeightOnlyConfig())
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

    def for_class(self, pipeline_cls, **components):
        """The family's pipeline of ``pipeline_cls``, derived once. ``components``: modules the base lacks that
        the class needs to be built (a ControlNet): used to build it, then cleared from the cached pipeline, which
        keeps no reference to them (a run sets its own on its view)."""
        if pipeline_cls not in self._by_class:
            # from_pipe casts every module, the shared ones included, to one dtype (fp32 unless told):
            # modules loaded in another dtype (e.g. a float32 VAE) are put back.
            kept = {name: module.dtype for name, module in modules_of(self.base).items()
                    if hasattr(module, "dtype") and name not in self.cast}
            pipe = pipeline_cls.from_pipe(self.base, dtype=torch_dtype(self.runtime), **components)
            for name, dtype in kept.items():
                module = getattr(pipe, name, None)
                if isinstance(module, torch.nn.Module) and module.dtype != dtype:
                    module.to(dtype=dtype)
            if self.runtime.offload != "none":
                place(pipe, self.runtime)
            pipe.set_progress_bar_config(disable=True)
            for name in components:
                setattr(pipe, name, None)
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
    """``Class.from_config(checkpoint config, **flags)``: the checkpoint's own class when no sampler is chosen.
    An argument the flags leave out takes the checkpoint config's value named by ``choice.config_flags``."""
    if choice is None:
        return type(current).from_config(checkpoint_config)
    inherited = {argument: checkpoint_config[key] for argument, key in choice.config_flags.items()
                 if key in checkpoint_config}
    return getattr(diffusers, choice.scheduler_class).from_config(checkpoint_config, **inherited, **choice.flags)


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


def generators(job: Job) -> torch.Generator | list[torch.Generator]:
    """The run's noise: a generator per image of a batch from ``job.seeds`` (diffusers draws image i's
    latents and sampler noise from generator i, so image i equals a one-image run with seed + i), else
    one generator of ``job.seed`` for the whole call."""
    if job.seeds is not None and len(job.seeds) > 1:
        return [generator(seed) for seed in job.seeds]
    return generator(job.seed)


def accepted_arguments(pipe) -> set[str]:
    return set(inspect.signature(type(pipe).__call__).parameters) - {"self"}


def argument_default(pipe, name: str) -> Any:
    """The default of a ``__call__`` argument (None when it has none)."""
    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _wrap_timed(obj, name: str, job: Job, stage: str, timer: str, announce: str | None = None) -> None:
    """Time ``obj.name`` under ``timer`` and announce progress ``stage`` on its first call."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        if timer not in job.timer.seconds:
            job.progress.stage(stage, announce)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            job.timer.add(timer, time.perf_counter() - start)

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
            job.progress.stage("denoise")
            total = _total_steps(pipe, 0)
            if total:  # the bar appears as the first step starts, at 0 of N
                job.progress.step(0, total)

    def each_return(*_):
        span[1:] = [time.perf_counter()]

    handles = [handle for model in models
               for handle in (model.register_forward_pre_hook(first_call), model.register_forward_hook(each_return))]
    _wrap_timed(pipe, text_encoder, job, "encode", "text_encode")
    _wrap_timed(decoder_obj, decoder[1], job, "decode", "decode", announce="decoding latents with the VAE")
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


def step_callbacks(pipe, job: Job, previewer=None) -> dict[str, Any]:
    """The step callback arguments the pipeline takes: they drive the progress bar, count steps, make the
    previews (``previewer``, previews.py) and stop the run early when it is asked to (``stop_early``).

    Most pipelines take ``callback_on_step_end``; some older ones only ``callback``/``callback_steps``.
    """
    def after_step(pipe, step_index, latents):
        done = job.steps_done = step_index + 1
        total = _total_steps(pipe, done)
        job.progress.step(done, total)
        if done < total and _stop_asked(job) and _stop_early(pipe, job, done, total):
            return
        if previewer is not None and latents is not None and job.progress.preview_due(done, total):
            with job.timer.stage("preview"):  # within the denoise span: info.timings says what previews cost
                made = previewer(latents)
            if made:
                job.progress.preview(done, total, *made)

    def on_step_end(pipe, step_index, timestep, callback_kwargs):
        after_step(pipe, step_index, callback_kwargs.get("latents"))
        return callback_kwargs

    def on_step(step_index, timestep, latents):
        after_step(pipe, step_index, latents)

    accepted = accepted_arguments(pipe)
    if "callback_on_step_end" in accepted:
        return {"callback_on_step_end": on_step_end}
    if "callback" in accepted:
        return {"callback": on_step, "callback_steps": 1}
    return {}


def _stop_asked(job: Job) -> bool:
    """Whether the run was asked to stop early; the ranks of a --parallel run agree on it, step by step."""
    asked = job.progress.stop_requested()
    if getattr(job.runtime, "parallel", "off") == "off":
        return asked
    from .parallel_ranks import agreed_stop

    return agreed_stop(job, asked)


def _stop_early(pipe, job: Job, done: int, total: int) -> bool:
    """Skip the remaining steps and decode the latents as they are: diffusers' own interrupt flag, which its
    pipelines check at the top of each step (``if self.interrupt: continue``). A pipeline without one (Stable
    Video Diffusion's) runs to the end, and says so once."""
    if job.stopped_early:
        return True
    if not isinstance(getattr(type(pipe), "interrupt", None), property):
        if "cannot_stop_early" not in job.notes:
            job.notes["cannot_stop_early"] = f"{type(pipe).__name__} has no interrupt; it ran all its steps"
            job.progress.message(f"asked to stop early at step {done}, but {job.notes['cannot_stop_early']}")
        return False
    pipe._interrupt = True
    job.stopped_early = (done, total)
    job.progress.message(f"stopping early at step {done} of {total}: decoding the latents as they are")
    return True


def call(pipe, job: Job, denoisers: tuple[str, ...] = ("unet",), encoder: str = "encode_prompt", previewer=None,
         **kwargs):
    """Run one pipeline call with timing, progress (and its previews) and the job's seeds (``generators``).

    ``encoder`` names the pipeline method that encodes the conditioning (``_encode_image`` for an
    image-conditioned model).
    """
    kwargs.setdefault("generator", generators(job))
    with measured(pipe, job, text_encoder=encoder, denoisers=denoisers), torch.inference_mode():
        return pipe(**step_callbacks(pipe, job, previewer), **kwargs)
