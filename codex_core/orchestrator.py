"""The one place that knows the whole order: validate, resolve, load, run, export, report.

``prepare`` never imports torch and never touches the disk beyond reading presets and checking
input images: every usage error surfaces there, before anything loads or is written.
"""

from __future__ import annotations

import os
import platform
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from . import presets, registry, sources
from .engines import EngineSpec
from .errors import ParamError, UsageError
from .metrics import StageTimes, peak_device_memory_mb, peak_host_rss_mb, reset_device_peak
from .outputs import new_run_id, run_folder, write_json
from .params import MAX_SEED, MODES, ParamsBase, validate
from .progress import Progress
from .runtime import Runtime
from .samplers import SchedulerChoice, resolve as resolve_sampler

DEFAULT_OUT = {"image": Path("artifacts/images"), "video": Path("artifacts/videos")}
DEFAULT_FORMATS = {"image": ("png",), "video": ("mp4",)}


@dataclass
class RunOptions:
    model: str | None = None
    out: Path | None = None
    runtime: Runtime = field(default_factory=Runtime)
    download: bool = False
    formats: tuple[str, ...] | None = None
    quiet: bool = False
    preset: str | None = None  # a named preset profile: presets/<engine>/<task>@<preset>.yaml
    # set by `codex replay`: {"run_id", "path", "model_fingerprint"} of the run being replayed
    replay_of: dict[str, Any] | None = None


@dataclass
class Prepared:
    spec: EngineSpec
    task: str
    request_in: dict[str, Any]
    preset_fill: presets.PresetFill
    params: ParamsBase
    scheduler: SchedulerChoice | None
    mode_requested: str
    mode_ignored_reason: str | None
    seed_source: str
    formats: tuple[str, ...]
    source: sources.ModelSource | None = None  # resolved early only when presets depend on the checkpoint
    variant: str | None = None


@dataclass
class Result:
    run_dir: Path
    files: list[Path]
    info: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "files": [str(f) for f in self.files], "info": self.info}


def prepare(engine: str, task: str, request: Any, options: RunOptions | None = None) -> Prepared:
    options = options or RunOptions()
    if not isinstance(request, dict):
        raise UsageError(f"the request must be a JSON object of field: value, got {type(request).__name__}")
    spec = registry.get_engine(engine)
    if task not in spec.tasks:
        raise UsageError(f"engine {engine!r} has no task {task!r}; its tasks: {', '.join(spec.tasks)}")
    source = variant = None
    if spec.variants:  # variant presets: find the checkpoint first (reads configs, loads nothing)
        source = _resolve_source(spec, task, options)
        variant = sources.variant_of(spec, source)
    # Speed mode: decided before presets fill, so a mode that will be ignored gets the normal presets.
    mode_requested, mode_ignored_reason, source = _mode_support(spec, task, request, source, options)
    fill = presets.fill(spec, task, {**request, "mode": "normal"} if mode_ignored_reason else request,
                        variant, options.preset)
    if mode_ignored_reason:  # validated as asked; it runs as normal (below)
        fill.request["mode"] = request["mode"]
    params = validate(spec.params_model(task), fill.request, engine, task)
    if spec.check_request:
        problems = spec.check_request(task, params, variant)
        if problems:
            raise ParamError(problems, engine, task,
                             hint=f"`codex presets {engine}` shows the settings of each variant" if variant else None)

    scheduler = None
    if not spec.sampler_family:  # nothing would honour a sampler: say so rather than ignore it
        chosen = [name for name in ("sampler", "scheduler") if getattr(params, name, None) is not None]
        if chosen:
            raise ParamError([f"{name}: got {getattr(params, name)!r}: engine {engine} has no sampler choice; "
                              "leave it out" for name in chosen], engine, task)
    elif "sampler" in type(params).model_fields:
        samplers, schedules = registry.samplers_for(spec)
        scheduler = resolve_sampler(spec.sampler_family, params.sampler, params.scheduler, params.model_dump(),
                                    engine, task, samplers, schedules)

    updates: dict[str, Any] = {}
    if mode_ignored_reason and getattr(params, "mode_lora", None) is not None:
        updates["mode_lora"] = None  # the LoRA was for the mode that does not run
    if scheduler is not None:  # the effective request names what ran, e.g. "DPM++ 2M Karras" -> sampler + schedule
        updates.update(sampler=scheduler.sampler, scheduler=scheduler.schedule)
    if "mode" in type(params).model_fields:
        updates["mode"] = "normal" if mode_ignored_reason else mode_requested
    seed_source = "request"
    if "seed" in type(params).model_fields and params.seed is None:
        updates["seed"] = secrets.randbelow(MAX_SEED + 1)
        seed_source = "random"
    params = params.model_copy(update=updates)

    kind = spec.output_kind(task)
    formats = tuple(options.formats or DEFAULT_FORMATS[kind])
    available = registry.exporters()
    for name in formats:
        exporter = available.get(name)
        if exporter is None or exporter.kind != kind:
            allowed = ", ".join(n for n, e in available.items() if e.kind == kind)
            raise UsageError(f"--format: {name!r} is not an output format for {kind}s; allowed: {allowed}")
        problem = exporter.unavailable() if exporter.unavailable else None
        if problem:
            others = [n for n, e in available.items() if e.kind == kind and not e.unavailable]
            raise UsageError(f"--format {name}: {problem}",
                             hint=f"fix that, or choose a format that needs nothing more: {', '.join(others)}")
    return Prepared(spec, task, request, fill, params, scheduler, mode_requested, mode_ignored_reason,
                    seed_source, formats, source, variant)


def _mode_support(spec: EngineSpec, task: str, request: dict[str, Any], source, options: RunOptions):
    """(mode requested, why it is ignored or None, source): torch-free, before presets fill.

    A mode the engine does not honour is ignored. One it honours runs when the request brings an
    accelerator LoRA (``mode_lora``) or the checkpoint supports it by itself, which the engine's
    ``detect_modes`` reads from the checkpoint's configs (the source is resolved early for that).
    """
    mode = request.get("mode", "normal")
    if mode == "normal" or mode not in MODES:  # an unknown value is the validator's to report
        return mode, None, source
    if mode not in spec.modes:
        return mode, (f"mode {mode!r} is not supported by engine {spec.key}: {spec.unsupported_reason(mode)} "
                      f"(it honours: {', '.join(spec.modes)}); ran in normal mode with the normal presets"), source
    if request.get("mode_lora") is not None or spec.detect_modes is None:
        return mode, None, source
    source = source or _resolve_source(spec, task, options)
    if mode in spec.detect_modes(source.path):
        return mode, None, source
    hint = spec.mode_hints.get(mode)
    return mode, (f"mode {mode!r} is not supported by the checkpoint {source.label}; ran in normal mode with the "
                  f"normal presets" + (f". To enable it: {hint}" if hint else "")), source


def _resolve_source(spec: EngineSpec, task: str, options: RunOptions) -> sources.ModelSource:
    if not options.download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network unless asked
    return sources.resolve(spec, options.model, task=task, download=options.download,
                           allow_pickle=options.runtime.allow_pickle)


def execute(prepared: Prepared, options: RunOptions) -> Result:
    started = time.perf_counter()
    spec, task, params = prepared.spec, prepared.task, prepared.params
    timer = StageTimes()
    progress = Progress(enabled=not options.quiet, label=f"{spec.key} {task}")
    if prepared.mode_ignored_reason:
        print(f"codex: warning: {prepared.mode_ignored_reason}", file=sys.stderr)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not os.environ.get("CODEX_DEBUG"):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # import-time chatter, not the user's concern
    runtime = options.runtime.check()
    source = prepared.source or _resolve_source(spec, task, options)

    from .pipelines import load_cached  # imports the engine machinery, hence torch, only now
    from .engine_api import Job

    with timer.stage("load"):
        engine = spec.load_engine()
        runtime = runtime.resolve(spec.gpu_dtype)
        if source.kind == "tiny":
            engine.ensure_tiny(source.path, progress)
            progress.message("model 'tiny' has random weights, so the output is noise; for real output pass "
                             f"--model PATH (a diffusers folder) or put one in ./models/{spec.key}/")
        progress.message(f"loading {spec.key} from {source.label} ({runtime.device}, {runtime.dtype})")
        model, cached = load_cached(engine, source, runtime)
    if cached:
        timer.seconds["load"] = 0.0
    from .fingerprint import model_fingerprint

    fingerprint = model_fingerprint(source.path)  # names, sizes and config contents; cached per folder
    replay_of = _replay_note(options.replay_of, fingerprint)

    job = Job(task, params, params.seed, prepared.scheduler, runtime, progress, timer)
    reset_device_peak(runtime.device)
    try:
        output = engine.run(model, job)
    finally:
        progress.close()

    kind = spec.output_kind(task)
    out_root = Path(options.out) if options.out else DEFAULT_OUT[kind]
    run_id = new_run_id()
    exporters = registry.exporters()
    export_started = time.perf_counter()
    with run_folder(out_root, run_id) as folder:
        info = _info(prepared, source, runtime, job, run_id, cached, fingerprint)
        if replay_of:
            info["replay_of"] = replay_of
        for name in prepared.formats:
            folder.written.extend(exporters[name].write(output, folder, info))
        timer.add("export", time.perf_counter() - export_started)
        timer.add("total", time.perf_counter() - started)
        info["timings"] = timer.as_dict()
        denoise = timer.seconds.get("denoise")
        info["steps_per_second"] = round(job.steps_done / denoise, 3) if denoise and job.steps_done else None
        info["memory"] = {"peak_device_memory_mb": peak_device_memory_mb(runtime.device),
                          "peak_host_rss_mb": peak_host_rss_mb()}
        info["outputs"] = [str(folder.final_path(p)) for p in folder.written]
        info_path = folder.staging_dir / "info.json"
        write_json(info_path, info)
        folder.written.append(info_path)
    files = [folder.final_path(p) for p in folder.written]
    return Result(folder.final_dir, files, info)


def run(engine: str, task: str, request: dict[str, Any], options: RunOptions | None = None) -> Result:
    options = options or RunOptions()
    return execute(prepare(engine, task, request, options), options)


def _replay_note(replay_of: dict[str, Any] | None, fingerprint: dict[str, Any] | None) -> dict[str, Any] | None:
    """What info.replay_of says; warns when the model is not the one the replayed run used."""
    if not replay_of:
        return None
    note = dict(replay_of)
    recorded = note.pop("model_fingerprint", None)
    matches = None
    if recorded and fingerprint:
        matches = recorded.get("sha256") == fingerprint.get("sha256")
        if not matches:
            print(f"codex: warning: the model differs from the one run {note.get('run_id')} used (fingerprint "
                  f"{str(recorded.get('sha256'))[:12]}, now {fingerprint['sha256'][:12]}); the output may differ",
                  file=sys.stderr)
    note["model_fingerprint_matches"] = matches
    return note


def _info(prepared: Prepared, source, runtime: Runtime, job, run_id: str, cached: bool,
          fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = prepared.spec
    info: dict[str, Any] = {
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": spec.key,
        "task": prepared.task,
        "mode": getattr(prepared.params, "mode", "normal"),
        "mode_requested": prepared.mode_requested,
        "mode_ignored_reason": prepared.mode_ignored_reason,
        "model": {**source.info(), "variant": prepared.variant, "reused_from_cache": cached,
                  "fingerprint": fingerprint},
        "request_in": prepared.request_in,
        "request": prepared.params.model_dump(mode="json"),
        "applied_preset_patch": prepared.preset_fill.patch,
        "preset_files": prepared.preset_fill.files,
        "preset_profile": prepared.preset_fill.profile,
        "seed": getattr(prepared.params, "seed", None),
        "seed_source": prepared.seed_source,
        "formats": list(prepared.formats),
    }
    if prepared.scheduler:
        info.update(prepared.scheduler.info())
    applied = getattr(job, "scheduler_applied", None)  # the scheduler as it ran (class + full config)
    info["scheduler_class"] = applied["class"] if applied else None
    info["scheduler_config"] = applied["config"] if applied else None
    info.update({
        "device": runtime.device,
        "dtype": runtime.dtype,
        "offload": runtime.offload,
        "vae_tiling": runtime.vae_tiling,
        "steps_done": job.steps_done,
        "notes": job.notes,
        "versions": versions(spec.distribution),
    })
    return info


@lru_cache(maxsize=None)
def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(plugin_distribution: str | None) -> dict[str, str | None]:
    names = ["torch", "diffusers", "transformers", "codex-core"]
    if plugin_distribution and plugin_distribution not in names:
        names.append(plugin_distribution)
    return {"python": platform.python_version(), **{name: _dist_version(name) for name in names}}
