"""The one place that knows the whole order: validate, resolve, load, run, export, report.

``prepare`` never imports torch and never touches the disk beyond reading presets and checking
input images: every usage error surfaces there, before anything loads or is written.
"""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from . import presets, registry, run_options, sources
from .engine import Engine, Job, Plan, PlanContext
from .errors import ParamError, UsageError
from .metrics import StageTimes, peak_host_rss_mb
from .outputs import check_writable, new_run_id, run_folder, write_json
from .parallel import writes_outputs
from .params import MAX_SEED, ParamsBase, input_files, validate
from .paths import user_path
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
    config: str | None = None  # --config: a model folder with the configs of a single-file checkpoint
    components: tuple[str, ...] = ()  # --component NAME=FILE
    # receives every progress event (codex_core.progress.Progress); may raise to stop the run
    on_progress: Callable[[dict[str, Any]], None] | None = None
    # a preview of the latents to ``on_progress`` every this many denoising steps (0: none; the service's)
    preview_every: int = 0
    # polled between steps: True asks the run to stop early and keep its latents as they are (decoded)
    stop_early: Callable[[], bool] | None = None
    # the run folder's name (default: a new time-stamped id); `codex batch` names it after the item's id
    run_id: str | None = None
    # how a batch draws its noise: "per_image" (image i from seed + i, recorded as info.seeds) or "shared"
    # (one generator for the batch: how runs recorded without info.seeds drew it, so their replays match)
    seed_rule: str = "per_image"


@dataclass
class Prepared:
    engine: Engine
    task: str
    request_in: dict[str, Any]
    preset_fill: presets.PresetFill
    params: ParamsBase
    scheduler: SchedulerChoice | None
    plan: Plan
    seed_source: str
    formats: tuple[str, ...]
    source: sources.ModelSource | None = None  # resolved early only when presets depend on the checkpoint
    variant: str | None = None


@dataclass
class Result:
    # None on a rank after the first of a --parallel run: it computed with rank 0, which alone writes
    run_dir: Path | None
    files: list[Path]
    info: dict[str, Any]

    @property
    def written(self) -> bool:
        return self.run_dir is not None

    def as_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "files": [str(f) for f in self.files], "info": self.info}


def prepare(engine_key: str, task: str, request: Any, options: RunOptions | None = None) -> Prepared:
    options = options or RunOptions()
    if not isinstance(request, dict):
        raise UsageError(f"the request must be a JSON object of field: value, got {type(request).__name__}")
    engine = registry.get_engine(engine_key)
    if task not in engine.tasks:
        raise UsageError(f"engine {engine_key!r} has no task {task!r}; its tasks: {', '.join(engine.tasks)}")
    runtime_problems = (run_options.not_honoured(engine, options.runtime.check())
                        + engine.runtime_problems(options.runtime))
    if runtime_problems:
        raise UsageError("; ".join(runtime_problems))
    context = PlanContext(None, lambda: _resolve_source(engine, task, options),  # checked as it is found
                          runtime=options.runtime)
    if engine.variants:  # variant presets: find the checkpoint first (reads configs, loads nothing)
        context.variant = sources.variant_of(engine, context.source())
    plan = engine.plan(task, request, context)
    fill = presets.fill(engine, task, request, context.variant, options.preset, plan.layers)
    model = engine.params_model(task)
    params = validate(model, fill.request, engine_key, task)
    problems = engine.check_request(task, params, context.variant)
    problems = problems or engine.check_with_checkpoint(task, params, context)
    if problems:
        raise ParamError(problems, engine_key, task, hint=f"`codex presets {engine_key}` shows the settings of each "
                                                         "variant" if context.variant else None)

    scheduler = None
    fallback = getattr(params, "sampler_fallback", "strict")
    if not engine.sampler_family:  # nothing would honour a sampler: say so rather than ignore it
        chosen = [name for name in ("sampler", "scheduler") if getattr(params, name, None) is not None]
        chosen += ["sampler_fallback"] if fallback != "strict" else []
        if chosen:
            raise ParamError([f"{name}: got {getattr(params, name)!r}: engine {engine_key} has no sampler choice; "
                              "leave it out" for name in chosen], engine_key, task)
    elif "sampler" in model.model_fields:
        samplers, schedules = registry.samplers_for(engine, task)
        scheduler = resolve_sampler(engine.sampler_family, params.sampler, params.scheduler, params.model_dump(),
                                    engine_key, task, samplers, schedules, registry.sampler_names_for(engine),
                                    fallback)

    updates = {name: value for name, value in plan.overrides.items() if name in model.model_fields}
    if scheduler is not None:  # the effective request names what ran, e.g. "DPM++ 2M Karras" -> sampler + schedule
        updates.update(sampler=scheduler.sampler, scheduler=scheduler.schedule)
    seed_source = "request"
    if "seed" in model.model_fields and params.seed is None:
        updates["seed"] = secrets.randbelow(MAX_SEED + 1)
        seed_source = "random"
    params = params.model_copy(update=updates)

    kind = engine.output_kind(task)
    check_writable(Path(options.out) if options.out else DEFAULT_OUT[kind])
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
    return Prepared(engine, task, request, fill, params, scheduler, plan, seed_source, formats,
                    context.resolved, context.variant)


def _resolve_source(engine: Engine, task: str, options: RunOptions) -> sources.ModelSource:
    """The model source, refused at once when its configs say it is another engine's checkpoint."""
    engine.before_load(options.download)  # e.g. a hub library offline: nothing reaches the network unless asked
    source = sources.resolve(engine, options.model, task=task, download=options.download,
                             allow_pickle=options.runtime.allow_pickle)
    if options.config:
        config = user_path(options.config, "--config")
        if source.kind != "file":
            raise UsageError(f"--config: applies to a single-file checkpoint; {source.label} is a {source.kind} "
                             "model with its own configs", hint="drop --config")
        if not config.is_dir() or (engine.model_marker and not (config / engine.model_marker).is_file()):
            missing = f" (no {engine.model_marker})" if engine.model_marker else ""
            raise UsageError(f"--config: {options.config!r} is not a {engine.key} model folder{missing}",
                             hint="pass a model folder of the same architecture (weights not needed)")
        source = replace(source, config=config.resolve())
    if options.components:
        source = replace(source, components=sources.component_files(engine, options.components,
                                                                     options.runtime.allow_pickle))
    if source.kind != "tiny":
        _check_checkpoint(engine, source)
    for name, path in source.components:
        problem = engine.component_problem(name, path, source)
        if problem:
            raise UsageError(f"--component {name}={path}: {problem}")
    return source


def input_records(params: ParamsBase) -> dict[str, dict[str, Any]]:
    """Each input file of the request: its absolute path, size and sha256 (what `codex replay` compares)."""
    records = {}
    for name, value in input_files(params).items():
        path = Path(value).expanduser().resolve()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        records[name] = {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return records


def _check_checkpoint(engine: Engine, source: sources.ModelSource) -> None:
    """A model folder of another family or variant is refused before loading, naming the engines that fit it."""
    problem = engine.checkpoint_problem(source.path)
    if problem is None:
        return
    fits = [other.key for other in registry.engines().values()
            if other.recognises_checkpoints and other.key != engine.key and other.checkpoint_problem(source.path) is None]
    raise UsageError(f"{source.found_via}: {source.label} is not a {engine.key} checkpoint: {problem}",
                     hint=(f"engines that fit it: {', '.join(sorted(fits))}" if fits else
                           f"no installed engine recognises it; point {source.found_via} at a {engine.key} checkpoint"))


def execute(prepared: Prepared, options: RunOptions) -> Result:
    started = time.perf_counter()
    engine, task, params = prepared.engine, prepared.task, prepared.params
    timer = StageTimes()
    progress = Progress(enabled=not options.quiet, label=f"{engine.key} {task}", sink=options.on_progress,
                        preview_every=options.preview_every, stop_early=options.stop_early)
    warnings = [*prepared.plan.warnings, *([prepared.scheduler.warning] if prepared.scheduler and
                                           prepared.scheduler.warning else [])]
    for warning in warnings:
        print(f"codex: warning: {warning}", file=sys.stderr)
    runtime = options.runtime.check()
    source = prepared.source or _resolve_source(engine, task, options)

    from .model_cache import cache

    progress.stage("load")
    with timer.stage("load"):
        runtime = engine.resolve_runtime(runtime)
        if source.kind == "tiny":
            engine.ensure_tiny(source.path, progress)
            progress.message("model 'tiny' has random weights, so the output is noise; for real output pass "
                             f"--model PATH (a model folder) or put one in ./models/{engine.key}/")
        progress.message(f"loading {engine.key} from {source.label} ({runtime.device}, {runtime.dtype})")
        model, cached = cache.load(engine, source, runtime)
    if cached:
        timer.seconds["load"] = 0.0
    from .fingerprint import model_fingerprint
    from .model_files import file_record

    fingerprint = model_fingerprint(source.path)  # names, sizes and config contents; cached per folder
    file_records = {name: file_record(path, progress.message) for name, path in source.files().items()}
    if source.kind == "file":  # a single file is its own fingerprint: its content hash
        fingerprint = {"sha256": file_records["checkpoint"]["sha256"], "files": 1,
                       "bytes": file_records["checkpoint"]["bytes"]}
    replay_of = _replay_note(options.replay_of, fingerprint)

    inputs = input_records(params)  # before the run: the content it ran on
    job = Job(task, params, getattr(params, "seed", None), prepared.scheduler, runtime, progress, timer,
              seeds=image_seeds(params, options.seed_rule))
    engine.reset_peak_memory(runtime.device)
    try:
        output = engine.run(model, job)
    finally:
        progress.close()
        cache.grown(engine, source, runtime)  # what the run loaded into the model (ControlNets) counts now

    if not writes_outputs(runtime):  # rank 0 of a --parallel run exports the outputs all ranks computed
        return Result(None, [], {})
    output, audio = _sound_to_export(output, params)
    kind = engine.output_kind(task)
    out_root = Path(options.out) if options.out else DEFAULT_OUT[kind]
    run_id = options.run_id or new_run_id()
    exporters = registry.exporters()
    export_started = time.perf_counter()
    progress.stage("export", f"writing {', '.join(prepared.formats)} into {out_root / run_id}")
    with run_folder(out_root, run_id) as folder:
        info = _info(prepared, source, runtime, job, run_id, cached, fingerprint, model)
        info["model"]["files"] = {**file_records, **job.files}
        info["cwd"], info["inputs"] = os.getcwd(), inputs
        if replay_of:
            info["replay_of"] = replay_of
        if audio is not None:
            info["audio"] = audio
        for name in prepared.formats:
            folder.written.extend(exporters[name].write(output, folder, info))
        timer.add("export", time.perf_counter() - export_started)
        timer.add("total", time.perf_counter() - started)
        info["timings"] = timer.as_dict()
        denoise = timer.seconds.get("denoise")
        info["steps_per_second"] = round(job.steps_done / denoise, 3) if denoise and job.steps_done else None
        info["memory"] = {"peak_device_memory_mb": engine.peak_memory_mb(runtime.device),
                          "peak_host_rss_mb": peak_host_rss_mb()}
        info["outputs"] = [str(folder.final_path(p)) for p in folder.written]
        if job.side_images:  # beside the outputs, not among them
            info["side_images"] = _write_side_images(job.side_images, folder)
        info_path = folder.staging_dir / "info.json"
        write_json(info_path, info)
        folder.written.append(info_path)
    files = [folder.final_path(p) for p in folder.written]
    return Result(folder.final_dir, files, info)


def _write_side_images(images: dict[str, Any], folder) -> dict[str, Any]:
    """The run's side images (``Job.side_images``) as PNGs beside the output, each recorded with its sha256."""
    import re

    records = {}
    for name, image in images.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise ValueError(f"side image name {name!r}: use [a-z0-9_-] (it is a file name)")
        path = folder.staging_dir / f"{name}.png"
        image.save(path, format="PNG")
        folder.written.append(path)
        records[name] = {"path": str(folder.final_path(path)), "width": image.width, "height": image.height,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return records


def _sound_to_export(output: Any, params: ParamsBase) -> tuple[Any, dict[str, Any] | None]:
    """(the output as exported, what info.audio says first): a video's sound track is checked and recorded
    (its PCM's hash: what `codex replay --check` compares); ``"audio": false`` drops it here, before any
    exporter sees it, and info says so (with the dropped track's facts: the run still made it)."""
    track = getattr(output, "audio", None)
    if track is None:
        return output, None
    from .exporters.audio import record

    facts = record(track)
    if getattr(params, "audio", True) is False:
        facts.pop("codecs")
        return replace(output, audio=None), {"dropped": True, "reason": 'the request says "audio": false', **facts}
    return output, facts


def preload(engine_key: str, task: str, options: RunOptions) -> None:
    """Load the model a run of ``engine_key`` ``task`` with ``options`` would use into the model cache, as
    ``execute`` loads it (the same source, runtime and cache key), without running anything."""
    from .model_cache import cache

    engine = registry.get_engine(engine_key)
    source = _resolve_source(engine, task, options)
    runtime = engine.resolve_runtime(options.runtime.check())
    if source.kind == "tiny":
        engine.ensure_tiny(source.path, Progress(enabled=False))
    cache.load(engine, source, runtime)


def image_seeds(params: ParamsBase, rule: str = "per_image") -> list[int] | None:
    """The seed of each image of the run (A1111's seed + i); None under the ``shared`` rule or without a seed."""
    seed = getattr(params, "seed", None)
    if seed is None or rule == "shared":
        return None
    return [seed + index for index in range(getattr(params, "batch_size", None) or 1)]


def run(engine: str, task: str, request: dict[str, Any], options: RunOptions | None = None) -> Result:
    """Validate, fill, load (or reuse), run and export one request; the Python entry point."""
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
          fingerprint: dict[str, Any] | None = None, model: Any = None) -> dict[str, Any]:
    engine = prepared.engine
    info: dict[str, Any] = {
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": engine.key,
        "task": prepared.task,
        **prepared.plan.info,
        "model": {**source.info(), "variant": prepared.variant, "reused_from_cache": cached,
                  "fingerprint": fingerprint},
        "request_in": prepared.request_in,
        "request": prepared.params.model_dump(mode="json"),
        "applied_preset_patch": prepared.preset_fill.patch,
        "preset_files": prepared.preset_fill.files,
        "preset_profile": prepared.preset_fill.profile,
        "seed": getattr(prepared.params, "seed", None),
        **({"seeds": job.seeds} if job.seeds is not None else {}),
        "seed_source": prepared.seed_source,
        "formats": list(prepared.formats),
    }
    if prepared.scheduler:
        info.update(prepared.scheduler.info())
    applied = getattr(job, "scheduler_applied", None)  # the scheduler as it ran (class + full config)
    info["scheduler_class"] = applied["class"] if applied else None
    info["scheduler_config"] = applied["config"] if applied else None
    info.update(run_options.recorded(runtime))  # every run option as it records itself (offload as asked, ...)
    info.update({
        "steps_done": job.steps_done,
        "notes": job.notes,
        "versions": versions(engine),
    })
    if job.stopped_early:  # asked to stop early (an interrupt): the outputs are the latents of that step, decoded
        info["interrupted_at_step"], info["steps_planned"] = job.stopped_early
    info.update(engine.model_info(model))  # e.g. memory_plan, what was compiled, the attention backend's reach
    return info


@lru_cache(maxsize=None)
def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(engine: Engine) -> dict[str, str | None]:
    """Python's, the engine's libraries' (``Engine.libraries``), the core's and the engine package's versions."""
    names = [*engine.libraries, "codex-core"]
    if engine.distribution and engine.distribution not in names:
        names.append(engine.distribution)
    return {"python": platform.python_version(), **{name: _dist_version(name) for name in names}}
